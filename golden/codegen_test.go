package golden

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/internal/kcheck"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
)

// Each fused pattern in isolation, as a small model: its training step
// holds the pattern's forward and backward kernels. chunk is the train
// step's LossChunkBytes (0: the default).
var patterns = []struct {
	name, mode, src string
	chunk           int64
}{
	{"scan", "full", `
const B = 2
const L = 12
const E = 8
const N = 4
input u_in: f32[B, L, E]
input dt_in: f32[B, L, E]
input b_in: f32[B, L, N]
input c_in: f32[B, L, N]
param dt_bias: f32[E] = dt_bias nodecay
param A_log: f32[E, N] = s4d_real nodecay
param D: f32[E] = ones nodecay
param w: f32[E] = normal(std = 1)
y, _ = selective_scan(u_in, softplus(dt_in + dt_bias), -exp(A_log), b_in, c_in, D, chunk = 5)
output loss = mean(y * w)
`, 0},
	{"nf4_lora", "qlora", `
const T = 24
const D = 32
input x: f32[T, D]
param w1: f32[2 * D, D] = kaiming_uniform(a = sqrt(5)) lora
param w2: f32[D, 2 * D] = kaiming_uniform(a = sqrt(5)) lora
output loss = mean(square(linear(silu(linear(x, w1)), w2)))
`, 0},
	{"moe", "full", `
import "blocks.graph"
const batch = 2
const context = 8
const d_model = 16
const n_experts = 4
const top_k = 2
const d_ff = 24
const aux_alpha = 0.01
input h: f32[batch, context, d_model]
output loss = mean(square(moe(h)))
`, 0},
	{"rmsnorm", "full", `
input x: f32[6, 40]
param gamma: f32[40] = ones nodecay
param w: f32[40] = normal(std = 1)
output loss = mean(rmsnorm(x, gamma, eps = 1e-5) * w)
`, 0},
	{"cross_entropy", "full", `
input h: f32[10, 16]
input targets: i32[10]
param head: f32[50, 16] = normal(std = 0.5)
output loss = cross_entropy(linear(h, head), targets)
`, 4 * 50 * 4}, // chunks of 4 rows: each chunk's logits made, used and dropped in turn
	{"adamw", "full", `
param w: f32[33, 7] = normal(std = 1)
param b: f32[7] = zeros nodecay
output loss = mean(square(w + b))
`, 0},
}

func readModelFile(p string) ([]byte, error) {
	if strings.HasSuffix(p, "blocks.graph") {
		return os.ReadFile("../models/blocks.graph")
	}
	return nil, os.ErrNotExist
}

// compiled is a train step lowered to kernels, with its rendered outputs.
type compiled struct {
	u    *pipeline.Unit
	g    *ir.Graph
	prog *codegen.Program
	msl  string
	cuda string
	plan []byte
}

func compileTrainStep(t *testing.T, g *ir.Graph, mode string, chunk int64) *compiled {
	t.Helper()
	return compileIn(t, g, mode, chunk, "f32")
}

// compileIn is compileTrainStep in a storage precision.
func compileIn(t *testing.T, g *ir.Graph, mode string, chunk int64, precision string) *compiled {
	t.Helper()
	u, err := pipeline.Run(g, &pipeline.Config{
		Passes: passes.Config{Mode: mode, Train: true, LossChunkBytes: chunk, Precision: precision},
		Verify: true,
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := json.MarshalIndent(u.Plan, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cu, err := codegen.Render(u.Prog.Module, "cuda")
	if err != nil {
		t.Fatal(err)
	}
	return &compiled{u: u, g: u.Graph, prog: u.Prog, msl: u.Source, cuda: cu, plan: append(plan, '\n')}
}

// execute runs every kernel of c on the sim and every GPU present, each on
// operands from the reference interpreter, and fails on any output off the
// reference.
func execute(t *testing.T, c *compiled, seed uint64) {
	t.Helper()
	params, err := ref.InitParams(c.g, seed)
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]*ref.Tensor{}
	for i, in := range c.g.Inputs {
		tt := ref.New(in.Value.Type)
		for k := range tt.Data {
			switch in.Name {
			case "lr":
				tt.Data[k] = 0.01
			case "step":
				tt.Data[k] = 1
			case "loss_scale": // f16 steps: the gradients scaled up, as training runs them
				tt.Data[k] = 1024
			case "targets", "tokens":
				tt.Data[k] = float64((k*5 + i) % max(c.g.Consts["vocab"], 7))
			default:
				tt.Data[k] = float64((k*37+i*11)%23)/11.5 - 1
			}
		}
		inputs[in.Name] = tt
	}
	devs, err := kcheck.Devices()
	if err != nil {
		t.Fatal(err)
	}
	// Streamed: each reference value lives until its last reader, so phase1
	// fits in a small machine (the whole reference was 10 GB).
	bad, err := kcheck.CheckGraph(devs, c.prog, c.g, inputs, params)
	if err != nil {
		t.Fatal(err)
	}
	for i, dev := range devs {
		for _, m := range bad[i] {
			t.Errorf("%s: %v", dev.Name(), m)
		}
	}
}

// TestFusedPatterns pins the MSL, CUDA and plan of each fused pattern and runs
// every kernel on the sim against the reference.
func TestFusedPatterns(t *testing.T) {
	for _, p := range patterns {
		t.Run(p.name, func(t *testing.T) {
			build := func() *compiled {
				g, err := lang.Build(p.name+".graph", []byte(p.src), lang.Options{ReadFile: readModelFile})
				if err != nil {
					t.Fatal(err)
				}
				return compileTrainStep(t, g, p.mode, p.chunk)
			}
			c := build()
			if again := build(); again.msl != c.msl || string(again.plan) != string(c.plan) {
				t.Fatal("compiling the same pattern twice gave different output")
			}
			check(t, "msl/"+p.name+".metal", []byte(c.msl))
			check(t, "cuda/"+p.name+".cu", []byte(c.cuda))
			check(t, "plan/"+p.name+".json", c.plan)
			execute(t, c, 7)
		})
	}
}

// TestTinyTrainStep pins the tiny model's whole train step in both modes
// and runs every kernel on the sim.
func TestTinyTrainStep(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			g, err := lang.Load("../models/tiny.graph", lang.Options{})
			if err != nil {
				t.Fatal(err)
			}
			c := compileTrainStep(t, g, mode, 0)
			check(t, "msl/tiny_"+mode+".metal", []byte(c.msl))
			check(t, "cuda/tiny_"+mode+".cu", []byte(c.cuda))
			check(t, "plan/tiny_"+mode+".json", c.plan)
			execute(t, c, 3)
		})
	}
}

// TestHalfPrecision runs every kernel of the fused patterns and of tiny's
// train step, compiled to store activations and the gradients between
// layers in f16 and in bf16, against the reference, which rounds what a
// kernel stores as the kernel does. Values stored in a half type must be
// within its unit roundoff of the reference (2^-11 for f16, 2^-8 for
// bf16), f32 values within 1e-5 (kcheck.Tolerance). tiny's bf16 kernels
// are pinned too.
func TestHalfPrecision(t *testing.T) {
	for _, prec := range []string{"f16", "bf16"} {
		for _, p := range patterns {
			t.Run(prec+"/"+p.name, func(t *testing.T) {
				g, err := lang.Build(p.name+".graph", []byte(p.src), lang.Options{ReadFile: readModelFile})
				if err != nil {
					t.Fatal(err)
				}
				c := compileIn(t, g, p.mode, p.chunk, prec)
				if c.u.Precision.HalfValues == 0 && p.name != "adamw" {
					t.Errorf("%s stores no value in %s", p.name, prec)
				}
				execute(t, c, 7)
			})
		}
		for _, mode := range []string{"full", "qlora"} {
			t.Run(prec+"/tiny_"+mode, func(t *testing.T) {
				g, err := lang.Load("../models/tiny.graph", lang.Options{})
				if err != nil {
					t.Fatal(err)
				}
				c := compileIn(t, g, mode, 0, prec)
				if prec == "bf16" {
					check(t, "msl/tiny_"+mode+"_bf16.metal", []byte(c.msl))
					check(t, "cuda/tiny_"+mode+"_bf16.cu", []byte(c.cuda))
				}
				execute(t, c, 3)
			})
		}
	}
}

// TestPhase1TrainStep runs every kernel of phase1's train step on the sim,
// at a short context and a 512-token vocabulary (the reference interpreter
// would need minutes for the full 50,257-row embedding); layer shapes are
// phase1's own. It does so in f32 and with activations stored in bf16 and
// in f16 (see TestHalfPrecision).
func TestPhase1TrainStep(t *testing.T) {
	if testing.Short() {
		t.Skip("phase1 on the sim takes a while")
	}
	// The streamed check's live set is about 1.7 GB (phase1's weights and
	// Adam moments in float64, then every gradient at the norm); a soft
	// limit keeps the collector from letting the heap grow to twice that.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(2 << 30))
	for _, prec := range []string{"f32", "bf16", "f16"} {
		t.Run(prec, func(t *testing.T) {
			g, err := lang.Load("../models/phase1.graph", lang.Options{Overrides: map[string]int{"context": 8, "vocab": 512}})
			if err != nil {
				t.Fatal(err)
			}
			execute(t, compileIn(t, g, "full", 0, prec), 5)
		})
	}
	t.Logf("peak resident memory of this test process: %s", peakRSS(t))
}

// peakRSS is the process's high-water resident set (VmHWM), as the kernel counts it.
func peakRSS(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown here (no /proc)"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown (no VmHWM)"
}

// TestScm3bTrainStep pins the flagship's train step kernels and plan (too
// large to execute here; its kernels are the tested templates at scale).
// The plan is pinned as a readable table of its kernels and launches under
// the digest of its JSON, rather than as 65,000 lines of JSON.
func TestScm3bTrainStep(t *testing.T) {
	g, err := lang.Load("../models/scm3b.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := compileTrainStep(t, g, "qlora", 0)
	check(t, "msl/scm3b.metal", []byte(c.msl))
	check(t, "cuda/scm3b.cu", []byte(c.cuda))
	digest, err := plan.Digest(c.u.Plan)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	fmt.Fprintf(&table, "sha256 of plan.json: %s\n", digest)
	if err := plan.WriteTable(&table, c.u.Plan); err != nil {
		t.Fatal(err)
	}
	check(t, "plan/scm3b.txt", table.Bytes())
}
