package codegen_test

import (
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// compileFused compiles the whole fused schedule of g (horizontal fusion
// included) and checks every launch on the sim against the reference.
func compileFused(t *testing.T, g *ir.Graph) *codegen.Program {
	t.Helper()
	return compileAndCheck(t, g, passes.Fuse(g, true), nil)
}

// Independent kernels of different templates and grids (a batched matmul
// with a 3-D grid, a row reduction with threadgroup memory, an NF4 matmul,
// an element-wise kernel of 315 threads) run as one launch, and each part
// still computes what it did alone.
func TestHorizontalFusion(t *testing.T) {
	b := ir.NewBuilder("h")
	y := mmParam(b, "y", ir.F32, 33, 64)
	q := b.Op(ir.OpDequant, nil, mmParam(b, "q", ir.NF4, 70, 64))
	outs := []*ir.Value{
		b.Matmul(mmParam(b, "x", ir.F32, 2, 3, 17, 40), mmParam(b, "w", ir.F32, 2, 3, 40, 9), false, false), // grid 1×1×6
		b.Matmul(y, q, false, true),                                   // grid 2×2×1, NF4 prologue
		b.Matmul(y, mmParam(b, "v", ir.F32, 64, 20), false, false),    // grid 1×2×1
		b.Reduce(ir.OpReduceSum, y, false, 1),                         // another threadgroup size: its own launch
		b.Reduce(ir.OpReduceMax, y, false, 1),                         // ... shared with the other reduction
		b.Unary(ir.OpExp, b.Scale(b.Matmul(y, q, false, true), 0.01)), // epilogue; moves back past the reductions
		b.Unary(ir.OpSigmoid, mmParam(b, "e", ir.F32, 7, 45)),         // element-wise: joins whatever runs, regridded
	}
	g := mmFinish(t, b, outs...)
	prog := compileFused(t, g)
	var kinds []string
	for _, d := range prog.Dispatches {
		kinds = append(kinds, d.Kernel)
	}
	if len(prog.Dispatches) != 2 {
		t.Fatalf("%d launches (%s), want 2: the contractions together, the reductions together", len(prog.Dispatches), strings.Join(kinds, ", "))
	}
}

// An element-wise value read by several kernels is computed by the first of
// them, which also stores it for the others (XLA's multi-output fusion):
// SiLU(z) here, gating x before a matmul too wide to compute its lhs while
// staging it (see TestLHSPrologue), and the matmul's result after it.
func TestMultiOutputFusion(t *testing.T) {
	b := ir.NewBuilder("mo")
	z := mmParam(b, "z", ir.F32, 6, 320)
	act := b.Unary(ir.OpSiLU, z)
	y := b.Matmul(b.Mul(act, mmParam(b, "x", ir.F32, 6, 320)), mmParam(b, "w", ir.F32, 320, 320), false, false)
	g := mmFinish(t, b, b.Mul(act, y))
	s := passes.Fuse(g, true)
	if len(s.Groups) != 2 || len(s.Groups[0].Outputs) != 2 || s.Groups[1].Kind != "matmul" {
		t.Fatalf("%d kernels, want the gating kernel storing SiLU(z) too, then the matmul with its epilogue", len(s.Groups))
	}
	compileFused(t, g)
}

// AdamW overwrites each parameter and its moments in place: the update
// names the parameter's memory and its kernel binds one buffer for both,
// which lets more updates share a launch.
func TestUpdatesInPlace(t *testing.T) {
	g := loadModel(t, "tiny", &passes.Config{Mode: "qlora", Train: true}, nil)
	prog, err := codegen.Compile(g, passes.Fuse(g, true))
	if err != nil {
		t.Fatal(err)
	}
	bound := map[*ir.Value]bool{}
	for _, d := range prog.Dispatches {
		for _, b := range d.Bindings {
			bound[b.Value] = true
		}
	}
	for _, u := range g.Updates {
		prm := g.Param(u.Param).Value
		if prog.Alias[u.Value] != prm {
			t.Errorf("update of %s does not overwrite it in place", u.Param)
		}
		if bound[u.Value] {
			t.Errorf("update of %s has a binding of its own", u.Param)
		}
	}
}

// A row reduction runs the element-wise group that reads its result
// broadcast along the row (softmax's backward: p·(dy − Σ p·dy)) over the
// row right after, in one kernel: rows one thread wide and rows a whole
// team of lanes wide.
func TestRowEpilogue(t *testing.T) {
	for _, w := range []int{8, 300} {
		b := ir.NewBuilder("row")
		p := mmParam(b, "p", ir.F32, 6, w)
		dy := mmParam(b, "dy", ir.F32, 6, w)
		s := b.Reduce(ir.OpReduceSum, b.Mul(p, dy), true, 1)
		g := mmFinish(t, b, b.Mul(p, b.Sub(dy, b.BroadcastTo(s, ir.Shape{6, w}))))
		sched := passes.Fuse(g, true)
		if len(sched.Groups) != 1 || len(sched.Groups[0].RowEpilogue) == 0 {
			t.Fatalf("width %d: %d kernels, want the reduction with its row epilogue", w, len(sched.Groups))
		}
		compileFused(t, g)
	}
}

// MoE routing is one kernel: the softmax over router logits, top-k of it
// and the renormalised weights top / Σ top, with the softmax also written
// for its other readers.
func TestRoutingFusion(t *testing.T) {
	b := ir.NewBuilder("route")
	p := b.Op(ir.OpSoftmax, nil, mmParam(b, "logits", ir.F32, 37, 8))
	tk := b.Apply(ir.OpTopK, ir.Attrs{"k": 2}, p)
	top := tk[0]
	weights := b.Div(top, b.BroadcastTo(b.Reduce(ir.OpReduceSum, top, true, 1), ir.Shape{37, 2}))
	g := mmFinish(t, b, weights, b.Reduce(ir.OpReduceMean, p, false, 0), tk[1])
	s := passes.Fuse(g, true)
	var route *passes.Group
	for _, grp := range s.Groups {
		if grp.Kind == "topk" {
			route = grp
		}
	}
	if route == nil || len(route.Nodes) < 5 || len(route.Outputs) != 3 {
		t.Fatalf("routing kernel %+v: want softmax, top-k, sum and division in one, writing p, the choices and the weights", route)
	}
	compileFused(t, g)
}

// The train step with its loss in chunks (see passes.chunkLoss) runs on the
// sim launch by launch as the reference computes it.
func TestChunkedLossOnSim(t *testing.T) {
	g := loadModel(t, "tiny", &passes.Config{Mode: "qlora", Train: true, LossChunkBytes: 64 * 16 * 4}, nil)
	chunks := 0
	for _, n := range g.Nodes {
		if n.Op == ir.OpCrossEntropy {
			chunks++
		}
	}
	if chunks != 4 {
		t.Fatalf("%d loss chunks, want 4", chunks)
	}
	compileFused(t, g)
}

// A contraction with few result columns computes its lhs's producers while
// it stages the lhs, a conv among them, and writes the results others read
// from the first column of tiles: x_proj of the Mamba block computes the
// causal conv and its SiLU, which the scan and the backward pass read.
func TestLHSPrologue(t *testing.T) {
	b := ir.NewBuilder("lhs")
	x := mmParam(b, "x", ir.F32, 2, 37, 24)
	conv := b.Op(ir.OpConv, nil, x, mmParam(b, "cw", ir.F32, 24, 4), mmParam(b, "cb", ir.F32, 24))
	u := b.Unary(ir.OpSiLU, conv)
	proj := b.Matmul(u, mmParam(b, "w", ir.F32, 40, 24), false, true) // 40 columns: one tile
	g := mmFinish(t, b, proj, b.Mul(u, conv))
	s := passes.Fuse(g, true)
	var mm *passes.Group
	for _, grp := range s.Groups {
		if grp.Kind == "matmul" {
			mm = grp
		}
	}
	if mm == nil || !mm.StagesLHS || len(mm.Outputs) != 3 {
		t.Fatalf("matmul group %+v: want the conv and SiLU computed while staging, both written", mm)
	}
	compileFused(t, g)
}

// The memory planner refuses a schedule that reads a result before the
// launch that writes it: fusion bugs surface as errors, not stale memory.
func TestPlanRefusesReadBeforeWrite(t *testing.T) {
	b := ir.NewBuilder("order")
	x := mmParam(b, "x", ir.F32, 8)
	g := mmFinish(t, b, b.Unary(ir.OpNeg, b.Unary(ir.OpExp, x)))
	prog, err := codegen.Compile(g, passes.Fuse(g, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := codegen.PlaceMemory(g, prog, passes.MemOptions{}); err != nil {
		t.Fatalf("in order: %v", err)
	}
	prog.Dispatches[0], prog.Dispatches[1] = prog.Dispatches[1], prog.Dispatches[0]
	if _, err := codegen.PlaceMemory(g, prog, passes.MemOptions{}); err == nil || !strings.Contains(err.Error(), "before any launch writes it") {
		t.Fatalf("swapped: %v, want a read-before-write error", err)
	}
}
