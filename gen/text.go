package gen

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/scm-magellano/magc/hf"
	"github.com/tiktoken-go/tokenizer"
)

// MaxPromptTokens bounds a prompt (the prefill is compiled for its length).
const MaxPromptTokens = 4096

// Tokenizer is a model's text ↔ token mapping.
type Tokenizer interface {
	Encode(text string) ([]int, error)
	// Bytes is the byte string of one token (possibly part of a character).
	Bytes(id int) []byte
	Name() string
}

// TokenizerFor finds a model's tokenizer: tokenizer.json beside the model
// file (an imported checkpoint; modelPath "" for a built-in model), else GPT-2's BPE for a model whose
// vocabulary holds it; a model with neither has none.
func TokenizerFor(modelPath string, vocab int) (Tokenizer, []int, error) {
	path := filepath.Join(filepath.Dir(modelPath), "tokenizer.json")
	if _, err := os.Stat(path); err == nil && modelPath != "" {
		t, err := hf.LoadTokenizer(path)
		if err != nil {
			return nil, nil, err
		}
		var stop []int
		if id, ok := t.TokenID("<|endoftext|>"); ok {
			stop = []int{id}
		}
		return hfTokenizer{t, path}, stop, nil
	}
	if vocab >= 50257 {
		enc, err := tokenizer.Get(tokenizer.R50kBase)
		if err != nil {
			return nil, nil, fmt.Errorf("loading the GPT-2 tokenizer: %w", err)
		}
		enc.SetErrorMode(tokenizer.ErrorModeNone)
		return gpt2{enc}, []int{50256}, nil
	}
	return nil, nil, fmt.Errorf("the model has a vocabulary of %d and no tokenizer.json beside it: give token ids (--tokens)", vocab)
}

type hfTokenizer struct {
	t    *hf.Tokenizer
	path string
}

func (h hfTokenizer) Encode(s string) ([]int, error) { return h.t.Encode(s) }
func (h hfTokenizer) Bytes(id int) []byte            { return h.t.DecodeBytes([]int{id}, true) }
func (h hfTokenizer) Name() string                   { return h.path }

type gpt2 struct{ enc tokenizer.Codec }

func (g gpt2) Encode(s string) ([]int, error) {
	ids, _, err := g.enc.Encode(s)
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out, err
}

func (g gpt2) Bytes(id int) []byte {
	if id < 0 || id >= 50256 {
		return nil // end of text, or a padding row
	}
	s, _ := g.enc.Decode([]uint{uint(id)})
	return []byte(s)
}

func (g gpt2) Name() string { return "GPT-2 BPE (r50k_base)" }

// TextStream writes the text of tokens as they come, holding back the
// bytes of a character split across tokens until it is whole.
type TextStream struct {
	W       io.Writer
	pending []byte
}

// Write adds a token's bytes and writes what forms whole characters.
func (s *TextStream) Write(b []byte) error {
	s.pending = append(s.pending, b...)
	n := completePrefix(s.pending)
	if n == 0 {
		return nil
	}
	_, err := s.W.Write(s.pending[:n])
	s.pending = append(s.pending[:0], s.pending[n:]...)
	return err
}

// Flush writes what is left (an incomplete character as U+FFFD).
func (s *TextStream) Flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	_, err := io.WriteString(s.W, string([]rune(string(s.pending))))
	s.pending = nil
	return err
}

// completePrefix is the length of b without a trailing incomplete
// character (one that more bytes could still complete).
func completePrefix(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		i := len(b) - k
		if !utf8.RuneStart(b[i]) {
			continue
		}
		if !utf8.FullRune(b[i:]) {
			return i
		}
		break
	}
	return len(b)
}
