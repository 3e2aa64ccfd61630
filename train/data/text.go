package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/scm-magellano/magc/hf"
	"github.com/tiktoken-go/tokenizer"
)

// EndOfText is GPT-2's end-of-text token, appended after every document.
const EndOfText = 50256

// GPT2Vocab is the size of GPT-2's BPE vocabulary (r50k_base).
const GPT2Vocab = 50257

// Text serves windows of a tokenised corpus: each sequence is a random span
// of Len+1 tokens, inputs its first Len, targets its last Len.
type Text struct {
	Seed           uint64
	BatchSize, Len int
	Train, Valid   []int32
	Desc           string
	Tok            *Tokenizer // what tokenised it; nil: GPT-2's BPE
}

func (t *Text) Name() string { return t.Desc }
func (t *Text) Vocab() int {
	if t.Tok != nil {
		return t.Tok.Vocab
	}
	return GPT2Vocab
}
func (t *Text) Batch(step int) Batch { return t.window(t.Train, rng(t.Seed, 0, step)) }
func (t *Text) Eval(i int) Batch     { return t.window(t.Valid, rng(t.Seed, 1, i)) }

func (t *Text) window(stream []int32, r interface{ IntN(int) int }) Batch {
	b := newBatch(t.BatchSize, t.Len)
	for i := 0; i < t.BatchSize; i++ {
		start := r.IntN(len(stream) - t.Len)
		copy(b.Tokens[i*t.Len:], stream[start:start+t.Len])
		copy(b.Targets[i*t.Len:], stream[start+1:start+1+t.Len])
	}
	return b
}

// MaxTextBytes is the most training data LoadText reads from one file: a
// device such as /dev/zero, or a file far larger than a run can tokenise, is
// refused before reading.
const MaxTextBytes = 1 << 30

// Tokenizer turns text into token ids for LoadTextWith.
type Tokenizer struct {
	Name   string
	Vocab  int // one past the largest id
	EOT    int // appended after every document; -1: nothing
	Encode func(string) ([]int, error)
	Decode func([]int) string
}

// GPT2 is GPT-2's BPE (r50k_base), the built-in models' tokenizer.
func GPT2() (*Tokenizer, error) {
	enc, err := tokenizer.Get(tokenizer.R50kBase)
	if err != nil {
		return nil, fmt.Errorf("loading the GPT-2 tokenizer: %w", err)
	}
	return &Tokenizer{Name: "GPT-2 BPE", Vocab: GPT2Vocab, EOT: EndOfText,
		Encode: func(s string) ([]int, error) {
			ids, _, err := enc.Encode(s)
			out := make([]int, len(ids))
			for i, id := range ids {
				out[i] = int(id)
			}
			return out, err
		},
		Decode: func(ids []int) string {
			u := make([]uint, len(ids))
			for i, id := range ids {
				u[i] = uint(id)
			}
			s, _ := enc.Decode(u)
			return s
		}}, nil
}

// ModelTokenizer is the tokenizer of a model file: tokenizer.json in its
// directory (magc import writes it there), else nil (GPT-2's BPE, for the
// built-in models). Its end-of-text token, where it has one, separates
// documents.
func ModelTokenizer(modelPath string) (*Tokenizer, error) {
	if modelPath == "" {
		return nil, nil
	}
	path := filepath.Join(filepath.Dir(modelPath), "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		return nil, nil
	}
	t, err := hf.LoadTokenizer(path)
	if err != nil {
		return nil, err
	}
	eot := -1
	if id, ok := t.TokenID("<|endoftext|>"); ok {
		eot = id
	}
	return &Tokenizer{Name: path, Vocab: t.VocabSize(), EOT: eot, Encode: t.Encode,
		Decode: func(ids []int) string { return t.Decode(ids, false) }}, nil
}

// LoadText reads a .txt file (one document), a .jsonl file, or a directory
// holding train.jsonl and optionally valid.jsonl (mlx-lm's layout: one JSON
// object per line with a "text" field), and tokenises it with GPT-2's BPE.
// Without a validation file the last tenth of the tokens is held out. A
// binary file, or JSON lines in a file not named .jsonl, is refused.
func LoadText(path string, seed uint64, batch, seqLen int) (*Text, error) {
	return LoadTextWith(path, nil, seed, batch, seqLen)
}

// LoadTextWith is LoadText with tokenizer tok (nil: GPT-2's BPE).
func LoadTextWith(path string, tok *Tokenizer, seed uint64, batch, seqLen int) (*Text, error) {
	enc := tok
	if enc == nil {
		var err error
		if enc, err = GPT2(); err != nil {
			return nil, err
		}
	}
	t := &Text{Seed: seed, BatchSize: batch, Len: seqLen, Tok: tok}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case info.IsDir():
		if t.Train, err = readJSONL(enc, filepath.Join(path, "train.jsonl")); err != nil {
			return nil, err
		}
		valid := filepath.Join(path, "valid.jsonl")
		if _, err := os.Stat(valid); err == nil {
			if t.Valid, err = readJSONL(enc, valid); err != nil {
				return nil, err
			}
		}
	case strings.EqualFold(filepath.Ext(path), ".jsonl"):
		if t.Train, err = readJSONL(enc, path); err != nil {
			return nil, err
		}
	default:
		raw, err := readText(path)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(raw)) == "" {
			return nil, fmt.Errorf("%s: the file is empty", path)
		}
		if looksLikeJSONL(raw) {
			return nil, fmt.Errorf("%s holds JSON lines ({\"text\": …} per line), not plain text: name it .jsonl, or put it in a directory as train.jsonl, to train on the \"text\" fields", path)
		}
		if t.Train, err = encode(enc, string(raw)); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if t.Valid == nil {
		cut := len(t.Train) * 9 / 10
		t.Train, t.Valid = t.Train[:cut], t.Train[cut:]
	}
	for name, s := range map[string][]int32{"training": t.Train, "validation": t.Valid} {
		if len(s) <= seqLen {
			return nil, fmt.Errorf("%s: the %s text has %d tokens, fewer than one sequence of %d+1 (use a larger file or a shorter --seq)", path, name, len(s), seqLen)
		}
	}
	t.Desc = fmt.Sprintf("%s (%d training tokens, %d held out)", path, len(t.Train), len(t.Valid))
	if tok != nil {
		t.Desc = fmt.Sprintf("%s (%d training tokens, %d held out; %s)", path, len(t.Train), len(t.Valid), tok.Name)
	}
	return t, nil
}

// readText reads a regular file of at most MaxTextBytes and checks that it
// is text: UTF-8 (a leading byte-order mark is dropped), without NUL bytes,
// and with control characters other than whitespace under 1%.
func readText(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (a device, pipe or socket cannot be training data)", path)
	}
	if info.Size() > MaxTextBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d bytes (1 GiB) of text magc reads from one file", path, info.Size(), MaxTextBytes)
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxTextBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxTextBytes {
		return nil, fmt.Errorf("%s grew past %d bytes while being read", path, MaxTextBytes)
	}
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
	control := 0
	for i := 0; i < len(raw); {
		r, n := utf8.DecodeRune(raw[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return nil, fmt.Errorf("%s is not UTF-8 text (byte %d is 0x%02x): is it a binary file? Training data is a UTF-8 .txt file, a .jsonl file, or a directory with train.jsonl", path, i, raw[i])
		case r == 0:
			return nil, fmt.Errorf("%s holds a NUL byte at offset %d: is it a binary file? Training data is a UTF-8 .txt file, a .jsonl file, or a directory with train.jsonl", path, i)
		case r < 0x20 && r != '\n' && r != '\r' && r != '\t' && r != '\f' && r != '\v', r == 0x7f:
			control++
		}
		i += n
	}
	if control*100 > len(raw) {
		return nil, fmt.Errorf("%s is %d%% control characters: is it a binary file? Training data is UTF-8 text", path, control*100/len(raw))
	}
	return raw, nil
}

// looksLikeJSONL reports whether the first non-blank line of raw is a JSON
// object with a string "text" field.
func looksLikeJSONL(raw []byte) bool {
	for line := range bytes.SplitSeq(raw, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var rec struct {
			Text *string `json:"text"`
		}
		return line[0] == '{' && json.Unmarshal(line, &rec) == nil && rec.Text != nil
	}
	return false
}

func encode(enc *Tokenizer, text string) ([]int32, error) {
	ids, err := enc.Encode(text)
	if err != nil {
		return nil, err
	}
	out := make([]int32, 0, len(ids)+1)
	for _, id := range ids {
		out = append(out, int32(id))
	}
	if enc.EOT >= 0 {
		out = append(out, int32(enc.EOT))
	}
	return out, nil
}

func readJSONL(enc *Tokenizer, path string) ([]int32, error) {
	raw, err := readText(path)
	if err != nil {
		return nil, err
	}
	var out []int32
	line := 0
	for b := range bytes.SplitSeq(raw, []byte("\n")) {
		line++
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		var rec struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: invalid JSON: %v", path, line, jsonMessage(err))
		}
		if rec.Text == nil {
			return nil, fmt.Errorf("%s:%d: the object has no \"text\" field", path, line)
		}
		ids, err := encode(enc, *rec.Text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, ids...)
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no text (the file is empty)")
	}
	return out, nil
}

// jsonMessage words a JSON decoding error without Go's type names.
func jsonMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("each line must be an object with a \"text\" string, got a JSON %s", te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
