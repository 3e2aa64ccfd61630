package passes

import (
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestNodeCost(t *testing.T) {
	b := ir.NewBuilder("cost")
	x := b.Input("x", ir.T(ir.F32, 2, 3, 4))
	w := b.Input("w", ir.T(ir.F32, 5, 4))
	mm := b.Matmul(x, w, false, true) // (2,3,5), K = 4
	rows := b.Input("rows", ir.T(ir.F32, 7, 4))
	ew := b.Input("ew", ir.T(ir.F32, 3, 5, 4))
	off := b.Input("off", ir.T(ir.I32, 4))
	gmm := b.Op(ir.OpGroupedMM, ir.Attrs{"tb": true}, rows, ew, off) // (7,5)
	u := b.Input("u", ir.T(ir.F32, 2, 5, 3))
	bc := b.Input("bc", ir.T(ir.F32, 2, 5, 2))
	scan := b.Apply(ir.OpScan, ir.Attrs{"chunk": 2}, u, u, b.Input("A", ir.T(ir.F32, 3, 2)), bc, bc, b.Input("D", ir.T(ir.F32, 3)))
	ex := b.Unary(ir.OpExp, x)
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v            *ir.Value
		flops, bytes int64
	}{
		{mm, 2 * 2 * 3 * 5 * 4, 4 * (24 + 20 + 30)},
		{gmm, 2 * 7 * 5 * 4, 4 * (28 + 60 + 4 + 35)},
		{scan[0], 9 * 2 * 5 * 3 * 2, 4 * (30 + 30 + 6 + 20 + 20 + 3 + 30 + 2*3*3*2)},
		{ex, 24, 4 * 48},
	} {
		if got := NodeCost(c.v.Node); got != (Cost{c.flops, c.bytes}) {
			t.Errorf("%s: %+v, want %d FLOPs, %d bytes", c.v.Node.Op, got, c.flops, c.bytes)
		}
	}
	if NodeCost(x.Node) != (Cost{}) {
		t.Error("an input costs something")
	}
}

func TestLiveness(t *testing.T) {
	b := ir.NewBuilder("live")
	x := b.Input("x", ir.T(ir.F32, 2))
	y := b.Unary(ir.OpExp, x)
	z := b.Unary(ir.OpNeg, y)
	unused := b.Unary(ir.OpSquare, x)
	b.Output("z", z)
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	live := Liveness(g)
	for _, c := range []struct {
		v    *ir.Value
		want Live
	}{{x, Live{0, 3}}, {y, Live{1, 2}}, {z, Live{2, 4}}, {unused, Live{3, 3}}} {
		if live[c.v] != c.want {
			t.Errorf("%v: %+v, want %+v", c.v, live[c.v], c.want)
		}
	}
}

// TestFlopsPerStep: a train step costs about three forwards (the backward
// does twice the forward's matmul work), more with recomputation.
func TestFlopsPerStep(t *testing.T) {
	g := loadModel(t, "tiny", nil)
	fwd := FlopsPerStep(g)
	train, _ := run(t, g, Config{Train: true})
	layer, cfg := run(t, g, Config{Train: true, Remat: "layer"})
	step := FlopsPerStep(train)
	if r := float64(step) / float64(fwd); r < 2.5 || r > 4 {
		t.Errorf("train step %d FLOPs is %.2f× the forward's %d", step, r, fwd)
	}
	if FlopsPerStep(layer) != step+cfg.Stats.RecomputeFLOPs || cfg.Stats.RecomputeFLOPs > fwd {
		t.Errorf("layer remat: %d FLOPs, recompute %d, forward %d", FlopsPerStep(layer), cfg.Stats.RecomputeFLOPs, fwd)
	}
	t.Logf("tiny: forward %d, train step %d, +%d recomputed under layer; bytes moved %d", fwd, step, cfg.Stats.RecomputeFLOPs, BytesPerStep(layer))
}
