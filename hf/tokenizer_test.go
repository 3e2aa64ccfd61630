package hf_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/hf"
)

type expectedJSON struct {
	Samples    []string         `json:"samples"`
	Encodings  map[string][]int `json:"encodings"`
	GreedyText string           `json:"greedy_text"`
}

func readExpectedJSON(t *testing.T) expectedJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixture, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectedJSON
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func fixtureTokenizer(t *testing.T) *hf.Tokenizer {
	t.Helper()
	tok, err := hf.LoadTokenizer(filepath.Join(fixture, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenizerMatchesTokenizers(t *testing.T) {
	tok := fixtureTokenizer(t)
	e := readExpectedJSON(t)
	if len(e.Samples) < 4 {
		t.Fatalf("expected.json has %d samples", len(e.Samples))
	}
	for _, s := range e.Samples {
		got, err := tok.Encode(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if want := e.Encodings[s]; !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("Encode(%q) = %v, tokenizers gives %v", s, got, want)
		}
		if back := tok.Decode(got, false); back != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, back)
		}
	}
}

func TestTokenizerDecodesTheGreedyText(t *testing.T) {
	tok := fixtureTokenizer(t)
	ids, _ := expectedInts(t, "greedy_ids")
	if got, want := tok.Decode(ids, true), readExpectedJSON(t).GreedyText; got != want {
		t.Fatalf("Decode(greedy_ids) = %q, transformers decoded %q", got, want)
	}
}

func TestTokenizerSplitsSpecialTokens(t *testing.T) {
	tok := fixtureTokenizer(t)
	ids, err := tok.Encode("a<|endoftext|>b")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, 0) || len(ids) != 3 {
		t.Fatalf("Encode(a<|endoftext|>b) = %v, want the end-of-text id 0 between a and b", ids)
	}
	if got := tok.Decode(ids, false); got != "a<|endoftext|>b" {
		t.Fatalf("round trip gives %q", got)
	}
}

func TestTokenizerRefusesOtherModels(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixture, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, errHas string }{
		{`"type": "BPE"`, `"type": "Unigram"`, "model type"},
		{`"pre_tokenizer": {
    "type": "ByteLevel"`, `"pre_tokenizer": {
    "type": "Metaspace"`, "pre_tokenizer"},
	} {
		src := strings.Replace(string(b), tc.from, tc.to, 1)
		if src == string(b) {
			t.Fatalf("fixture has no %q", tc.from)
		}
		if _, err := hf.ParseTokenizer([]byte(src)); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: got %v, want an error about %s", tc.to, err, tc.errHas)
		}
	}
}
