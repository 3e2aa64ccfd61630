package ref

import (
	"math"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	unary := map[ir.Op]func(float64) float64{
		ir.OpNeg:      func(x float64) float64 { return -x },
		ir.OpExp:      math.Exp,
		ir.OpLog:      math.Log, // ln of a negative number is NaN, of 0 is −Inf
		ir.OpSqrt:     math.Sqrt,
		ir.OpRsqrt:    func(x float64) float64 { return 1 / math.Sqrt(x) },
		ir.OpSquare:   func(x float64) float64 { return x * x },
		ir.OpSigmoid:  sigmoid,
		ir.OpSiLU:     func(x float64) float64 { return x * sigmoid(x) },
		ir.OpSoftplus: softplus,
	}
	for op, f := range unary {
		register(op, mapUnary(f))
	}
	register(ir.OpScale, func(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
		k := n.Attrs.Float("factor")
		return mapUnary(func(x float64) float64 { return x * k })(n, in)
	})
	// cast only copies: evalNode's storage rounding does the conversion.
	register(ir.OpCast, mapUnary(func(x float64) float64 { return x }))

	binary := map[ir.Op]func(x, y float64) float64{
		ir.OpAdd: func(x, y float64) float64 { return x + y },
		ir.OpSub: func(x, y float64) float64 { return x - y },
		ir.OpMul: func(x, y float64) float64 { return x * y },
		ir.OpDiv: func(x, y float64) float64 { return x / y },
		ir.OpMax: math.Max, // NaN in either operand gives NaN
		ir.OpMin: math.Min,
	}
	for op, f := range binary {
		register(op, mapBinary(f))
	}
	// ge is 1 where x ≥ y, else 0; a comparison with NaN is false, so 0.
	register(ir.OpGE, mapBinary(func(x, y float64) float64 {
		if x >= y {
			return 1
		}
		return 0
	}))
}

// sigmoid is 1/(1+e^-x), evaluated without overflow for large |x|.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// softplus is ln(1+e^x) = max(x,0) + ln(1+e^-|x|), exact for large |x|.
func softplus(x float64) float64 {
	return math.Max(x, 0) + math.Log1p(math.Exp(-math.Abs(x)))
}

func mapUnary(f func(float64) float64) Impl {
	return func(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
		out := New(n.Out().Type)
		for i, x := range in[0].Data {
			out.Data[i] = f(x)
		}
		return []*Tensor{out}, nil
	}
}

func mapBinary(f func(x, y float64) float64) Impl {
	return func(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
		out := New(n.Out().Type)
		y := in[1].Data
		for i, x := range in[0].Data {
			out.Data[i] = f(x, y[i])
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
