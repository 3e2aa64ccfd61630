package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestUnary(t *testing.T) {
	ln3 := math.Log(3)
	nan, inf := math.NaN(), math.Inf(1)
	cases := []struct {
		op       ir.Op
		in, want []float64
	}{
		{ir.OpNeg, []float64{-1.5, 2, 0}, []float64{1.5, -2, 0}},
		{ir.OpExp, []float64{0, 1, -1}, []float64{1, math.E, 1 / math.E}},
		{ir.OpLog, []float64{1, math.E, -1, 0}, []float64{0, 1, nan, -inf}},
		{ir.OpSqrt, []float64{4, 2, 0}, []float64{2, math.Sqrt2, 0}},
		{ir.OpRsqrt, []float64{4, 0.25, 0}, []float64{0.5, 2, inf}},
		{ir.OpSquare, []float64{-3, 0.5}, []float64{9, 0.25}},
		{ir.OpSigmoid, []float64{0, ln3, -ln3, -800, 800}, []float64{0.5, 0.75, 0.25, 0, 1}},
		{ir.OpSiLU, []float64{0, ln3, -ln3, -800}, []float64{0, 0.75 * ln3, -0.25 * ln3, 0}},
		{ir.OpSoftplus, []float64{0, ln3, -ln3, 1000, -1000}, []float64{math.Ln2, 2 * math.Ln2, math.Log(4.0 / 3), 1000, 0}},
		{ir.OpTanh, []float64{0, ln3 / 2, -ln3 / 2, 800, -800}, []float64{0, 0.5, -0.5, 1, -1}},
	}
	for _, c := range cases {
		got := run(t, c.op, nil, f32(t, sh(len(c.in)), c.in...))[0]
		expect(t, string(c.op), got, sh(len(c.in)), 1e-15, c.want...)
	}
	got := run(t, ir.OpScale, ir.Attrs{"factor": 2.5}, f32(t, sh(2), 2, -4))[0]
	expect(t, "scale", got, sh(2), 0, 5, -10)
}

func TestBinary(t *testing.T) {
	x := f32(t, sh(2, 2), 1, 2, -3, math.NaN())
	y := f32(t, sh(2, 2), 3, -4, 0, 1)
	nan := math.NaN()
	for _, c := range []struct {
		op   ir.Op
		want []float64
	}{
		{ir.OpAdd, []float64{4, -2, -3, nan}},
		{ir.OpSub, []float64{-2, 6, -3, nan}},
		{ir.OpMul, []float64{3, -8, 0, nan}},
		{ir.OpDiv, []float64{1.0 / 3, -0.5, math.Inf(-1), nan}},
		{ir.OpMax, []float64{3, 2, 0, nan}},
		{ir.OpMin, []float64{1, -4, -3, nan}},
	} {
		expect(t, string(c.op), run(t, c.op, nil, x, y)[0], sh(2, 2), 1e-15, c.want...)
	}
}

func TestCast(t *testing.T) {
	x := f32(t, sh(6), 1+math.Ldexp(1, -11), 1+3*math.Ldexp(1, -11), 65519, 65520, math.Ldexp(1, -25), 3*math.Ldexp(1, -26))
	expect(t, "f16", run(t, ir.OpCast, ir.Attrs{"to": ir.F16}, x)[0], sh(6), 0,
		1, 1+math.Ldexp(1, -9), 65504, math.Inf(1), 0, math.Ldexp(1, -24))
	y := f32(t, sh(3), 1+math.Ldexp(1, -8), 1+3*math.Ldexp(1, -8), math.Pi)
	expect(t, "bf16", run(t, ir.OpCast, ir.Attrs{"to": ir.BF16}, y)[0], sh(3), 0, 1, 1.015625, 3.140625)
	z := f32(t, sh(6), 2.7, -2.7, 3e10, -3e10, math.NaN(), -0.5)
	expect(t, "i32", run(t, ir.OpCast, ir.Attrs{"to": ir.I32}, z)[0], sh(6), 0, 2, -2, math.MaxInt32, math.MinInt32, 0, 0)
	expect(t, "u8", run(t, ir.OpCast, ir.Attrs{"to": ir.U8}, z)[0], sh(6), 0, 2, 0, 255, 0, 0, 0)
	back := run(t, ir.OpCast, ir.Attrs{"to": ir.F32}, i32(t, sh(2), 3, -7))[0]
	expect(t, "i32→f32", back, sh(2), 0, 3, -7)
	if back.Type.DType != ir.F32 {
		t.Fatalf("cast result type %v", back.Type)
	}
}

// decodeHalf decodes an IEEE-style binary16 (mant=10, bias=15) or bfloat16
// (mant=7, bias=127) bit pattern.
func decodeHalf(bits uint16, mant, bias int) float64 {
	sign := 1.0
	if bits&0x8000 != 0 {
		sign = -1
	}
	e := int(bits&0x7fff) >> mant
	m := float64(int(bits) & (1<<mant - 1))
	switch {
	case e == 1<<(15-mant)-1 && m == 0:
		return sign * math.Inf(1)
	case e == 1<<(15-mant)-1:
		return math.NaN()
	case e == 0:
		return sign * math.Ldexp(m, 1-bias-mant)
	}
	return sign * math.Ldexp(1+m/float64(int(1)<<mant), e-bias)
}

// TestRoundingExhaustive checks Convert against every f16 and bf16 value:
// representable values are fixed points, midpoints between neighbours round
// to the even one, and anything off the midpoint rounds to the nearer.
func TestRoundingExhaustive(t *testing.T) {
	for _, f := range []struct {
		d          ir.DType
		mant, bias int
	}{{ir.F16, 10, 15}, {ir.BF16, 7, 127}} {
		// Positive finite values in increasing order: bit patterns 0..max.
		var vals []float64
		for b := 0; b < 0x8000; b++ {
			v := decodeHalf(uint16(b), f.mant, f.bias)
			if math.IsInf(v, 0) || math.IsNaN(v) {
				break
			}
			vals = append(vals, v)
		}
		for i, v := range vals {
			if got := Convert(f.d, v); got != v {
				t.Fatalf("%v: %g is not a fixed point (got %g)", f.d, v, got)
			}
			if got := Convert(f.d, -v); got != -v {
				t.Fatalf("%v: %g is not a fixed point (got %g)", f.d, -v, got)
			}
			if i == 0 {
				continue
			}
			lo := vals[i-1]
			mid := (lo + v) / 2 // exact in float64
			even := lo
			if (i-1)%2 == 1 { // the pattern of lo is odd
				even = v
			}
			q := (v - lo) / 1024
			if got := Convert(f.d, mid); got != even {
				t.Fatalf("%v: midpoint %g of %g and %g gave %g, want %g", f.d, mid, lo, v, got, even)
			}
			if got := Convert(f.d, mid-q); got != lo {
				t.Fatalf("%v: %g gave %g, want %g", f.d, mid-q, got, lo)
			}
			if got := Convert(f.d, mid+q); got != v {
				t.Fatalf("%v: %g gave %g, want %g", f.d, mid+q, got, v)
			}
		}
		top := vals[len(vals)-1]
		ulp := top - vals[len(vals)-2]
		if got := Convert(f.d, top+ulp/2); !math.IsInf(got, 1) {
			t.Fatalf("%v: %g should overflow to +Inf, got %g", f.d, top+ulp/2, got)
		}
		if got := Convert(f.d, top+ulp/4); got != top {
			t.Fatalf("%v: %g should round to %g, got %g", f.d, top+ulp/4, top, got)
		}
	}
}

// TestBF16MatchesBitRounding cross-checks bf16 against the usual float32
// bit trick (add 0x7fff plus the lowest kept bit, drop 16 bits).
func TestBF16MatchesBitRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		bits := rng.Uint32()
		x := math.Float32frombits(bits)
		if x != x || math.IsInf(float64(x), 0) {
			continue
		}
		r := (bits + 0x7fff + (bits>>16)&1) &^ 0xffff
		want := float64(math.Float32frombits(r))
		if got := Convert(ir.BF16, float64(x)); got != want {
			t.Fatalf("bf16(%g) = %g, want %g", x, got, want)
		}
	}
}
