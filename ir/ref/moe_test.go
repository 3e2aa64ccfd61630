package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestTopK(t *testing.T) {
	x := f32(t, sh(2, 5), 3, 1, 3, math.NaN(), 2, 0, -1, 5, 0, 5)
	out := run(t, ir.OpTopK, ir.Attrs{"k": 3}, x)
	expect(t, "values", out[0], sh(2, 3), 0, math.NaN(), 3, 3, 5, 5, 0)
	expect(t, "indices", out[1], sh(2, 3), 0, 3, 0, 2, 2, 4, 0)
	if out[1].Type.DType != ir.I32 {
		t.Fatalf("indices type %v", out[1].Type)
	}
	// A long row of ties (sorting algorithms are only stable on short
	// inputs by accident): 2s by index, then 1s, then 0s.
	long := New(ir.T(ir.F32, 50))
	var want []float64
	for v := 2; v >= 0; v-- {
		for i := range long.Data {
			long.Data[i] = float64(i * 7 % 3)
			if i*7%3 == v {
				want = append(want, float64(i))
			}
		}
	}
	expect(t, "ties", run(t, ir.OpTopK, ir.Attrs{"k": 50}, long)[1], sh(50), 0, want...)
	z := f32(t, sh(3), 0, math.Copysign(0, -1), -2)
	expect(t, "signed zeros tie", run(t, ir.OpTopK, ir.Attrs{"k": 3}, z)[1], sh(3), 0, 0, 1, 2)
}

// TestTop2Routing builds Mixtral-style routing (docs/maths.md, Top-k
// routing) as a graph: softmax → topk(k=2) → divide by the sum of the two,
// then moe_route.
func TestTop2Routing(t *testing.T) {
	b := ir.NewBuilder("route")
	logits := b.Input("logits", ir.T(ir.F32, 2, 4))
	p := b.Unary(ir.OpSoftmax, logits)
	top := b.Apply(ir.OpTopK, ir.Attrs{"k": 2}, p)
	sum := b.Reduce(ir.OpReduceSum, top[0], true, 1)
	w := b.Binary(ir.OpDiv, top[0], sum)
	route := b.Apply(ir.OpMoERoute, ir.Attrs{"experts": 4}, top[1])
	b.Output("weights", w)
	b.Output("experts", top[1])
	b.Output("rows", route[0])
	b.Output("slots", route[1])
	b.Output("offsets", route[2])
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	// Token 0: p ∝ (1,2,3,4) → experts 3, 2 with weights 4/7, 3/7.
	// Token 1: p ∝ (5,1,5,2) → a tie, broken to experts 0, 2, weights ½, ½.
	x := f32(t, sh(2, 4), 0, math.Log(2), math.Log(3), math.Log(4), math.Log(5), 0, math.Log(5), math.Log(2))
	r, err := Eval(g, map[string]*Tensor{"logits": x}, nil)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "weights", r.Outputs["weights"], sh(2, 2), 1e-15, 4.0/7, 3.0/7, 0.5, 0.5)
	expect(t, "experts", r.Outputs["experts"], sh(2, 2), 0, 3, 2, 0, 2)
	// Slots 0..3 = (t0: e3, e2), (t1: e0, e2); expert 1 gets nothing.
	expect(t, "rows", r.Outputs["rows"], sh(4), 0, 1, 0, 1, 0)
	expect(t, "slots", r.Outputs["slots"], sh(4), 0, 2, 1, 3, 0)
	expect(t, "offsets", r.Outputs["offsets"], sh(5), 0, 0, 1, 1, 3, 4)
	// The probabilities themselves, for the record.
	expect(t, "p", r.Value(p), sh(2, 4), 1e-15, 0.1, 0.2, 0.3, 0.4, 5.0/13, 1.0/13, 5.0/13, 2.0/13)
}

func TestMoERoute(t *testing.T) {
	idx := i32(t, sh(4, 2), 1, 0, 1, 2, 0, 1, 2, 1)
	out := run(t, ir.OpMoERoute, ir.Attrs{"experts": 4}, idx)
	expect(t, "rows", out[0], sh(8), 0, 0, 2, 0, 1, 2, 3, 1, 3)
	expect(t, "slots", out[1], sh(8), 0, 1, 4, 0, 2, 5, 7, 3, 6)
	expect(t, "offsets", out[2], sh(5), 0, 0, 2, 6, 8, 8) // expert 3 empty
	for _, bad := range []int{4, -1} {
		if _, err := EvalOp(ir.OpMoERoute, ir.Attrs{"experts": 4}, i32(t, sh(1, 2), 0, bad)); err == nil {
			t.Fatalf("expert %d of 4: no error", bad)
		}
	}
}

// TestMoERouteProperties checks the invariants on random choices: every slot
// appears once, rows[r] = slots[r]/k, row r lies in its expert's range, and
// slots increase within an expert.
func TestMoERouteProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	const tokens, k, experts = 37, 2, 6
	choice := make([]int, tokens*k)
	for i := range choice {
		choice[i] = rng.IntN(experts - 1) // the last expert stays empty
	}
	out := run(t, ir.OpMoERoute, ir.Attrs{"experts": experts}, i32(t, sh(tokens, k), choice...))
	rows, slots, off := out[0].Ints(), out[1].Ints(), out[2].Ints()
	if off[0] != 0 || off[experts] != tokens*k || off[experts-1] != off[experts] {
		t.Fatalf("offsets %v", off)
	}
	seen := make([]bool, tokens*k)
	for e := 0; e < experts; e++ {
		for r := off[e]; r < off[e+1]; r++ {
			s := slots[r]
			if seen[s] || choice[s] != e || rows[r] != s/k || (r > off[e] && s <= slots[r-1]) {
				t.Fatalf("row %d: slot %d token %d in expert %d's range (choice %d)", r, s, rows[r], e, choice[s])
			}
			seen[s] = true
		}
	}
}
