package train_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

// writePlan stores a plan as `magc compile -o` does.
func writePlan(t *testing.T, p *plan.Plan, src string) string {
	t.Helper()
	dir := t.TempDir()
	js, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plan.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernels.metal"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The tiny model's train step, run from plan.json and kernels.metal alone,
// gives the reference interpreter's losses, weights and moments.
func TestPlanRunnerMatchesReference(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			c := compileTiny(t, mode)
			gs := c.Graphs
			p, src, err := plan.Load(writePlan(t, c.step.Plan, c.step.Source), "msl")
			if err != nil {
				t.Fatal(err)
			}
			r, err := plan.NewRunner(sim.New(), p, src)
			if err != nil {
				t.Fatal(err)
			}
			params, err := ref.InitParams(gs.Train, 5)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range r.Params() {
				p := params[name]
				if p.Type.DType == ir.NF4 {
					b, err := train.Encode(p)
					if err == nil {
						err = r.WriteBytes(name, b)
					}
					if err != nil {
						t.Fatal(err)
					}
					continue
				}
				v := make([]float32, len(p.Data))
				for i, x := range p.Data {
					v[i] = float32(x)
				}
				if err := r.WriteFloat32(name, v); err != nil {
					t.Fatal(err)
				}
			}
			b := (&data.SelectiveCopying{Seed: 4, BatchSize: gs.Train.Consts["batch"], Len: gs.Train.Consts["context"], M: 4}).Batch(1)
			const lr = 1e-2
			for name, err := range map[string]error{
				"tokens":  r.WriteInt32("tokens", b.Tokens),
				"targets": r.WriteInt32("targets", b.Targets),
				"lr":      r.WriteFloat32("lr", []float32{lr}),
				"step":    r.WriteFloat32("step", []float32{1}),
			} {
				if err != nil {
					t.Fatalf("feeding %s: %v", name, err)
				}
			}
			if err := r.Step(); err != nil {
				t.Fatal(err)
			}
			want := train.NewRefStepper(gs, params)
			w, err := want.Step(b, train.StepInputs{LR: lr, Step: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"loss", "loss_main", "loss_aux", "grad_norm"} {
				got, err := r.Scalar(k)
				if err != nil {
					t.Fatal(err)
				}
				if e := math.Abs(got-w[k]) / math.Max(math.Abs(w[k]), 1e-12); e > 1e-4 {
					t.Errorf("%s: plan runner %.9g, reference %.9g", k, got, w[k])
				}
			}
			n := 0
			for _, p := range gs.Train.Params {
				if p.Role != ir.Trainable && p.Role != ir.OptState {
					continue
				}
				wp, _ := want.Get([]string{p.Name})
				got, err := r.ReadFloat32(p.Name)
				if err != nil {
					t.Fatal(err)
				}
				g64 := make([]float64, len(got))
				for i, x := range got {
					g64[i] = float64(x)
				}
				// Moments follow the gradients to f32 rounding. A weight
				// that starts at zero (lora_b) is Adam's first step alone,
				// m/(√v+ε), which maps each gradient to about ±lr whatever
				// its size: f32 summation noise in gradients near ε (1e-8)
				// shows up at full scale, so weights get a looser bound.
				tol := 1e-4
				if p.Role == ir.Trainable {
					tol = 1e-3
				}
				if e := relErr(g64, wp[p.Name].Data); e > tol {
					t.Errorf("%s after one step: relative error %.3g", p.Name, e)
				}
				n++
			}
			if n == 0 {
				t.Fatal("no trainable parameters compared")
			}
		})
	}
}

// smallPlan is a hand-written plan whose update does not share its
// parameter's buffer, with arguments bound at byte offsets.
func smallPlan() (*plan.Plan, string) {
	src := `#include <metal_stdlib>
using namespace metal;

kernel void add_one(device const float* w [[buffer(0)]], device float* u [[buffer(1)]],
                    uint i [[thread_position_in_grid]]) {
    if (i < 4) u[i] = w[i] + 1.0f;
}
`
	p := &plan.Plan{
		Version: plan.Version, Model: "small", Segments: []int64{512, 256}, Align: 256,
		Buffers: []plan.Buffer{
			{Name: "w", Segment: 0, Offset: 0, Bytes: 32, DType: "f32", Shape: []int{8}, Role: ir.Trainable, Live: [2]int{0, 1}},
			{Name: "upd", Segment: 1, Offset: 0, Bytes: 32, DType: "f32", Shape: []int{8}, Role: ir.Activation, Live: [2]int{0, 1}},
			{Name: "n", Segment: 0, Offset: 256, Bytes: 4, DType: "i32", Role: ir.HostInput, Live: [2]int{0, 1}},
			{Name: "h", Segment: 0, Offset: 288, Bytes: 4, DType: "f16", Shape: []int{2}, Role: ir.Frozen, Live: [2]int{0, 1}},
		},
		Kernels: []plan.Kernel{{Name: "add_one", Threads: [3]int{4, 1, 1}, Params: []string{"w", "u"}}},
		Dispatches: []plan.Dispatch{
			{Kernel: "add_one", Groups: [3]int{1, 1, 1}, Threads: [3]int{4, 1, 1}, Args: []plan.Arg{{Buffer: "w"}, {Buffer: "upd"}}},
			// The upper half, through arguments 16 bytes in.
			{Kernel: "add_one", Groups: [3]int{1, 1, 1}, Threads: [3]int{4, 1, 1}, Args: []plan.Arg{{Buffer: "w", Offset: 16}, {Buffer: "upd", Offset: 16}}},
		},
		Host: plan.Host{Feed: []string{"n"}, Read: map[string]string{"out": "upd"}, Updates: map[string]string{"w": "upd"}},
	}
	return p, src
}

// Updates placed apart from their parameter are copied back after each
// step, and arguments are bound at their byte offsets.
func TestPlanRunnerCopiesUpdates(t *testing.T) {
	p, src := smallPlan()
	r, err := plan.NewRunner(sim.New(), p, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFloat32("w", []float32{0, 1, 2, 3, 4, 5, 6, 7}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Step(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.ReadFloat32("w")
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range got {
		if x != float32(i+2) {
			t.Fatalf("w after two steps = %v, want each element + 2", got)
		}
	}
	if out, err := r.ReadFloat32("out"); err != nil || out[7] != 9 {
		t.Errorf("output out = %v, %v; want its last element 9", out, err)
	}
	// Host-side checks: lengths, integer buffers, unknown names.
	for what, err := range map[string]error{
		"short write":   r.WriteFloat32("w", []float32{1}),
		"fraction":      r.WriteFloat32("n", []float32{1.5}),
		"unknown":       r.WriteInt32("nope", []int32{1}),
		"bytes":         r.WriteBytes("w", make([]byte, 3)),
		"float as ints": func() error { _, err := r.ReadInt32("w"); return err }(),
		"vector scalar": func() error { _, err := r.Scalar("w"); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	if err := r.WriteFloat32("n", []float32{3}); err != nil {
		t.Errorf("a whole number into an i32 buffer: %v", err)
	}
	// f16 buffers take float32 values in IEEE binary16.
	if err := r.WriteInt32("h", []int32{1, -2}); err != nil {
		t.Fatal(err)
	}
	if raw, err := r.ReadBytes("h"); err != nil || string(raw) != "\x00\x3c\x00\xc0" {
		t.Errorf("f16 1, -2 stored as % x, %v; want 00 3c 00 c0", raw, err)
	}
	if h, err := r.ReadFloat32("h"); err != nil || h[0] != 1 || h[1] != -2 {
		t.Errorf("f16 read back as %v, %v", h, err)
	}
}

// Corrupt plans are refused with an error that names the problem.
func TestValidatePlan(t *testing.T) {
	cases := []struct {
		name, want string
		corrupt    func(p *plan.Plan)
	}{
		{"version", "format version 3", func(p *plan.Plan) { p.Version = 3 }},
		{"unknown kernel", `kernel "mul"`, func(p *plan.Plan) { p.Dispatches[1].Kernel = "mul" }},
		{"unknown buffer", `names buffer "x"`, func(p *plan.Plan) { p.Dispatches[0].Args[1].Buffer = "x" }},
		{"outside segment", `lies outside segment 1`, func(p *plan.Plan) { p.Buffers[1].Offset = 240 }},
		{"no segment", "in segment 2", func(p *plan.Plan) { p.Buffers[1].Segment = 2 }},
		{"dtype", `unknown dtype "f33"`, func(p *plan.Plan) { p.Buffers[0].DType = "f33" }},
		{"size", "is 32 bytes, but f32[9] takes 36", func(p *plan.Plan) { p.Buffers[0].Shape = []int{9} }},
		{"arity", "binds 1 arguments, the kernel takes 2", func(p *plan.Plan) { p.Dispatches[0].Args = p.Dispatches[0].Args[:1] }},
		{"arg offset", "binds byte 64", func(p *plan.Plan) { p.Dispatches[1].Args[0].Offset = 64 }},
		{"duplicate", "declared twice", func(p *plan.Plan) { p.Buffers[2].Name = "w" }},
		{"feed", `input "m"`, func(p *plan.Plan) { p.Host.Feed = []string{"m"} }},
		{"read", `buffer "y"`, func(p *plan.Plan) { p.Host.Read["out"] = "y" }},
		{"update type", "does not match", func(p *plan.Plan) { p.Host.Updates = map[string]string{"w": "n"} }},
		{"update dies", "dies at dispatch 0", func(p *plan.Plan) { p.Buffers[1].Live = [2]int{0, 0} }},
		{"grid", "bad grid", func(p *plan.Plan) { p.Dispatches[0].Threads[0] = 0 }},
	}
	for _, c := range cases {
		p, _ := smallPlan()
		c.corrupt(p)
		err := plan.Validate(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
		// The runner refuses it before touching the device.
		if _, err := plan.NewRunner(nil, p, ""); err == nil {
			t.Errorf("%s: NewPlanRunner accepted the plan", c.name)
		}
	}
	p, _ := smallPlan()
	if err := plan.Validate(p); err != nil {
		t.Fatalf("the valid plan: %v", err)
	}
	for in, want := range map[string]string{
		`{"version": 2, "segments": 3}`: "decoding plan",
		`{"segments": []}`:              "no version",
		`{"version": 7}`:                "format version 7",
		`not json`:                      "not valid JSON",
	} {
		if _, err := plan.Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePlan(%s): got %v, want %q", in, err, want)
		}
	}
	if _, _, err := plan.Load(t.TempDir(), "msl"); err == nil {
		t.Error("LoadPlan of an empty directory: no error")
	}
}
