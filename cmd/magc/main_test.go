package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/scm-magellano/magc/pipeline"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/safetensors"
)

func magc(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// The flagship's sizes are the design targets: 3,284M ±0.5% parameters,
// 164M ±5% trainable, 30 Mamba and 9 MoE layers.
func TestCompileScm3bReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	code, stdout, stderr := magc(t, "compile", "../../models/scm3b.graph", "--report", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "30 mamba, 9 moe") || !strings.Contains(stdout, "launched") {
		t.Errorf("summary lacks the layer counts or the launches:\n%s", stdout)
	}
	var r map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"params_total", "params_trainable", "params_frozen_nf4", "layers_mamba", "layers_moe", "vocab", "context", "weight_bytes"} {
		if _, ok := r[k]; !ok {
			t.Errorf("report lacks %s", k)
		}
	}
	within := func(key string, want, tol float64) {
		got := r[key].(float64)
		if math.Abs(got-want) > tol*want {
			t.Errorf("%s = %.0f, want %.0f ±%.1f%%", key, got, want, 100*tol)
		}
	}
	within("params_total", 3284e6, 0.005)
	within("params_trainable", 164e6, 0.05)
	if r["layers_mamba"].(float64) != 30 || r["layers_moe"].(float64) != 9 || r["vocab"].(float64) != 50257 || r["context"].(float64) != 512 {
		t.Errorf("layers/vocab/context wrong: %v", r)
	}
	// The fusion goals: at least 5× fewer launches and 3× less traffic than
	// one op per kernel.
	ratio := func(a, b string) float64 { return r[a].(float64) / r[b].(float64) }
	if d, g := ratio("dispatches_per_step_unfused", "dispatches_per_step"), ratio("global_bytes_per_step_unfused", "global_bytes_per_step"); d < 5 || g < 3 {
		t.Errorf("fused step has %.2f× fewer launches (goal 5×) and %.2f× less traffic (goal 3×)", d, g)
	}
}

func TestCompilePresets(t *testing.T) {
	want := map[string]float64{"tiny": 0.12e6, "phase1": 77e6, "phase2": 400e6, "phase3": 800e6}
	for m, size := range want {
		path := filepath.Join(t.TempDir(), m+".json")
		if code, _, stderr := magc(t, "compile", "../../models/"+m+".graph", "--report", path); code != 0 {
			t.Fatalf("%s: exit %d: %s", m, code, stderr)
		}
		var r struct {
			ParamsTotal float64 `json:"params_total"`
		}
		data, _ := os.ReadFile(path)
		json.Unmarshal(data, &r)
		if math.Abs(r.ParamsTotal-size) > 0.05*size || (m == "tiny" && r.ParamsTotal > 1e6) {
			t.Errorf("%s has %.0f parameters, want about %.0f", m, r.ParamsTotal, size)
		}
	}
}

func TestUserErrorsExitOne(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.graph")
	os.WriteFile(bad, []byte("input x: f32[0]\noutput y = exp(x)\n"), 0o644)
	cases := [][]string{
		{"compile", bad},
		{"compile", filepath.Join(dir, "missing.graph")},
		{"compile", "../../models/tiny.graph", "--dump", "nosuchpass"},
		{"compile", "../../models/tiny.graph", "--batch", "-3"},
		{"frobnicate"},
	}
	for _, args := range cases {
		code, _, stderr := magc(t, args...)
		if code != 1 || !strings.HasPrefix(stderr, "magc: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	_, _, stderr := magc(t, "compile", bad)
	if !strings.Contains(stderr, "bad.graph:1:14: dimension 0 is 0") || !strings.Contains(stderr, "^") {
		t.Errorf("error is not positioned with a caret:\n%s", stderr)
	}
}

func TestDumpPrintsIR(t *testing.T) {
	code, stdout, _ := magc(t, "compile", "../../models/tiny.graph", "--dump", "qlora", "--mode", "qlora", "--lora-rank", "4")
	if code != 0 || !strings.Contains(stdout, "lora_a") || !strings.HasPrefix(stdout, "graph tiny {") {
		t.Fatalf("exit %d:\n%.300s", code, stdout)
	}
}

// eval round-trips safetensors: the outputs it writes equal the reference
// interpreter's, evaluated directly.
func TestEvalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	out := filepath.Join(dir, "out.safetensors")
	tokens := make([]int32, 16*16)
	for i := range tokens {
		tokens[i] = int32(i*7) % 16
	}
	tt, _ := safetensors.FromInt32([]int{16, 16}, tokens)
	if err := safetensors.WriteFile(in, map[string]safetensors.Tensor{"tokens": tt, "targets": tt}, nil); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := magc(t, "eval", "../../models/tiny.graph", "--inputs", in, "--out", out, "--seed", "3"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f, err := safetensors.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.Tensors["loss"].Float64s()

	g, err := lang.Load("../../models/tiny.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := pipeline.Run(g, &pipeline.Config{}, "remat")
	g = u.Graph
	params, _ := ref.InitParams(g, 3)
	tok, _ := ref.FromInts([]int{16, 16}, toInts(tokens))
	res, err := ref.Eval(g, map[string]*ref.Tensor{"tokens": tok, "targets": tok}, params)
	if err != nil {
		t.Fatal(err)
	}
	want := res.Outputs["loss"].Data[0]
	if math.Abs(got[0]-want) > 1e-6*math.Abs(want) {
		t.Fatalf("eval wrote loss %v, reference gives %v", got[0], want)
	}
	if _, ok := f.Tensors["logits"]; !ok {
		t.Fatal("logits missing")
	}
	if _, ok := f.Tensors["aux_loss.0"]; !ok {
		t.Fatal("aux loss missing")
	}
	// The same through the emitted kernels on the sim.
	if code, _, stderr := magc(t, "eval", "../../models/tiny.graph", "--inputs", in, "--out", out, "--seed", "3", "--device", "sim"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f, err = safetensors.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = f.Tensors["loss"].Float64s()
	if math.Abs(got[0]-want) > 1e-5*math.Abs(want) {
		t.Fatalf("eval --device sim wrote loss %v, reference gives %v", got[0], want)
	}
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// Bad safetensors files are refused with a message naming the problem.
func TestEvalRefusesBadInputs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	tt, _ := safetensors.FromInt32([]int{16, 16}, make([]int32, 256))
	safetensors.WriteFile(good, map[string]safetensors.Tensor{"tokens": tt, "targets": tt}, nil)
	data, _ := os.ReadFile(good)

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	header := func(h string) []byte {
		b := make([]byte, 8)
		b[0] = byte(len(h))
		return append(append(b, h...), make([]byte, 16)...)
	}
	ft, _ := safetensors.FromFloat32("F32", []int{16, 16}, make([]float32, 256))
	wrongDType := filepath.Join(dir, "float.safetensors")
	safetensors.WriteFile(wrongDType, map[string]safetensors.Tensor{"tokens": ft, "targets": tt}, nil)
	shape, _ := safetensors.FromInt32([]int{2, 128}, make([]int32, 256))
	wrongShape := filepath.Join(dir, "shape.safetensors")
	safetensors.WriteFile(wrongShape, map[string]safetensors.Tensor{"tokens": shape, "targets": tt}, nil)
	missing := filepath.Join(dir, "missing.safetensors")
	safetensors.WriteFile(missing, map[string]safetensors.Tensor{"tokens": tt}, nil)

	cases := map[string]struct{ path, msg string }{
		"truncated":     {write("trunc.safetensors", data[:len(data)-10]), "trunc.safetensors"},
		"offsets":       {write("off.safetensors", header(`{"tokens":{"dtype":"I32","shape":[4],"data_offsets":[0,999]}}`)), "off.safetensors"},
		"wrong dtype":   {wrongDType, "tokens: the model needs integers"},
		"wrong shape":   {wrongShape, "shape [2,128], the model needs [16,16]"},
		"missing input": {missing, `missing input "targets"`},
	}
	for name, c := range cases {
		code, _, stderr := magc(t, "eval", "../../models/tiny.graph", "--inputs", c.path, "--out", filepath.Join(dir, "o.safetensors"))
		if code != 1 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%s: exit %d, stderr %q (want it to mention %q)", name, code, stderr, c.msg)
		}
	}
}

// A plan over the arena budget fails with the peak kernel, the largest
// tensors live there and what would fit.
func TestCompileOverBudget(t *testing.T) {
	code, _, stderr := magc(t, "compile", "../../models/scm3b.graph", "--batch", "16")
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	for _, want := range []string{"over the budget of 10.60 GB", "at kernel", "largest of", "--remat auto", "--batch max"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the error lacks %q:\n%s", want, stderr)
		}
	}
}

// --batch max with --remat auto finds scm3b's largest batch in 10.6 GB:
// at least 16 at context 512.
func TestCompileBatchMax(t *testing.T) {
	if testing.Short() {
		t.Skip("a dozen scm3b compiles")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	code, _, stderr := magc(t, "compile", "../../models/scm3b.graph", "--batch", "max", "--remat", "auto", "--report", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r struct {
		Batch      int   `json:"batch"`
		Arena      int64 `json:"arena_bytes"`
		Budget     int64 `json:"arena_budget_bytes"`
		LowerBound int64 `json:"live_lower_bound_bytes"`
	}
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Batch < 16 || r.Arena > r.Budget || float64(r.Arena) > 1.02*float64(r.LowerBound) {
		t.Fatalf("batch %d, arena %d (budget %d, lower bound %d)", r.Batch, r.Arena, r.Budget, r.LowerBound)
	}
}

// magc run --train works through each path a user can pick, and every path
// computes the same first steps.
func TestRunTrainPaths(t *testing.T) {
	var first string
	for _, extra := range [][]string{nil, {"--remat", "auto"}, {"--no-fuse"}, {"--device", "ref"}} {
		out := t.TempDir()
		args := append([]string{"run", "--train", "--steps", "2", "--eval-every", "0", "--eval-batches", "1", "--out", out, "--quiet"}, extra...)
		code, _, stderr := magc(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, code, stderr)
		}
		var s struct {
			Steps     int       `json:"steps"`
			Losses    []float64 `json:"losses"`
			FinalLoss float64   `json:"final_loss"`
		}
		data, err := os.ReadFile(filepath.Join(out, "summary.json"))
		if err != nil || json.Unmarshal(data, &s) != nil || s.Steps != 2 || len(s.Losses) != 2 {
			t.Fatalf("%v: summary.json %s (%v)", extra, data, err)
		}
		got := fmt.Sprintf("%.4f %.4f", s.Losses[0], s.Losses[1])
		if first == "" {
			first = got
		} else if got != first {
			t.Errorf("%v: losses %s, the default path gives %s", extra, got, first)
		}
	}
	code, _, stderr := magc(t, "run", "--train", "--data", filepath.Join(t.TempDir(), "missing.txt"))
	if code != 1 || !strings.Contains(stderr, "missing.txt") {
		t.Errorf("missing data: exit %d, %s", code, stderr)
	}
}
