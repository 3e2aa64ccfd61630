package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"golang.org/x/text/unicode/norm"
)

// Tokenizer is the byte-level BPE of a tokenizer.json as GPT-2 and
// GPT-NeoX (the Mamba checkpoints' tokenizer) use it: added tokens split
// out first, an optional NFC normaliser, the ByteLevel pre-tokenizer (GPT-2's
// split pattern, bytes mapped to printable characters), BPE merges by rank,
// and the ByteLevel decoder. Other pipelines are refused when read.
type Tokenizer struct {
	vocab      map[string]int
	tokens     []string // id → token ("" where the id has none)
	ranks      map[[2]string]int
	added      []addedToken // longest first, for splitting
	special    map[int]bool
	nfc        bool
	prefix     bool // add_prefix_space
	split      *regexp2.Regexp
	cache      map[string][]int
	byteToRune [256]rune
	runeToByte map[rune]byte
}

type addedToken struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

// gpt2Split is the ByteLevel pre-tokenizer's pattern (GPT-2's).
const gpt2Split = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

type tokenizerJSON struct {
	AddedTokens  []addedToken    `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type                    string          `json:"type"`
		Vocab                   map[string]int  `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
		ByteFallback            bool            `json:"byte_fallback"`
		IgnoreMerges            bool            `json:"ignore_merges"`
		Dropout                 *float64        `json:"dropout"`
	} `json:"model"`
}

type component struct {
	Type           string      `json:"type"`
	AddPrefixSpace bool        `json:"add_prefix_space"`
	UseRegex       *bool       `json:"use_regex"`
	Pretokenizers  []component `json:"pretokenizers"`
	Normalizers    []component `json:"normalizers"`
}

// LoadTokenizer reads a tokenizer.json.
func LoadTokenizer(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTokenizer(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return t, nil
}

// ParseTokenizer builds a tokenizer from tokenizer.json's text.
func ParseTokenizer(b []byte) (*Tokenizer, error) {
	var j tokenizerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	m := j.Model
	switch {
	case m.Type != "BPE":
		return nil, fmt.Errorf("model type %q: magc reads byte-level BPE tokenizers", m.Type)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" || m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, fmt.Errorf("BPE with subword prefixes or suffixes is not byte-level BPE")
	case m.ByteFallback || m.IgnoreMerges:
		return nil, fmt.Errorf("byte_fallback and ignore_merges are not supported")
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, fmt.Errorf("BPE dropout is for training, not supported")
	}
	t := &Tokenizer{vocab: m.Vocab, ranks: map[[2]string]int{}, special: map[int]bool{}, cache: map[string][]int{}, runeToByte: map[rune]byte{}}
	if err := t.readNormalizer(j.Normalizer); err != nil {
		return nil, err
	}
	if err := t.readPreTokenizer(j.PreTokenizer); err != nil {
		return nil, err
	}
	if len(j.Decoder) > 0 && string(j.Decoder) != "null" {
		var d component
		if err := json.Unmarshal(j.Decoder, &d); err != nil || d.Type != "ByteLevel" {
			return nil, fmt.Errorf("decoder %s: magc decodes ByteLevel", j.Decoder)
		}
	}
	if err := t.readMerges(m.Merges); err != nil {
		return nil, err
	}
	n := 0
	for _, id := range t.vocab {
		n = max(n, id+1)
	}
	for _, a := range j.AddedTokens {
		n = max(n, a.ID+1)
	}
	t.tokens = make([]string, n)
	for s, id := range t.vocab {
		t.tokens[id] = s
	}
	for _, a := range j.AddedTokens {
		t.added = append(t.added, a)
		if a.Special {
			t.special[a.ID] = true
		}
	}
	sort.SliceStable(t.added, func(i, k int) bool { return len(t.added[i].Content) > len(t.added[k].Content) })
	// GPT-2's printable stand-ins for bytes: printable Latin-1 keeps its
	// code point, the rest map to 256, 257, ... in byte order.
	next := rune(256)
	for c := 0; c < 256; c++ {
		r := rune(c)
		if !(c >= '!' && c <= '~' || c >= 0xA1 && c <= 0xAC || c >= 0xAE && c <= 0xFF) {
			r = next
			next++
		}
		t.byteToRune[c] = r
		t.runeToByte[r] = byte(c)
	}
	t.split = regexp2.MustCompile(gpt2Split, regexp2.None)
	return t, nil
}

func (t *Tokenizer) readNormalizer(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch {
	case c.Type == "NFC":
		t.nfc = true
	case c.Type == "Sequence" && len(c.Normalizers) == 0:
	case c.Type == "Sequence" && len(c.Normalizers) == 1 && c.Normalizers[0].Type == "NFC":
		t.nfc = true
	default:
		return fmt.Errorf("normalizer %s is not supported (NFC or none)", raw)
	}
	return nil
}

func (t *Tokenizer) readPreTokenizer(raw json.RawMessage) error {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("pre_tokenizer: %v", err)
	}
	if c.Type == "Sequence" && len(c.Pretokenizers) == 1 {
		c = c.Pretokenizers[0]
	}
	if c.Type != "ByteLevel" || c.UseRegex != nil && !*c.UseRegex {
		return fmt.Errorf("pre_tokenizer %s: magc reads the ByteLevel pre-tokenizer with GPT-2's split pattern", raw)
	}
	t.prefix = c.AddPrefixSpace
	return nil
}

// readMerges takes both spellings: ["a b", ...] (older files) and [["a", "b"], ...].
func (t *Tokenizer) readMerges(raw json.RawMessage) error {
	var pairs [][2]string
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		for _, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return fmt.Errorf("merge %q is not two tokens", s)
			}
			pairs = append(pairs, [2]string{a, b})
		}
	} else if err := json.Unmarshal(raw, &pairs); err != nil {
		return fmt.Errorf("merges: %v", err)
	}
	for i, p := range pairs {
		if _, ok := t.ranks[p]; !ok {
			t.ranks[p] = i
		}
	}
	return nil
}

// VocabSize is one past the largest token id.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// TokenID returns the id of a token's text (an added token's content).
func (t *Tokenizer) TokenID(s string) (int, bool) {
	for _, a := range t.added {
		if a.Content == s {
			return a.ID, true
		}
	}
	id, ok := t.vocab[s]
	return id, ok
}

// Encode turns text into token ids, as tokenizers' encode with no special
// tokens added (the post-processor of these tokenizers adds none).
func (t *Tokenizer) Encode(text string) ([]int, error) {
	var ids []int
	for text != "" {
		// The earliest added token (longest on a tie) splits the text.
		at, tok := -1, addedToken{}
		for _, a := range t.added {
			if a.Content == "" {
				continue
			}
			if i := strings.Index(text, a.Content); i >= 0 && (at < 0 || i < at) {
				at, tok = i, a
			}
		}
		plain := text
		if at >= 0 {
			plain = text[:at]
		}
		more, err := t.encodePlain(plain)
		if err != nil {
			return nil, err
		}
		ids = append(ids, more...)
		if at < 0 {
			break
		}
		ids = append(ids, tok.ID)
		text = text[at+len(tok.Content):]
	}
	return ids, nil
}

func (t *Tokenizer) encodePlain(text string) ([]int, error) {
	if text == "" {
		return nil, nil
	}
	if t.nfc {
		text = norm.NFC.String(text)
	}
	if t.prefix && !strings.HasPrefix(text, " ") {
		text = " " + text
	}
	var ids []int
	m, err := t.split.FindStringMatch(text)
	for ; m != nil && err == nil; m, err = t.split.FindNextMatch(m) {
		piece := m.String()
		if cached, ok := t.cache[piece]; ok {
			ids = append(ids, cached...)
			continue
		}
		var sb strings.Builder
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(t.byteToRune[piece[i]])
		}
		got, err := t.bpe(sb.String())
		if err != nil {
			return nil, err
		}
		if len(t.cache) < 1<<16 {
			t.cache[piece] = got
		}
		ids = append(ids, got...)
	}
	return ids, err
}

// bpe merges the characters of a word, lowest-ranked pair first.
func (t *Tokenizer) bpe(word string) ([]int, error) {
	parts := make([]string, 0, len(word))
	for _, r := range word {
		parts = append(parts, string(r))
	}
	for len(parts) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(parts); i++ {
			if r, ok := t.ranks[[2]string{parts[i], parts[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		// Merge every occurrence of the pair, left to right.
		a, b := parts[at], parts[at+1]
		out := parts[:0:0]
		for i := 0; i < len(parts); i++ {
			if i+1 < len(parts) && parts[i] == a && parts[i+1] == b {
				out = append(out, a+b)
				i++
				continue
			}
			out = append(out, parts[i])
		}
		parts = out
	}
	ids := make([]int, len(parts))
	for i, p := range parts {
		id, ok := t.vocab[p]
		if !ok {
			return nil, fmt.Errorf("no token for %q (the vocabulary lacks a byte)", p)
		}
		ids[i] = id
	}
	return ids, nil
}

// DecodeBytes is the byte string of ids; an id with no token gives nothing.
// Special tokens are kept unless skipSpecial.
func (t *Tokenizer) DecodeBytes(ids []int, skipSpecial bool) []byte {
	var out []byte
	for _, id := range ids {
		if id < 0 || id >= len(t.tokens) {
			continue
		}
		if t.special[id] {
			if !skipSpecial {
				out = append(out, t.addedContent(id)...)
			}
			continue
		}
		if c := t.addedContent(id); c != "" {
			out = append(out, c...)
			continue
		}
		for _, r := range t.tokens[id] {
			if b, ok := t.runeToByte[r]; ok {
				out = append(out, b)
			} else {
				out = utf8.AppendRune(out, r)
			}
		}
	}
	return out
}

func (t *Tokenizer) addedContent(id int) string {
	for _, a := range t.added {
		if a.ID == id {
			return a.Content
		}
	}
	return ""
}

// Decode is the text of ids (invalid UTF-8 becomes U+FFFD, as tokenizers does).
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	return strings.ToValidUTF8(string(t.DecodeBytes(ids, skipSpecial)), "\uFFFD")
}
