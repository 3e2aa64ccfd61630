package ir

import "math"

// Element-wise ops with scalar maths: each entry below holds everything the
// phases know about its op except the kernel expression, which ir cannot
// name: the shape rule, the float64 reference (ir/ref), the gradient in IR
// ops (passes' autodiff), the work per element (passes' cost model) and
// where it is smooth (the gradient checks). codegen's elemKernels
// (codegen/emit.go) holds the kernel expression.
//
// Adding such an op: its constant and entry here, its kernel expression
// there. It is then callable by name in a .graph file, and the catalogue
// tests (ir/ref, passes, codegen) check it: reference, numeric gradient,
// and its kernel on the sim against the reference.

const (
	OpNeg      Op = "neg"
	OpExp      Op = "exp"
	OpLog      Op = "log"
	OpSqrt     Op = "sqrt"
	OpRsqrt    Op = "rsqrt"
	OpSquare   Op = "square"
	OpSigmoid  Op = "sigmoid"
	OpSiLU     Op = "silu"
	OpSoftplus Op = "softplus"
	OpTanh     Op = "tanh"
	OpScale    Op = "scale"
	OpCast     Op = "cast"
	OpAdd      Op = "add"
	OpSub      Op = "sub"
	OpMul      Op = "mul"
	OpDiv      Op = "div"
	OpMax      Op = "max"
	OpMin      Op = "min"
	OpGE       Op = "ge" // the training passes emit it (masks for max/min gradients)
	// OpIsFinite is the train step's skip flag under loss scaling.
	OpIsFinite Op = "isfinite"
)

// Elem is the scalar maths of an element-wise op: each result element is a
// function of the operands' elements at the same place.
type Elem struct {
	// Eval computes one result element in float64 from the operand elements
	// x; a holds the node's attributes. The reference then rounds the result
	// to its dtype, as storing it does (cast relies on that).
	Eval func(a Attrs, x []float64) float64
	// Grad builds, with b, the gradient of each operand of n for which need
	// is set, from the gradient dy of n's result (nil where not needed). Nil
	// for an op that is not Differentiable.
	Grad func(b *Builder, n *Node, dy *Value, need []bool) []*Value
	// FLOPs is the work of one result element, for the cost model.
	FLOPs int64
	// Domain is an interval of operand values where the op is finite and
	// smooth: the gradient and kernel checks draw operands from it.
	Domain [2]float64
}

// Operand intervals of Elem.Domain.
var (
	anywhere = [2]float64{-1, 1}
	positive = [2]float64{0.5, 2}
)

// unaryGrad is the gradient of a one-operand op from its operand x, its
// result y and the result's gradient dy.
type unaryGrad func(b *Builder, x, y, dy *Value) *Value

func init() {
	for _, u := range []struct {
		op     Op
		doc    string
		f      func(x float64) float64
		grad   unaryGrad
		flops  int64
		domain [2]float64
	}{
		{OpNeg, "-x", func(x float64) float64 { return -x },
			func(b *Builder, x, y, dy *Value) *Value { return b.Unary(OpNeg, dy) }, 1, anywhere},
		{OpExp, "e^x", math.Exp,
			func(b *Builder, x, y, dy *Value) *Value { return b.Mul(dy, y) }, 1, anywhere},
		{OpLog, "ln x", math.Log, // ln of a negative number is NaN, of 0 is −Inf
			func(b *Builder, x, y, dy *Value) *Value { return b.Div(dy, x) }, 1, positive},
		{OpSqrt, "√x", math.Sqrt,
			func(b *Builder, x, y, dy *Value) *Value { return b.Scale(b.Div(dy, y), 0.5) }, 1, positive},
		// d x^(-1/2) = −½·x^(-3/2) = −½·y/x
		{OpRsqrt, "1/√x", func(x float64) float64 { return 1 / math.Sqrt(x) },
			func(b *Builder, x, y, dy *Value) *Value { return b.Scale(b.Mul(dy, b.Div(y, x)), -0.5) }, 1, positive},
		{OpSquare, "x²", func(x float64) float64 { return x * x },
			func(b *Builder, x, y, dy *Value) *Value { return b.Scale(b.Mul(dy, x), 2) }, 1, anywhere},
		{OpSigmoid, "1/(1+e^-x)", sigmoid,
			func(b *Builder, x, y, dy *Value) *Value { return b.Mul(dy, b.Mul(y, b.Sub(b.Const(1, y.Type), y))) }, 1, anywhere},
		// d/dx x·σ(x) = σ(1 + x(1−σ)) = σ + y(1−σ), reusing the output y.
		{OpSiLU, "x·sigmoid(x)", func(x float64) float64 { return x * sigmoid(x) },
			func(b *Builder, x, y, dy *Value) *Value {
				s := b.Unary(OpSigmoid, x)
				return b.Mul(dy, b.Add(s, b.Mul(y, b.Sub(b.Const(1, x.Type), s))))
			}, 1, anywhere},
		{OpSoftplus, "ln(1+e^x)", softplus,
			func(b *Builder, x, y, dy *Value) *Value { return b.Mul(dy, b.Unary(OpSigmoid, x)) }, 1, anywhere},
		// d tanh x = 1 − tanh² x = 1 − y²
		{OpTanh, "tanh x", math.Tanh,
			func(b *Builder, x, y, dy *Value) *Value { return b.Mul(dy, b.Sub(b.Const(1, y.Type), b.Mul(y, y))) }, 1, anywhere},
	} {
		f, grad := u.f, u.grad
		def(OpDef{Op: u.op, Doc: u.doc, Category: Elementwise, Inputs: 1, Differentiable: true, Infer: inferUnary,
			Elem: &Elem{
				Eval: func(_ Attrs, x []float64) float64 { return f(x[0]) },
				Grad: func(b *Builder, n *Node, dy *Value, _ []bool) []*Value {
					return []*Value{grad(b, n.Inputs[0], n.Out(), dy)}
				},
				FLOPs: u.flops, Domain: u.domain,
			}})
	}

	def(OpDef{Op: OpScale, Doc: "x·factor", Category: Elementwise, Inputs: 1, Differentiable: true,
		Attrs: []AttrDef{{Name: "factor", Kind: AttrFloat}}, Infer: inferUnary,
		Elem: &Elem{
			Eval: func(a Attrs, x []float64) float64 { return x[0] * a.Float("factor") },
			Grad: func(b *Builder, n *Node, dy *Value, _ []bool) []*Value {
				return []*Value{b.Scale(dy, n.Attrs.Float("factor"))}
			},
			FLOPs: 1, Domain: anywhere,
		}})
	def(OpDef{Op: OpCast, Doc: "convert the element type (to integers: truncate toward zero, saturate, NaN → 0)",
		Category: Elementwise, Inputs: 1, Differentiable: true, Attrs: []AttrDef{{Name: "to", Kind: AttrDType}}, Infer: inferCast,
		Elem: &Elem{
			// Only a copy: the reference's rounding to the result dtype converts.
			Eval: func(_ Attrs, x []float64) float64 { return x[0] },
			Grad: func(b *Builder, n *Node, dy *Value, _ []bool) []*Value {
				return []*Value{b.Op(OpCast, Attrs{"to": n.Inputs[0].Type.DType}, dy)}
			},
			FLOPs: 1, Domain: anywhere,
		}})

	// max and min route the gradient through a ge mask; at a tie the first
	// operand takes it all, the second gets dy − (its share) = 0.
	minMax := func(first, second int) func(b *Builder, n *Node, dy *Value, need []bool) []*Value {
		return func(b *Builder, n *Node, dy *Value, need []bool) []*Value {
			mask := b.Op(OpGE, nil, n.Inputs[first], n.Inputs[second])
			d0 := b.Mul(dy, mask)
			out := []*Value{d0, nil}
			if need[1] {
				out[1] = b.Sub(dy, d0)
			}
			return out
		}
	}
	for _, o := range []struct {
		op     Op
		doc    string
		f      func(x, y float64) float64
		grad   func(b *Builder, n *Node, dy *Value, need []bool) []*Value
		domain [2]float64
	}{
		{OpAdd, "x+y", func(x, y float64) float64 { return x + y },
			func(b *Builder, n *Node, dy *Value, need []bool) []*Value { return []*Value{dy, dy} }, anywhere},
		{OpSub, "x−y", func(x, y float64) float64 { return x - y },
			func(b *Builder, n *Node, dy *Value, need []bool) []*Value {
				return lazy(need, func() *Value { return dy }, func() *Value { return b.Unary(OpNeg, dy) })
			}, anywhere},
		{OpMul, "x·y", func(x, y float64) float64 { return x * y },
			func(b *Builder, n *Node, dy *Value, need []bool) []*Value {
				x, y := n.Inputs[0], n.Inputs[1]
				return lazy(need, func() *Value { return b.Mul(dy, y) }, func() *Value { return b.Mul(dy, x) })
			}, anywhere},
		// d(x/y)/dy = −x/y² = −out/y
		{OpDiv, "x/y", func(x, y float64) float64 { return x / y },
			func(b *Builder, n *Node, dy *Value, need []bool) []*Value {
				y := n.Inputs[1]
				return lazy(need, func() *Value { return b.Div(dy, y) },
					func() *Value { return b.Unary(OpNeg, b.Div(b.Mul(dy, n.Out()), y)) })
			}, positive},
		{OpMax, "max(x, y)", math.Max, minMax(0, 1), anywhere}, // NaN in either operand gives NaN
		{OpMin, "min(x, y)", math.Min, minMax(1, 0), anywhere},
	} {
		f := o.f
		def(OpDef{Op: o.op, Doc: o.doc, Category: Elementwise, Inputs: 2, Differentiable: true, Infer: inferBinary,
			Elem: &Elem{Eval: func(_ Attrs, x []float64) float64 { return f(x[0], x[1]) }, Grad: o.grad, FLOPs: 1, Domain: o.domain}})
	}

	def(OpDef{Op: OpGE, Doc: "1 where x ≥ y, else 0 (masks for max/min gradients)", Category: Elementwise, Inputs: 2,
		Infer: inferBinary,
		Elem: &Elem{
			// A comparison with NaN is false, so 0.
			Eval: func(_ Attrs, x []float64) float64 {
				if x[0] >= x[1] {
					return 1
				}
				return 0
			},
			FLOPs: 1, Domain: anywhere,
		}})
	def(OpDef{Op: OpIsFinite, Doc: "1 where x is finite, else 0 (NaN and ±Inf give 0)", Category: Elementwise, Inputs: 1,
		Infer: inferUnary,
		Elem: &Elem{
			Eval: func(_ Attrs, x []float64) float64 {
				if math.IsNaN(x[0]) || math.IsInf(x[0], 0) {
					return 0
				}
				return 1
			},
			FLOPs: 1, Domain: anywhere,
		}})
}

// lazy builds the gradient of operand i only when need[i] is set.
func lazy(need []bool, fs ...func() *Value) []*Value {
	out := make([]*Value, len(fs))
	for i, f := range fs {
		if need[i] && f != nil {
			out[i] = f()
		}
	}
	return out
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
