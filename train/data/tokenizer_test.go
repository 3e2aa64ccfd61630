package data

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestModelTokenizer: a model file with tokenizer.json beside it (the
// imported fixture's) tokenises --data with it; one without falls back to
// GPT-2's BPE.
func TestModelTokenizer(t *testing.T) {
	fixture := "../../hf/testdata/hf-mamba-tiny"
	tok, err := ModelTokenizer(filepath.Join(fixture, "model.graph"))
	if err != nil {
		t.Fatal(err)
	}
	if tok == nil || tok.Vocab != 1000 || tok.EOT != 0 {
		t.Fatalf("fixture tokenizer: %+v, want vocabulary 1000 and <|endoftext|> 0", tok)
	}
	const doc = "def forward(self, hidden_states):"
	want := []int32{766, 375, 920, 8, 322, 12, 366, 494, 265, 78, 63, 437, 83, 342, 0} // the tokenizers library's ids, then end of text
	txt := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(txt, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := LoadTextWith(txt, tok, 1, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(slices.Clone(src.Train), src.Valid...); !slices.Equal(got, want) {
		t.Fatalf("tokens %v, want %v", got, want)
	}
	if src.Vocab() != 1000 || !strings.Contains(src.Name(), "tokenizer.json") {
		t.Errorf("vocab %d, name %q", src.Vocab(), src.Name())
	}
	ids := make([]int, len(want)-1)
	for i, id := range want[:len(want)-1] {
		ids[i] = int(id)
	}
	if s := tok.Decode(ids); s != doc {
		t.Errorf("decode: %q", s)
	}

	// No tokenizer.json beside the model, or a built-in one: GPT-2.
	for _, p := range []string{"", "../../models/tiny.graph"} {
		if tok, err := ModelTokenizer(p); tok != nil || err != nil {
			t.Errorf("%q: %v, %v; want no tokenizer", p, tok, err)
		}
	}
	if err := os.WriteFile(txt, []byte(strings.Repeat(doc+"\n", 4)), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := LoadTextWith(txt, nil, 1, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if g.Vocab() != GPT2Vocab || g.Train[0] != 4299 || g.Valid[len(g.Valid)-1] != EndOfText { // GPT-2's "def"
		t.Errorf("GPT-2 path: vocab %d, tokens %v %v", g.Vocab(), g.Train, g.Valid)
	}
}
