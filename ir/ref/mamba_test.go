package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestCausalConv(t *testing.T) {
	// x (1, 4, 2); channel 0 has taps [1, 10, 100] (100 on the current
	// token), channel 1 is the identity [0, 0, 1].
	x := f32(t, sh(1, 4, 2), 1, -1, 2, 0, 3, 1, 4, 0)
	w := f32(t, sh(2, 3), 1, 10, 100, 0, 0, 1)
	b := f32(t, sh(2), 0.5, 0)
	got := run(t, ir.OpConv, nil, x, w, b)[0]
	expect(t, "conv", got, sh(1, 4, 2), 0,
		0.5+100, -1, // t=0 sees only the current token
		0.5+10+200, 0, // t=1 sees x0, x1
		0.5+1+20+300, 1,
		0.5+2+30+400, 0)

	// Kernel 4 as in Mamba: nothing leaks across the batch boundary, so a
	// zero sequence after a non-zero one gives exactly the bias.
	rng := rand.New(rand.NewPCG(9, 10))
	x2 := New(ir.T(ir.F32, 2, 5, 3))
	for i := 0; i < 15; i++ {
		x2.Data[i] = 1 + rng.Float64()
	}
	w2 := randT(rng, sh(3, 4), -1, 1)
	b2 := f32(t, sh(3), 0.25, -0.5, 2)
	out := run(t, ir.OpConv, nil, x2, w2, b2)[0]
	for i := 15; i < 30; i++ {
		if out.Data[i] != b2.Data[i%3] {
			t.Fatalf("batch 1 output %d = %g, want bias %g", i, out.Data[i], b2.Data[i%3])
		}
	}
	// The first K−1 outputs of batch 0 use only taps k ≥ K−1−t.
	for tt := 0; tt < 3; tt++ {
		for c := 0; c < 3; c++ {
			want := b2.Data[c]
			for k := 3 - tt; k < 4; k++ {
				want += w2.Data[c*4+k] * x2.At(0, tt-3+k, c)
			}
			if got := out.At(0, tt, c); math.Abs(got-want) > 1e-15 {
				t.Fatalf("out[0,%d,%d] = %g, want %g", tt, c, got, want)
			}
		}
	}
}

func TestCausalConvBwd(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	x := randT(rng, sh(2, 6, 3), -1, 1)
	w := randT(rng, sh(3, 4), -1, 1)
	b := randT(rng, sh(3), -1, 1)
	dy := randT(rng, sh(2, 6, 3), -1, 1)
	loss := func() float64 { return dot(run(t, ir.OpConv, nil, x, w, b)[0].Data, dy.Data) }
	g := run(t, ir.OpConvBwd, nil, x, w, dy)
	gradCheck(t, "dx", x.Data, g[0].Data, loss)
	gradCheck(t, "dw", w.Data, g[1].Data, loss)
	gradCheck(t, "db", b.Data, g[2].Data, loss)
}

// scanInputs draws the six scan operands in their natural ranges: Δ > 0
// (softplus output), A < 0 (−exp(A_log)).
func scanInputs(rng *rand.Rand, nb, l, e, n int) []*Tensor {
	a := randT(rng, sh(e, n), -1, 1.5)
	for i, v := range a.Data {
		a.Data[i] = -math.Exp(v)
	}
	return []*Tensor{
		randT(rng, sh(nb, l, e), -1, 1),     // u
		randT(rng, sh(nb, l, e), 0.05, 0.6), // Δ
		a,
		randT(rng, sh(nb, l, n), -1, 1), // B
		randT(rng, sh(nb, l, n), -1, 1), // C
		randT(rng, sh(e), -1, 1),        // D
	}
}

// directScan is the recurrence of docs/maths.md (Selective scan) written
// out: it returns y and every state s[b][t][d][n] (after token t).
func directScan(in []*Tensor) (y []float64, s [][][][]float64) {
	u, dt, a, bm, cm, dd := in[0], in[1], in[2], in[3], in[4], in[5]
	nb, l, e, n := u.Type.Shape[0], u.Type.Shape[1], u.Type.Shape[2], a.Type.Shape[1]
	y = make([]float64, nb*l*e)
	s = make([][][][]float64, nb)
	for b := range s {
		s[b] = make([][][]float64, l)
		for t := 0; t < l; t++ {
			s[b][t] = make([][]float64, e)
			for d := 0; d < e; d++ {
				s[b][t][d] = make([]float64, n)
				for k := 0; k < n; k++ {
					prev := 0.0
					if t > 0 {
						prev = s[b][t-1][d][k]
					}
					abar := math.Exp(dt.At(b, t, d) * a.At(d, k))
					s[b][t][d][k] = abar*prev + dt.At(b, t, d)*bm.At(b, t, k)*u.At(b, t, d)
					y[(b*l+t)*e+d] += s[b][t][d][k] * cm.At(b, t, k)
				}
				y[(b*l+t)*e+d] += dd.At(d) * u.At(b, t, d)
			}
		}
	}
	return y, s
}

func TestSelectiveScan(t *testing.T) {
	const nb, l, e, n = 2, 13, 5, 4
	in := scanInputs(rand.New(rand.NewPCG(13, 14)), nb, l, e, n)
	wantY, wantS := directScan(in)
	for _, chunk := range []int{1, 4, 5, 13, 20} {
		out := run(t, ir.OpScan, ir.Attrs{"chunk": chunk}, in...)
		closeAll(t, "y", out[0].Data, wantY, 1e-13)
		nc := (l + chunk - 1) / chunk
		if !out[1].Type.Shape.Equal(ir.Shape{nb, nc, e, n}) {
			t.Fatalf("chunk %d: states shape %v", chunk, out[1].Type.Shape)
		}
		for b := 0; b < nb; b++ {
			for c := 0; c < nc; c++ {
				for d := 0; d < e; d++ {
					for k := 0; k < n; k++ {
						want := 0.0
						if c > 0 {
							want = wantS[b][c*chunk-1][d][k]
						}
						if got := out[1].At(b, c, d, k); math.Abs(got-want) > 1e-13 {
							t.Fatalf("chunk %d: states[%d,%d,%d,%d] = %g, want %g", chunk, b, c, d, k, got, want)
						}
					}
				}
			}
		}
	}
}

func TestSelectiveScanBwd(t *testing.T) {
	const nb, l, e, n = 2, 13, 5, 4
	rng := rand.New(rand.NewPCG(15, 16))
	in := scanInputs(rng, nb, l, e, n)
	dy := randT(rng, sh(nb, l, e), -1, 1)
	names := []string{"du", "dΔ", "dA", "dB", "dC", "dD"}
	var first []*Tensor
	for _, chunk := range []int{1, 4, 13, 20} {
		at := ir.Attrs{"chunk": chunk}
		fwd := run(t, ir.OpScan, at, in...)
		grads := run(t, ir.OpScanBwd, at, append(append([]*Tensor{}, in...), fwd[1], dy)...)
		loss := func() float64 { return dot(run(t, ir.OpScan, at, in...)[0].Data, dy.Data) }
		for i, g := range grads {
			if !g.Type.Equal(in[i].Type) {
				t.Fatalf("%s type %v, want %v", names[i], g.Type, in[i].Type)
			}
			gradCheck(t, names[i], in[i].Data, g.Data, loss)
		}
		if first == nil {
			first = grads
			continue
		}
		for i := range grads {
			closeAll(t, names[i]+" across chunks", grads[i].Data, first[i].Data, 1e-12)
		}
	}
}

// TestSelectiveScanBwdReadsStates shows the backward starts each chunk from
// the saved states (wrong states give a different dC), as the kernel does.
func TestSelectiveScanBwdReadsStates(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	in := scanInputs(rng, 1, 8, 2, 3)
	dy := randT(rng, sh(1, 8, 2), -1, 1)
	at := ir.Attrs{"chunk": 4}
	fwd := run(t, ir.OpScan, at, in...)
	good := run(t, ir.OpScanBwd, at, append(append([]*Tensor{}, in...), fwd[1], dy)...)
	zero := New(fwd[1].Type)
	bad := run(t, ir.OpScanBwd, at, append(append([]*Tensor{}, in...), zero, dy)...)
	// Chunk 0 starts from 0 either way; chunk 1 (tokens 4..7) differs.
	if good[4].At(0, 0, 0) != bad[4].At(0, 0, 0) || good[4].At(0, 5, 0) == bad[4].At(0, 5, 0) {
		t.Fatalf("dC with saved vs zero states: %v vs %v", good[4], bad[4])
	}
}
