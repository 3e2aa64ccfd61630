package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/safetensors"
)

// writeInputs writes tiny's eval inputs with one token id and one target
// replaced.
func writeInputs(t *testing.T, dir, name string, tokAt int, tok int32, tgtAt int, tgt int32) string {
	t.Helper()
	tokens, targets := make([]int32, 256), make([]int32, 256)
	for i := range tokens {
		tokens[i], targets[i] = int32(i%16), -100
	}
	tokens[tokAt], targets[tgtAt] = tok, tgt
	a, _ := safetensors.FromInt32([]int{16, 16}, tokens)
	b, _ := safetensors.FromInt32([]int{16, 16}, targets)
	p := filepath.Join(dir, name)
	if err := safetensors.WriteFile(p, map[string]safetensors.Tensor{"tokens": a, "targets": b}, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// Out-of-range token ids and targets are refused by eval on every device,
// naming the input and the position, before anything runs.
func TestEvalRefusesBadIndices(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		path, msg string
	}{
		"token = vocab":  {writeInputs(t, dir, "a", 17, 16, 0, 3), "tokens[1, 1] is 16, outside [0, 16)"},
		"token negative": {writeInputs(t, dir, "b", 255, -1, 0, 3), "tokens[15, 15] is -1"},
		"token -100":     {writeInputs(t, dir, "c", 0, -100, 0, 3), "tokens[0, 0] is -100"},
		"target = vocab": {writeInputs(t, dir, "d", 0, 1, 40, 16), "targets[2, 8] is 16, outside [0, 16) or -100 (ignored)"},
		"target -1":      {writeInputs(t, dir, "e", 0, 1, 3, -1), "targets[0, 3] is -1"},
		"target huge":    {writeInputs(t, dir, "f", 0, 1, 3, 1<<31-1), "targets[0, 3] is 2147483647, outside"},
	}
	for _, dev := range []string{"ref", "sim"} {
		for name, c := range cases {
			code, _, stderr := magc(t, "eval", "tiny", "--inputs", c.path, "--out", filepath.Join(dir, "o"), "--device", dev)
			if code != 1 || !strings.Contains(stderr, c.msg) {
				t.Errorf("%s, %s: exit %d, %q (want %q)", dev, name, code, stderr, c.msg)
			}
		}
	}
	good := writeInputs(t, dir, "g", 0, 15, 0, 15)
	if code, _, stderr := magc(t, "eval", "tiny", "--inputs", good, "--out", filepath.Join(dir, "o"), "--device", "sim"); code != 0 {
		t.Errorf("good inputs: exit %d: %s", code, stderr)
	}
}
