package data

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
}

func (t *Text) Name() string         { return t.Desc }
func (t *Text) Vocab() int           { return GPT2Vocab }
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

// LoadText reads a .txt file (one document) or a directory holding
// train.jsonl and optionally valid.jsonl (mlx-lm's layout: one JSON object
// per line with a "text" field), and tokenises it with GPT-2's BPE. Without
// a validation file the last tenth of the tokens is held out.
func LoadText(path string, seed uint64, batch, seqLen int) (*Text, error) {
	enc, err := tokenizer.Get(tokenizer.R50kBase)
	if err != nil {
		return nil, fmt.Errorf("loading the GPT-2 tokenizer: %w", err)
	}
	t := &Text{Seed: seed, BatchSize: batch, Len: seqLen}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		if t.Train, err = readJSONL(enc, filepath.Join(path, "train.jsonl")); err != nil {
			return nil, err
		}
		valid := filepath.Join(path, "valid.jsonl")
		if _, err := os.Stat(valid); err == nil {
			if t.Valid, err = readJSONL(enc, valid); err != nil {
				return nil, err
			}
		}
	} else {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(raw)) == "" {
			return nil, fmt.Errorf("%s: the file is empty", path)
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
	return t, nil
}

func encode(enc tokenizer.Codec, text string) ([]int32, error) {
	ids, _, err := enc.Encode(text)
	if err != nil {
		return nil, err
	}
	out := make([]int32, 0, len(ids)+1)
	for _, id := range ids {
		out = append(out, int32(id))
	}
	return append(out, EndOfText), nil
}

func readJSONL(enc tokenizer.Codec, path string) ([]int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []int32
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var rec struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: invalid JSON: %v", path, line, err)
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
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no text (the file is empty)")
	}
	return out, nil
}
