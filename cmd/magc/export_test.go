package main

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/gen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
)

// forwardLogits evaluates a model file's logits on fixed tokens (float64
// reference) in the given mode, with weights and a checkpoint.
func forwardLogits(t *testing.T, graphPath, mode, weights, ckpt string) (*ir.Graph, map[string]*ref.Tensor, []float64) {
	t.Helper()
	g, err := lang.Load(graphPath, lang.Options{Overrides: map[string]int{"batch": 2, "context": 10}})
	if err != nil {
		t.Fatal(err)
	}
	u, err := pipeline.Run(g, &pipeline.Config{Passes: passes.Config{Mode: mode}}, "remat")
	if err != nil {
		t.Fatal(err)
	}
	params, err := gen.LoadWeights(u.Graph, 0, weights, ckpt)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, 20)
	for i := range ids {
		ids[i] = (i*37 + 11) % 1000
	}
	tok, _ := ref.FromInts([]int{2, 10}, ids)
	res, err := ref.Eval(u.Graph, map[string]*ref.Tensor{"tokens": tok, "targets": ref.New(ir.T(ir.I32, 2, 10))}, params)
	if err != nil {
		t.Fatal(err)
	}
	return u.Graph, params, res.Outputs["logits"].Data
}

func relDiff(a, b []float64) float64 {
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / s
}

// TestExportRoundTrip: a QLoRA checkpoint of an imported model, exported
// in the Hugging Face layout (adapters merged into the dequantised
// weights) and imported again, gives the QLoRA model's logits.
func TestExportRoundTrip(t *testing.T) {
	graph, weights := importFixture(t)
	qg, params, _ := forwardLogits(t, graph, "qlora", weights, "")
	// Adapters as training would leave them, but large enough to matter.
	r := rand.New(rand.NewPCG(1, 1))
	ckptParams := map[string]*ref.Tensor{}
	for _, p := range qg.Params {
		if p.Role == ir.Trainable {
			tt := params[p.Name].Clone()
			for i := range tt.Data {
				tt.Data[i] = float64(float32(0.05 * r.NormFloat64()))
			}
			ckptParams[p.Name] = tt
		}
	}
	if len(ckptParams) != 8 { // in_proj and out_proj of 2 layers, A and B each
		t.Fatalf("%d trainable tensors in QLoRA mode", len(ckptParams))
	}
	ckpt := filepath.Join(t.TempDir(), "checkpoint.safetensors")
	if err := train.SaveCheckpoint(ckpt, qg, ckptParams, 3, 0); err != nil {
		t.Fatal(err)
	}
	_, _, tuned := forwardLogits(t, graph, "qlora", weights, ckpt)
	_, _, base := forwardLogits(t, graph, "full", weights, "")
	if d := relDiff(tuned, base); d < 1e-2 {
		t.Fatalf("the adapters change the logits by only %.3g: the test would not see a lost merge", d)
	}

	out := t.TempDir()
	if code, _, stderr := magc(t, "export", "--model", graph, "--checkpoint", ckpt, "-o", out); code != 1 || !strings.Contains(stderr, "--base") {
		t.Errorf("a QLoRA checkpoint without --base: exit %d: %s", code, stderr)
	}
	if code, stdout, stderr := magc(t, "export", "--model", graph, "--checkpoint", ckpt, "--base", weights, "-o", out); code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	} else if !strings.Contains(stdout, "merged") {
		t.Errorf("export says %q", stdout)
	}
	for _, f := range []string{"model.safetensors", "config.json", "tokenizer.json"} {
		if !fileExists(filepath.Join(out, f)) {
			t.Errorf("export wrote no %s", f)
		}
	}
	again := t.TempDir()
	if code, _, stderr := magc(t, "import", out, "-o", again, "--name", "hf_mamba_tiny"); code != 0 {
		t.Fatalf("re-import: exit %d: %s", code, stderr)
	}
	_, _, back := forwardLogits(t, filepath.Join(again, "hf_mamba_tiny.graph"), "full", filepath.Join(again, "weights.safetensors"), "")
	if d := relDiff(back, tuned); d > 1e-5 {
		t.Fatalf("exported and re-imported logits differ from the QLoRA model's by %.3g (relative) > 1e-5", d)
	} else {
		t.Logf("round trip: relative difference %.3g (merge rounds to f32 once)", d)
	}

	// --adapters-only: the adapters, with rank, alpha and targets.
	adir := t.TempDir()
	if code, _, stderr := magc(t, "export", "--model", graph, "--checkpoint", ckpt, "--base", weights, "-o", adir, "--adapters-only"); code != 0 {
		t.Fatalf("adapters: exit %d: %s", code, stderr)
	}
	f, err := safetensors.Read(filepath.Join(adir, "adapters.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	md := f.Metadata
	if md["rank"] != "16" || md["alpha"] != "16" || md["targets"] != "mamba.0.in_proj,mamba.0.out_proj,mamba.1.in_proj,mamba.1.out_proj" {
		t.Errorf("adapter metadata %v", md)
	}
	if len(f.Tensors) != 8 {
		t.Errorf("%d adapter tensors, want 8", len(f.Tensors))
	}
	got, _ := f.Tensors["mamba.1.out_proj.lora_b"].Float32s()
	want := ckptParams["mamba.1.out_proj.lora_b"].Float32()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("adapter mamba.1.out_proj.lora_b differs from the checkpoint's at %d", i)
		}
	}
}

func TestExportRefusesMoE(t *testing.T) {
	out := t.TempDir()
	if code, _, stderr := magc(t, "run", "--train", "--model", "tiny", "--steps", "1", "--device", "ref", "--out", out, "--quiet"); code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	code, _, stderr := magc(t, "export", "--checkpoint", filepath.Join(out, "checkpoint.safetensors"), "-o", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "moe layer") {
		t.Fatalf("exporting tiny (Mamba + MoE): exit %d: %s", code, stderr)
	}
}

// TestExportLoadsInTransformers: a QLoRA fine-tune of the imported fixture
// (40 steps on README.md, on the sim), exported by magc and loaded by
// transformers on the GPU machine (bench/cuda/run.sh's hf group). The export
// made now is byte for byte the one transformers read, and transformers'
// logits and greedy continuation are the QLoRA model's as magc computes them.
func TestExportLoadsInTransformers(t *testing.T) {
	const tuned = "../../hf/testdata/hf-mamba-tiny-tuned"
	ckpt := filepath.Join(tuned, "checkpoint.safetensors")
	hf, err := safetensors.Read(filepath.Join(tuned, "transformers.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	graph, weights := importFixture(t)
	out := t.TempDir()
	if code, _, stderr := magc(t, "export", "--model", graph, "--checkpoint", ckpt, "--base", weights, "-o", out); code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(b)); sum != hf.Metadata["model_sha256"] {
		t.Fatalf("the export is not the one transformers loaded: sha256 %s, transformers read %s", sum, hf.Metadata["model_sha256"])
	}

	ids, _ := hf.Tensors["input_ids"].Int32s()
	for i, id := range ids {
		if int(id) != (i*37+11)%1000 {
			t.Fatalf("transformers' input_ids[%d] = %d, not forwardLogits' tokens", i, id)
		}
	}
	want, _ := hf.Tensors["logits"].Float32s()
	_, _, got := forwardLogits(t, graph, "qlora", weights, ckpt)
	w64 := make([]float64, len(want))
	for i, v := range want {
		w64[i] = float64(v)
	}
	if d := relDiff(got, w64); d > 1e-4 {
		t.Fatalf("magc's QLoRA logits differ from transformers' on the export by %.3g (relative) > 1e-4", d)
	} else {
		t.Logf("transformers %s on magc's export: logits within %.3g (relative) of magc's", hf.Metadata["transformers"], d)
	}

	prompt, _ := hf.Tensors["prompt_ids"].Int32s()
	var toks []string
	for _, id := range prompt {
		toks = append(toks, fmt.Sprint(id))
	}
	code, stdout, stderr := magc(t, "generate", "--model", graph, "--checkpoint", ckpt, "--base", weights,
		"--tokens", strings.Join(toks, ","), "--max-tokens", "16", "--ignore-eos", "--device", "sim")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, stderr)
	}
	text := hf.Metadata["greedy_text"]
	if wantCont := text[len("def forward(self, hidden_states):"):] + "\n"; stdout != wantCont {
		t.Errorf("magc generate continues with %q, transformers with %q", stdout, wantCont)
	}
}
