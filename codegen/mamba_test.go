package codegen_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// mbUniform declares a parameter drawn from U(lo, hi), so test operands have
// their natural ranges (the default inputs, 0..15, would overflow exp).
func mbUniform(b *ir.Builder, name string, lo, hi float64, shape ...int) *ir.Value {
	return mbUniformOf(b, ir.F32, name, lo, hi, shape...)
}

func mbUniformOf(b *ir.Builder, dt ir.DType, name string, lo, hi float64, shape ...int) *ir.Value {
	return b.Param(ir.Param{Name: name, Role: ir.Trainable,
		Init: ir.Init{Kind: "uniform", Args: map[string]float64{"lo": lo, "hi": hi}}}, ir.T(dt, shape...))
}

type mbScanCase struct{ b, l, e, n, chunk int }

// mbScanGraph builds, for each case, Δ = softplus(p), A = −exp(A_log), the
// scan, and (with bwd) its adjoint fed with the scan's own states. Cases
// share one graph, so their kernels share one sim library.
func mbScanGraph(t *testing.T, bwd bool, cases ...mbScanCase) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("scan")
	for i, c := range cases {
		name := func(s string) string { return fmt.Sprintf("c%d_%s", i, s) }
		u := mbUniform(b, name("u"), -1, 1, c.b, c.l, c.e)
		dt := b.Unary(ir.OpSoftplus, mbUniform(b, name("dt_pre"), -3, 0, c.b, c.l, c.e))
		a := b.Unary(ir.OpNeg, b.Unary(ir.OpExp, mbUniform(b, name("A_log"), -1, 1.5, c.e, c.n)))
		bm := mbUniform(b, name("B"), -1, 1, c.b, c.l, c.n)
		cm := mbUniform(b, name("C"), -1, 1, c.b, c.l, c.n)
		d := mbUniform(b, name("D"), -1, 1, c.e)
		out := b.Apply(ir.OpScan, ir.Attrs{"chunk": c.chunk}, u, dt, a, bm, cm, d)
		b.Output(name("y"), out[0])
		if bwd {
			dy := mbUniform(b, name("dy"), -1, 1, c.b, c.l, c.e)
			grads := b.Apply(ir.OpScanBwd, ir.Attrs{"chunk": c.chunk}, u, dt, a, bm, cm, d, out[1], dy)
			for i, g := range []string{"du", "ddt", "dA", "dB", "dC", "dD"} {
				b.Output(name(g), grads[i])
			}
		} else {
			b.Output(name("states"), out[1])
		}
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mbKinds(kinds ...string) func(*passes.Group) bool {
	return func(grp *passes.Group) bool { return slices.Contains(kinds, grp.Kind) }
}

func TestScanKernelsOnSim(t *testing.T) {
	cases := []mbScanCase{
		{2, 7, 3, 16, 3},   // chunk not dividing L; E=3 leaves masked channels
		{1, 5, 5, 4, 1},    // chunk 1, N=4 (8 channels a simdgroup)
		{2, 6, 4, 16, 8},   // one chunk longer than L
		{1, 6, 6, 16, 6},   // chunk = L
		{2, 9, 20, 16, 4},  // forward: two threadgroups, the second part masked
		{1, 6, 3, 5, 4},    // N=5: lanes past N masked
		{2, 5, 40, 5, 2},   // backward rows: 4 states × 64 channels a threadgroup, the last group part masked
		{1, 3, 100, 3, 2},  // backward rows: 2 states × 128 channels, 4 simdgroups a state
		{1, 4, 1030, 4, 2}, // backward rows: two blocks of 1024 channels
		// Chunks longer than the backward's sub-chunk (16): checkpoints, the
		// last sub-chunk short, the last chunk shorter than one sub-chunk.
		{1, 50, 5, 4, 40},
		{2, 40, 40, 5, 33},
	}
	// One graph (one sim library) for all: the sim keeps fiber stacks per library.
	g := mbScanGraph(t, true, cases...)
	if n := checkOnSim(t, g, passes.Fuse(g, false), mbKinds("selective_scan", "selective_scan_bwd")); n != 2*len(cases) {
		t.Fatalf("%d kernels, want %d", n, 2*len(cases))
	}
}

// TestScanFusedDiscretisation checks that softplus, exp and neg compute
// inside the forward scan kernel (of a forward-only graph: in training the
// backward reads them too, so they stay in memory).
func TestScanFusedDiscretisation(t *testing.T) {
	g := mbScanGraph(t, false, mbScanCase{2, 5, 3, 16, 2})
	s := passes.Fuse(g, true)
	var fwd *passes.Group
	for _, grp := range s.Groups {
		if grp.Kind == "selective_scan" {
			fwd = grp
		}
	}
	if fwd == nil {
		t.Fatal("no scan group")
	}
	var ops []ir.Op
	for _, n := range fwd.Nodes {
		ops = append(ops, n.Op)
	}
	for _, want := range []ir.Op{ir.OpSoftplus, ir.OpExp, ir.OpNeg} {
		if !slices.Contains(ops, want) {
			t.Errorf("scan group fuses %v, missing %s", ops, want)
		}
	}
	checkOnSim(t, g, s, mbKinds("selective_scan", "selective_scan_bwd"))
}

// TestScanBackwardFusedDy: a gate-style producer of dy computes inside the
// backward kernel.
func TestScanBackwardFusedDy(t *testing.T) {
	c := mbScanCase{1, 6, 4, 16, 4}
	b := ir.NewBuilder("scan")
	u := mbUniform(b, "u", -1, 1, c.b, c.l, c.e)
	dt := mbUniform(b, "dt", 0.05, 0.6, c.b, c.l, c.e)
	a := b.Unary(ir.OpNeg, b.Unary(ir.OpExp, mbUniform(b, "A_log", -1, 1.5, c.e, c.n)))
	bm := mbUniform(b, "B", -1, 1, c.b, c.l, c.n)
	cm := mbUniform(b, "C", -1, 1, c.b, c.l, c.n)
	d := mbUniform(b, "D", -1, 1, c.e)
	out := b.Apply(ir.OpScan, ir.Attrs{"chunk": c.chunk}, u, dt, a, bm, cm, d)
	dy := b.Mul(mbUniform(b, "gy", -1, 1, c.b, c.l, c.e), b.Unary(ir.OpSiLU, mbUniform(b, "z", -2, 2, c.b, c.l, c.e)))
	grads := b.Apply(ir.OpScanBwd, ir.Attrs{"chunk": c.chunk}, u, dt, a, bm, cm, d, out[1], dy)
	b.Output("y", out[0])
	b.Output("du", grads[0]) // only du and dB: the others are dead
	b.Output("dB", grads[3])
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	s := passes.Fuse(g, true)
	for _, grp := range s.Groups {
		if grp.Kind == "selective_scan_bwd" {
			var ops []ir.Op
			for _, n := range grp.Nodes {
				ops = append(ops, n.Op)
			}
			if !slices.Contains(ops, ir.OpSiLU) || !slices.Contains(ops, ir.OpMul) {
				t.Errorf("backward group fuses %v, want silu and mul", ops)
			}
		}
	}
	checkOnSim(t, g, s, mbKinds("selective_scan", "selective_scan_bwd"))
}

func TestScanBackwardChunkLimit(t *testing.T) {
	g := mbScanGraph(t, true, mbScanCase{1, 600, 2, 4, 600})
	_, err := codegen.Compile(g, passes.Fuse(g, false))
	if err == nil || !strings.Contains(err.Error(), "chunk 600") {
		t.Fatalf("got %v, want a chunk limit error", err)
	}
}

// mbConvGraph builds the conv of a slice of a wider tensor and its adjoint of
// another slice of it, so that each slice has one consumer and fuses into it.
func mbConvGraph(t *testing.T, dt ir.DType, nb, l, c, k int) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("conv")
	mbUniform := func(b *ir.Builder, name string, lo, hi float64, shape ...int) *ir.Value {
		return mbUniformOf(b, dt, name, lo, hi, shape...)
	}
	xz := mbUniform(b, "xz", -1, 1, nb, l, 2*c)
	x := b.Slice(xz, 2, c, 2*c)
	w := mbUniform(b, "w", -1, 1, c, k)
	bias := mbUniform(b, "bias", -1, 1, c)
	y := b.Op(ir.OpConv, nil, x, w, bias)
	dy := mbUniform(b, "dy", -1, 1, nb, l, c)
	grads := b.Apply(ir.OpConvBwd, nil, b.Slice(xz, 2, c, 2*c), w, dy)
	b.Output("y", y)
	for i, name := range []string{"dx", "dw", "db"} {
		b.Output(name, grads[i])
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestConvKernelsOnSim(t *testing.T) {
	for _, k := range []int{4, 2} {
		for _, fuse := range []bool{false, true} {
			t.Run(fmt.Sprintf("K%d_fuse%v", k, fuse), func(t *testing.T) {
				g := mbConvGraph(t, ir.F32, 2, 7, 5, k)
				s := passes.Fuse(g, fuse)
				if fuse {
					for _, grp := range s.Groups {
						if len(grp.Nodes) != 2 || grp.Nodes[0].Op != ir.OpSlice {
							t.Errorf("%s group does not fuse the slice", grp.Kind)
						}
					}
				}
				if n := checkOnSim(t, g, s, mbKinds("causal_conv1d", "causal_conv1d_bwd")); n != 2 {
					t.Fatalf("%d kernels, want 2", n)
				}
			})
		}
	}
}

// TestConvF16OnSim: f16 operands load and store converted, with f32 sums.
func TestConvF16OnSim(t *testing.T) {
	g := mbConvGraph(t, ir.F16, 2, 6, 3, 4)
	if n := checkOnSim(t, g, passes.Fuse(g, true), mbKinds("causal_conv1d", "causal_conv1d_bwd")); n != 2 {
		t.Fatalf("%d kernels, want 2", n)
	}
}

// TestMambaModelKernelsOnSim runs the tiny model's scan and conv kernels,
// fused, forward-only (where the discretisation fuses into the scan) and as
// a training step (the backward ops come from autodiff). Unfused kernels are
// covered above; each graph costs the sim a library of fiber stacks.
func TestMambaModelKernelsOnSim(t *testing.T) {
	// The conv may run in its own kernel or in x_proj's while it stages its
	// input (passes.lhsPrologue): pick the kernels computing these ops.
	mamba := []ir.Op{ir.OpScan, ir.OpScanBwd, ir.OpConv, ir.OpConvBwd}
	pick := func(grp *passes.Group) bool {
		for _, n := range grp.Nodes {
			if slices.Contains(mamba, n.Op) {
				return true
			}
		}
		return false
	}
	for _, train := range []bool{false, true} {
		for _, mode := range []string{"full", "qlora"} {
			g := loadModel(t, "tiny", &passes.Config{Mode: mode, Train: train}, nil)
			s := passes.Fuse(g, true)
			kinds := map[string]int{}
			for _, grp := range s.Groups {
				for _, n := range grp.Nodes {
					if slices.Contains(mamba, n.Op) {
						kinds[string(n.Op)]++
					}
				}
				if !train && grp.Kind == "selective_scan" {
					ops := map[ir.Op]bool{}
					for _, n := range grp.Nodes {
						ops[n.Op] = true
					}
					if !ops[ir.OpSoftplus] || !ops[ir.OpExp] || !ops[ir.OpNeg] {
						t.Errorf("%s: the scan does not fuse softplus, exp and neg: %v", mode, ops)
					}
				}
			}
			want := []string{"selective_scan", "causal_conv1d"}
			if train {
				want = append(want, "selective_scan_bwd", "causal_conv1d_bwd")
			}
			for _, k := range want {
				if kinds[k] == 0 {
					t.Errorf("%s train=%v: no %s kernels", mode, train, k)
				}
			}
			checkOnSim(t, g, s, pick)
		}
	}
}

// An element-wise chain on a conv's result runs in the conv kernel as an
// epilogue, which writes the conv's result too when others read it (the
// Mamba block keeps it for the backward pass).
func TestConvEpilogue(t *testing.T) {
	b := ir.NewBuilder("conv")
	x := mbUniform(b, "x", -1, 1, 2, 7, 5)
	y := b.Op(ir.OpConv, nil, x, mbUniform(b, "w", -1, 1, 5, 4), mbUniform(b, "bias", -1, 1, 5))
	b.Output("y", y)
	b.Output("act", b.Mul(b.Unary(ir.OpSiLU, y), mbUniform(b, "gate", -1, 1, 2, 7, 5)))
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	s := passes.Fuse(g, true)
	if len(s.Groups) != 1 || len(s.Groups[0].Outputs) != 2 {
		t.Fatalf("%d kernels, want the conv with its epilogue writing both results", len(s.Groups))
	}
	if n := checkOnSim(t, g, s, mbKinds("causal_conv1d")); n != 1 {
		t.Fatalf("%d kernels, want 1", n)
	}
}
