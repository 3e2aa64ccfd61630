package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunImportedModelOnText: --data text for an imported model is
// tokenised with its tokenizer.json (vocabulary 1,000 here; GPT-2's ids
// would not fit its 1,008 rows), then QLoRA trains on it.
func TestRunImportedModelOnText(t *testing.T) {
	graph, weights := importFixture(t)
	txt := filepath.Join(t.TempDir(), "code.txt")
	if err := os.WriteFile(txt, []byte(strings.Repeat("def forward(self, hidden_states):\n    return hidden_states + 1\n", 30)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	code, _, stderr := magc(t, "run", "--train", "--model", graph, "--base", weights, "--mode", "qlora", "--data", txt,
		"--steps", "2", "--seq", "16", "--batch", "2", "--device", "ref", "--out", out, "--quiet")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, filepath.Join(filepath.Dir(graph), "tokenizer.json")) {
		t.Errorf("the run does not name the model's tokenizer: %s", stderr)
	}
	// Without tokenizer.json the same model gets GPT-2's ids, which its vocabulary cannot hold.
	if err := os.Remove(filepath.Join(filepath.Dir(graph), "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = magc(t, "run", "--train", "--model", graph, "--base", weights, "--mode", "qlora", "--data", txt,
		"--steps", "1", "--seq", "16", "--batch", "2", "--device", "ref", "--out", t.TempDir(), "--quiet")
	if code != 1 || !strings.Contains(stderr, "needs 50257 token ids") {
		t.Errorf("without tokenizer.json: exit %d: %s", code, stderr)
	}
}
