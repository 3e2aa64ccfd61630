package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/train/data"
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

// TestTrainingSamples: periodic evaluation on text prints a greedy sample
// that continues the first held-out tokens with the weights of that step:
// the same text magc generate prints from a checkpoint of those weights.
func TestTrainingSamples(t *testing.T) {
	graph, weights := importFixture(t)
	txt := filepath.Join(t.TempDir(), "code.txt")
	if err := os.WriteFile(txt, []byte(strings.Repeat("def forward(self, hidden_states):\n    return hidden_states * 2\n", 30)), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"run", "--train", "--model", graph, "--base", weights, "--mode", "qlora", "--data", txt, "--lr", "0.05",
		"--schedule", "constant", "--warmup", "0", "--seq", "16", "--batch", "2", "--device", "ref", "--quiet"}
	code, _, stderr := magc(t, append(flags, "--steps", "3", "--eval-every", "1", "--out", t.TempDir())...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The second sample: the step was placed at the first, weights copied since.
	_, line, ok := strings.Cut(stderr, "step 2: sample ")
	if !ok {
		t.Fatalf("no sample at step 2: %s", stderr)
	}
	line, _, _ = strings.Cut(line, "\n")
	// The same weights: two steps of the same schedule, saved.
	out := t.TempDir()
	if code, _, stderr := magc(t, append(flags, "--steps", "2", "--out", out)...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	tok, err := data.ModelTokenizer(graph)
	if err != nil {
		t.Fatal(err)
	}
	src, err := data.LoadTextWith(txt, tok, 1, 2, 16)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range src.Valid[:sampleFrom] {
		ids = append(ids, strconv.Itoa(int(id)))
	}
	code, stdout, stderr := magc(t, "generate", "--model", graph, "--base", weights, "--checkpoint", filepath.Join(out, "checkpoint.safetensors"),
		"--tokens", strings.Join(ids, ","), "--max-tokens", strconv.Itoa(sampleLen), "--ignore-eos", "--device", "ref")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, stderr)
	}
	want := strconv.Quote(tok.Decode(intsOf(src.Valid[:sampleFrom]))) + " → " + strconv.Quote(strings.TrimSuffix(stdout, "\n"))
	if line != want {
		t.Errorf("sample %s; generate from the step's checkpoint gives %s", line, want)
	}
	// The base weights continue otherwise: the sample did follow training.
	_, base, _ := magc(t, "generate", "--model", graph, "--weights", weights, "--tokens", strings.Join(ids, ","),
		"--max-tokens", strconv.Itoa(sampleLen), "--ignore-eos", "--device", "ref")
	if base == stdout {
		t.Errorf("the base weights continue as step 2's do (%q): the test cannot tell them apart", base)
	}
}

func intsOf(xs []int32) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}
