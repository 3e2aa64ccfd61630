package ref

import (
	"math"

	"github.com/scm-magellano/magc/ir"
)

// Element-wise ops with scalar maths evaluate their ir.Elem element by element.
func init() {
	for _, d := range ir.Ops() {
		if d.Elem != nil {
			register(d.Op, elementwise(d.Elem.Eval))
		}
	}
}

// elementwise applies f at every element of the operands (all of the
// result's shape).
func elementwise(f func(a ir.Attrs, x []float64) float64) Impl {
	return func(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
		out := New(n.Out().Type)
		x := make([]float64, len(in))
		for i := range out.Data {
			for k, t := range in {
				x[k] = t.Data[i]
			}
			out.Data[i] = f(n.Attrs, x)
		}
		return []*Tensor{out}, nil
	}
}

// Convert maps a float64 to the nearest value of dtype d; it is the
// semantics of cast and of storing a result:
//
//	f32       unchanged (f32 math is modelled in float64)
//	f16, bf16 round to nearest, ties to even; overflow gives ±Inf, NaN stays NaN
//	i32, u8   truncate toward zero, then saturate to the type's range; NaN gives 0
//	          (Go and C leave these cases undefined; a fixed answer keeps the oracle total)
func Convert(d ir.DType, x float64) float64 {
	switch d {
	case ir.F16:
		return roundFloat(x, 10, -14, 15)
	case ir.BF16:
		return roundFloat(x, 7, -126, 127)
	case ir.I32:
		return truncSat(x, math.MinInt32, math.MaxInt32)
	case ir.U8:
		return truncSat(x, 0, 255)
	}
	return x
}

// roundFloat rounds x to a binary format with mant explicit mantissa bits,
// smallest normal exponent emin and largest exponent emax, directly from
// float64 (going through float32 first could round twice).
func roundFloat(x float64, mant, emin, emax int) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	_, e := math.Frexp(x) // |x| = f·2^e, f in [0.5, 1): the leading bit has weight 2^(e−1)
	exp := max(e-1, emin) // below the normal range the quantum stays that of subnormals
	q := math.Ldexp(1, exp-mant)
	r := math.RoundToEven(x/q) * q // x/q and ·q are exact: q is a power of two
	maxFinite := math.Ldexp(2-math.Ldexp(1, -mant), emax)
	if math.Abs(r) > maxFinite {
		return math.Copysign(math.Inf(1), x)
	}
	return r
}

func truncSat(x, lo, hi float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return math.Max(lo, math.Min(hi, math.Trunc(x))) + 0 // + 0 turns −0 into 0
}
