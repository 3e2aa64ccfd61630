package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func mm(ta, tb bool) ir.Attrs { return ir.Attrs{"ta": ta, "tb": tb} }

func TestMatmul(t *testing.T) {
	a := f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6)
	b := f32(t, sh(3, 2), 7, 8, 9, 10, 11, 12)
	at := f32(t, sh(3, 2), 1, 4, 2, 5, 3, 6)
	bt := f32(t, sh(2, 3), 7, 9, 11, 8, 10, 12)
	want := []float64{58, 64, 139, 154}
	expect(t, "a·b", run(t, ir.OpMatmul, mm(false, false), a, b)[0], sh(2, 2), 0, want...)
	expect(t, "ta", run(t, ir.OpMatmul, mm(true, false), at, b)[0], sh(2, 2), 0, want...)
	expect(t, "tb", run(t, ir.OpMatmul, mm(false, true), a, bt)[0], sh(2, 2), 0, want...)
	expect(t, "ta tb", run(t, ir.OpMatmul, mm(true, true), at, bt)[0], sh(2, 2), 0, want...)

	x := f32(t, sh(2, 1, 2), 1, 2, 3, 4)
	expect(t, "batched", run(t, ir.OpMatmul, mm(false, false), x, f32(t, sh(2, 2, 1), 1, 1, 2, -1))[0], sh(2, 1, 1), 0, 3, 2)
	expect(t, "shared b", run(t, ir.OpMatmul, mm(false, false), x, f32(t, sh(2, 1), 1, 1))[0], sh(2, 1, 1), 0, 3, 7)
}

// TestMatmulTransposeFlags checks ta/tb against explicit transposes on
// random rank-4 operands, with b batched and shared.
func TestMatmulTransposeFlags(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tr := func(x *Tensor) *Tensor {
		return run(t, ir.OpTranspose, ir.Attrs{"perm": []int{0, 1, 3, 2}}, x)[0]
	}
	a := randT(rng, sh(2, 3, 4, 5), -1, 1)
	b := randT(rng, sh(2, 3, 5, 6), -1, 1)
	want := run(t, ir.OpMatmul, mm(false, false), a, b)[0]
	for _, c := range []struct{ ta, tb bool }{{true, false}, {false, true}, {true, true}} {
		x, y := a, b
		if c.ta {
			x = tr(a)
		}
		if c.tb {
			y = tr(b)
		}
		got := run(t, ir.OpMatmul, mm(c.ta, c.tb), x, y)[0]
		closeAll(t, "matmul flags", got.Data, want.Data, 1e-14)
	}
	// Shared b equals b broadcast over the batch axes.
	w := randT(rng, sh(5, 6), -1, 1)
	wb := run(t, ir.OpBroadcast, ir.Attrs{"shape": []int{2, 3, 5, 6}}, w)[0]
	closeAll(t, "shared", run(t, ir.OpMatmul, mm(false, false), a, w)[0].Data,
		run(t, ir.OpMatmul, mm(false, false), a, wb)[0].Data, 0)
}

func TestGroupedMatmul(t *testing.T) {
	x := f32(t, sh(4, 2), 1, 2, 3, 4, 5, 6, 0, 1)
	w := f32(t, sh(2, 2, 1), 1, 1, 1, -1)  // expert 0 sums, expert 1 subtracts
	wt := f32(t, sh(2, 1, 2), 1, 1, 1, -1) // the same as (E, N, K)
	gm := func(w *Tensor, tb bool, off ...int) *Tensor {
		return run(t, ir.OpGroupedMM, ir.Attrs{"tb": tb}, x, w, i32(t, sh(3), off...))[0]
	}
	expect(t, "grouped", gm(w, false, 0, 1, 4), sh(4, 1), 0, 3, -1, -1, -1)
	expect(t, "grouped tb", gm(wt, true, 0, 1, 4), sh(4, 1), 0, 3, -1, -1, -1)
	expect(t, "empty expert", gm(w, false, 0, 0, 4), sh(4, 1), 0, -1, -1, -1, -1)
	expect(t, "uncovered rows", gm(w, false, 1, 2, 3), sh(4, 1), 0, 0, 7, -1, 0)
	for _, off := range [][]int{{0, 3, 2}, {0, 2, 5}, {-1, 2, 4}} {
		if _, err := EvalOp(ir.OpGroupedMM, nil, x, w, i32(t, sh(3), off...)); err == nil {
			t.Fatalf("offsets %v: no error", off)
		}
	}
}

// TestGroupedMatmulGrads checks grouped_matmul_wgrad (and grouped_matmul as
// its own input gradient) against finite differences of grouped_matmul.
func TestGroupedMatmulGrads(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const r, k, n = 7, 3, 2
	x := randT(rng, sh(r, k), -1, 1)
	w := randT(rng, sh(3, n, k), -1, 1) // (E,N,K): the tb=true layout wgrad produces
	dy := randT(rng, sh(r, n), -1, 1)
	off := i32(t, sh(4), 0, 2, 2, 6) // expert 1 empty, row 6 unrouted
	loss := func() float64 {
		return dot(run(t, ir.OpGroupedMM, ir.Attrs{"tb": true}, x, w, off)[0].Data, dy.Data)
	}
	dw := run(t, ir.OpGroupedMMW, nil, dy, x, off)[0]
	if !dw.Type.Shape.Equal(ir.Shape{3, n, k}) {
		t.Fatalf("wgrad shape %v", dw.Type.Shape)
	}
	gradCheck(t, "dw", w.Data, dw.Data, loss)
	dx := run(t, ir.OpGroupedMM, ir.Attrs{"tb": false}, dy, w, off)[0]
	gradCheck(t, "dx", x.Data, dx.Data, loss)
	// Expert 1 has no rows: its gradient is exactly zero.
	for i := n * k; i < 2*n*k; i++ {
		if dw.Data[i] != 0 {
			t.Fatalf("empty expert has gradient %v", dw.Data[n*k:2*n*k])
		}
	}
}

func TestDequant(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, shape := range [][]int{{3, 70}, {2, 3, 50}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(rng.NormFloat64())
		}
		q, err := QuantizeNF4(shape, w)
		if err != nil {
			t.Fatal(err)
		}
		got := run(t, ir.OpDequant, nil, q)[0]
		want := q.Q.Dequantize()
		if !got.Type.Equal(ir.T(ir.F32, shape...)) {
			t.Fatalf("dequant type %v", got.Type)
		}
		for i, v := range want {
			if got.Data[i] != float64(v) {
				t.Fatalf("dequant[%d] = %g, nf4 says %g", i, got.Data[i], v)
			}
			// NF4 steps are at most ~0.3·absmax apart: a coarse sanity bound.
			if math.Abs(float64(v-w[i])) > 0.2*4.5 {
				t.Fatalf("dequant[%d] = %g is far from %g", i, v, w[i])
			}
		}
	}
}

// TestMatmulAgainstPlainLoop checks the blocked products against the plain
// loop at sizes past gonum's block edge, with every transpose flag, and that a
// non-finite operand propagates as IEEE says (0·Inf is NaN, not skipped).
func TestMatmulAgainstPlainLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const m, k, n = 70, 131, 67
	for _, c := range []struct{ ta, tb bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		ar, ac, br, bc := m, k, k, n
		if c.ta {
			ar, ac = k, m
		}
		if c.tb {
			br, bc = n, k
		}
		a := randT(rng, sh(2, ar, ac), -1, 1)
		b := randT(rng, sh(br, bc), -1, 1)
		got := run(t, ir.OpMatmul, mm(c.ta, c.tb), a, b)[0]
		for i := 0; i < 2; i++ {
			want := make([]float64, m*n)
			mulNaive(want, mat{a.Data[i*m*k : (i+1)*m*k], ar, ac, c.ta}, mat{b.Data, br, bc, c.tb}, m, k, n)
			for j, w := range want {
				// k products of magnitude ≤ 1: a few ulps of k in absolute terms.
				if d := math.Abs(got.Data[i*m*n+j] - w); d > 1e-13 {
					t.Fatalf("ta=%v tb=%v [%d][%d]: %v, plain loop %v", c.ta, c.tb, i, j, got.Data[i*m*n+j], w)
				}
			}
		}
	}
	a := f32(t, sh(1, 2), 0, 1)
	b := f32(t, sh(2, 1), math.Inf(1), 2)
	if got := run(t, ir.OpMatmul, mm(false, false), a, b)[0].Data[0]; !math.IsNaN(got) {
		t.Fatalf("0·Inf + 1·2 = %v, want NaN", got)
	}
	x := f32(t, sh(2, 1), 0, 1)
	w := f32(t, sh(1, 1, 1), math.Inf(1))
	if got := run(t, ir.OpGroupedMM, nil, x, w, i32(t, sh(2), 0, 2))[0].Data; !math.IsNaN(got[0]) || !math.IsInf(got[1], 1) {
		t.Fatalf("grouped 0·Inf, 1·Inf = %v, want NaN, +Inf", got)
	}
}

// TestGroupedMatmulAgainstPlainLoop checks both grouped products, blocked,
// against the plain loop on uneven expert groups (one empty).
func TestGroupedMatmulAgainstPlainLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const rows, k, n = 150, 90, 70
	offs := []int{3, 3, 80, 149}
	x := randT(rng, sh(rows, k), -1, 1)
	w := randT(rng, sh(3, n, k), -1, 1)
	dy := randT(rng, sh(rows, n), -1, 1)
	off := i32(t, sh(4), offs...)
	y := run(t, ir.OpGroupedMM, ir.Attrs{"tb": true}, x, w, off)[0]
	dw := run(t, ir.OpGroupedMMW, nil, dy, x, off)[0]
	for e := 0; e < 3; e++ {
		lo, hi := offs[e], offs[e+1]
		want := make([]float64, (hi-lo)*n)
		mulNaive(want, mat{x.Data[lo*k : hi*k], hi - lo, k, false}, mat{w.Data[e*n*k : (e+1)*n*k], n, k, true}, hi-lo, k, n)
		closeAll(t, "grouped", y.Data[lo*n:hi*n], want, 1e-13)
		wantW := make([]float64, n*k)
		mulNaive(wantW, mat{dy.Data[lo*n : hi*n], hi - lo, n, true}, mat{x.Data[lo*k : hi*k], hi - lo, k, false}, n, hi-lo, k)
		closeAll(t, "wgrad", dw.Data[e*n*k:(e+1)*n*k], wantW, 1e-13)
	}
	for r := range rows {
		if (r < offs[0] || r >= offs[3]) && y.Data[r*n] != 0 {
			t.Fatalf("unrouted row %d = %v", r, y.Data[r*n])
		}
	}
}
