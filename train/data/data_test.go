package data

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSelectiveCopying(t *testing.T) {
	s := &SelectiveCopying{Seed: 7, BatchSize: 3, Len: 24, M: 4}
	b := s.Batch(5)
	if !reflect.DeepEqual(b, s.Batch(5)) || reflect.DeepEqual(b.Tokens, s.Batch(6).Tokens) {
		t.Fatal("batches must be a function of the step")
	}
	if reflect.DeepEqual(b.Tokens, s.Eval(5).Tokens) {
		t.Fatal("evaluation batches must differ from training batches")
	}
	for i := 0; i < b.B; i++ {
		tok, tgt := b.Tokens[i*b.L:(i+1)*b.L], b.Targets[i*b.L:(i+1)*b.L]
		var data, want []int32
		for p := 0; p < b.L-s.M; p++ {
			if tok[p] != noise {
				data = append(data, tok[p])
			}
			if tgt[p] != Ignore {
				t.Fatal("slots are not scored")
			}
		}
		for j := 0; j < s.M; j++ {
			if tok[b.L-s.M+j] != marker {
				t.Fatal("markers missing")
			}
			want = append(want, tgt[b.L-s.M+j])
		}
		if !reflect.DeepEqual(data, want) || len(data) != s.M {
			t.Fatalf("targets %v are not the data tokens %v in order", want, data)
		}
	}
}

func TestInductionHeads(t *testing.T) {
	s := &InductionHeads{Seed: 1, BatchSize: 4, Len: 16}
	b := s.Batch(0)
	for i := 0; i < b.B; i++ {
		tok, tgt := b.Tokens[i*b.L:(i+1)*b.L], b.Targets[i*b.L:(i+1)*b.L]
		at := -1
		for p := 0; p < b.L-1; p++ {
			if tok[p] == marker {
				at = p
			}
		}
		if at < 0 || tok[b.L-1] != marker || tgt[b.L-1] != tok[at+1] {
			t.Fatalf("sequence %v targets %v", tok, tgt)
		}
		for p := 0; p < b.L-1; p++ {
			if tgt[p] != Ignore {
				t.Fatal("only the last position is scored")
			}
		}
	}
}

func TestAccuracy(t *testing.T) {
	b := Batch{B: 1, L: 3, Targets: []int32{Ignore, 1, 0}}
	logits := []float32{9, 0, 0, 1, 2, 0, 0, 5, 0} // rows: ignored, argmax 1 (right), argmax 1 (wrong)
	if c, n := Accuracy(b, logits, 3); c != 1 || n != 2 {
		t.Fatalf("accuracy %d/%d, want 1/2", c, n)
	}
}

func TestTextLoading(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "a.txt")
	os.WriteFile(txt, []byte(strings.Repeat("hello world. ", 200)), 0o644)
	src, err := LoadText(txt, 1, 2, 16)
	if err != nil {
		t.Fatal(err)
	}
	if src.Train[0] != 31373 || src.Train[1] != 995 { // GPT-2 ids of "hello" and " world"
		t.Fatalf("unexpected tokens %v", src.Train[:4])
	}
	b := src.Batch(3)
	for i := 0; i < b.L-1; i++ {
		if b.Targets[i] != b.Tokens[i+1] {
			t.Fatal("targets must be the next tokens")
		}
	}

	jsonl := filepath.Join(dir, "ds")
	os.Mkdir(jsonl, 0o755)
	write := func(name, body string) { os.WriteFile(filepath.Join(jsonl, name), []byte(body), 0o644) }
	write("train.jsonl", `{"text": "`+strings.Repeat("one two three ", 200)+`"}`+"\n\n"+`{"text": "four"}`+"\n")
	if _, err := LoadText(jsonl, 1, 2, 16); err != nil {
		t.Fatal(err)
	}

	cases := map[string]struct{ setup func() string }{
		"empty file": {func() string { p := filepath.Join(dir, "e.txt"); os.WriteFile(p, []byte("  \n"), 0o644); return p }},
		"bad json line": {func() string {
			write("train.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n")
			return jsonl
		}},
		"no text field": {func() string { write("train.jsonl", `{"body": "x"}`+"\n"); return jsonl }},
		"too short":     {func() string { p := filepath.Join(dir, "s.txt"); os.WriteFile(p, []byte("tiny"), 0o644); return p }},
	}
	want := map[string]string{"empty file": "empty", "bad json line": "train.jsonl:2: invalid JSON", "no text field": `train.jsonl:1: the object has no "text"`, "too short": "fewer than one sequence"}
	for name, c := range cases {
		_, err := LoadText(c.setup(), 1, 2, 16)
		if err == nil || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, want[name])
		}
	}
}
