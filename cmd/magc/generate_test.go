package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hfFixture = "../../hf/testdata/hf-mamba-tiny"

// importFixture runs magc import on the Hugging Face fixture.
func importFixture(t *testing.T) (graph, weights string) {
	t.Helper()
	dir := t.TempDir()
	if code, _, stderr := magc(t, "import", hfFixture, "-o", dir); code != 0 {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	return filepath.Join(dir, "hf_mamba_tiny.graph"), filepath.Join(dir, "weights.safetensors")
}

func fixtureGreedyText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(hfFixture, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		GreedyText string `json:"greedy_text"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e.GreedyText
}

// TestGenerateGreedyMatchesTransformers: magc generate on the imported
// fixture prints transformers' greedy continuation, from text or ids.
func TestGenerateGreedyMatchesTransformers(t *testing.T) {
	graph, weights := importFixture(t)
	const prompt = "def forward(self, hidden_states):"
	want := strings.TrimPrefix(fixtureGreedyText(t), prompt) + "\n"
	for _, args := range [][]string{
		{"--prompt", prompt, "--device", "sim"},
		{"--prompt", prompt, "--device", "ref"},
		{"--tokens", "766,375,920,8,322,12,366,494,265,78,63,437,83,342", "--device", "ref"},
		{"--prompt", prompt, "--device", "sim", "--step-prefill"},
	} {
		code, stdout, stderr := magc(t, append([]string{"generate", "--model", graph, "--weights", weights, "--max-tokens", "16"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if stdout != want {
			t.Errorf("%v: printed %q, transformers continues with %q", args, stdout, want)
		}
		if !strings.Contains(stderr, "14 tokens, ") || !strings.Contains(stderr, "decode: 16 tokens") || !strings.Contains(stderr, "tokens/s") {
			t.Errorf("%v: stderr lacks the rates: %s", args, stderr)
		}
		how := "prefill (sequence"
		if args[len(args)-1] == "--step-prefill" {
			how = "prefill (token by token)"
		}
		if !strings.Contains(stderr, how) {
			t.Errorf("%v: stderr does not say %q: %s", args, how, stderr)
		}
	}
}

func TestGenerateFromATrainingCheckpoint(t *testing.T) {
	out := t.TempDir()
	if code, _, stderr := magc(t, "run", "--train", "--model", "tiny", "--steps", "2", "--device", "ref", "--out", out, "--quiet"); code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	code, stdout, stderr := magc(t, "generate", "--model", "tiny", "--checkpoint", ckpt, "--tokens", "1 2 3", "--max-tokens", "5", "--temperature", "0.7", "--seed", "2", "--device", "sim")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if ids := strings.Fields(stdout); len(ids) != 5 {
		t.Fatalf("tiny has no tokenizer: want 5 ids, got %q", stdout)
	}
	if strings.Contains(stderr, "warning") {
		t.Errorf("weights from a checkpoint, yet: %s", stderr)
	}
	// The checkpoint is tiny's: another model refuses it.
	if code, _, stderr := magc(t, "generate", "--model", "tinytext", "--checkpoint", ckpt, "--tokens", "1", "--device", "ref"); code != 1 || !strings.Contains(stderr, "checkpoint of model tiny") {
		t.Errorf("tinytext with tiny's checkpoint: exit %d: %s", code, stderr)
	}
}

func TestGenerateRefusesBadInput(t *testing.T) {
	graph, weights := importFixture(t)
	long := strings.TrimSpace(strings.Repeat("5 ", 4097))
	for _, tc := range []struct {
		args   []string
		errHas string
	}{
		{[]string{"--prompt", ""}, "the prompt is empty"},
		{[]string{"--tokens", " , "}, "the prompt is empty"},
		{[]string{"--tokens", long}, "the prompt has 4097 tokens; the limit is 4096"},
		{[]string{"--tokens", "1", "--prompt", "a"}, "one of them"},
		{[]string{"--tokens", "1,99999"}, `"99999" is not a token id in [0, 1008)`},
		{[]string{"--tokens", "1", "--temperature", "-1"}, "temperature"},
		{[]string{"--tokens", "1", "--top-p", "2"}, "top-p"},
	} {
		args := append([]string{"generate", "--model", graph, "--weights", weights, "--device", "ref"}, tc.args...)
		code, _, stderr := magc(t, args...)
		if code != 1 || !strings.Contains(stderr, tc.errHas) {
			t.Errorf("%v: exit %d, %q; want exit 1 saying %q", tc.args, code, stderr, tc.errHas)
		}
	}
	if code, _, stderr := magc(t, "generate", "--model", "tiny", "--prompt", "hello", "--device", "ref"); code != 1 || !strings.Contains(stderr, "no tokenizer.json") {
		t.Errorf("tiny with a text prompt: exit %d: %s", code, stderr)
	}
}

func TestGenerateCompileOnlyReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decode.json")
	code, stdout, stderr := magc(t, "generate", "--model", "tiny", "--compile-only", "--report", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "launches") || !strings.Contains(stdout, "predicted on an M4") {
		t.Errorf("summary: %s", stdout)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	launches, bytes := r["decode_launches_per_step"].(float64), r["decode_global_bytes_per_token"].(float64)
	weights := r["weight_bytes"].(float64)
	// A step reads every weight at least once; tiny's step is a few kernels per layer.
	if launches < 3 || launches > 40 || bytes < weights || r["predicted_m4_bandwidth_bound_tokens_per_s"].(float64) <= 0 {
		t.Errorf("report %v", r)
	}
}
