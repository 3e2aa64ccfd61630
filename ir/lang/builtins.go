package lang

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/ir"
)

// A builtin is a function of the language that is not one op of the catalogue:
// shorthands that build a few ops, and arithmetic on build-time numbers.
type builtin func(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error)

var builtins map[string]builtin

func init() {
	builtins = map[string]builtin{
		"linear":   linear,
		"split":    split,
		"sum":      reduce(ir.OpReduceSum),
		"mean":     reduce(ir.OpReduceMean),
		"aux_loss": auxLoss,
		"sqrt":     numericOr(math.Sqrt, ir.OpSqrt),
		"exp":      numericOr(math.Exp, ir.OpExp),
		"log":      numericOr(math.Log, ir.OpLog),
		"max":      minMax(ir.OpMax, math.Max),
		"min":      minMax(ir.OpMin, math.Min),
	}
}

func tensorArgs(name string, args []val, n int) ([]*ir.Value, error) {
	if len(args) != n {
		return nil, fmt.Errorf("takes %d tensor argument(s), got %d", n, len(args))
	}
	out := make([]*ir.Value, n)
	for i, a := range args {
		if a.kind != kTensor {
			return nil, fmt.Errorf("argument %d must be a tensor, got %s", i+1, a.describe())
		}
		out[i] = a.t
	}
	return out, nil
}

func noKeywords(kw map[string]val, allowed ...string) error {
	for k := range kw {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return fmt.Errorf("has no argument %q%s", k, suggest(k, allowed))
		}
	}
	return nil
}

func (e *evaluator) outputs(vs ...*ir.Value) ([]val, error) {
	if err := e.b.Err(); err != nil {
		return nil, err
	}
	out := make([]val, len(vs))
	for i, v := range vs {
		out[i] = tensorVal(v)
	}
	return out, nil
}

// linear(x, w) is x·wᵀ for a weight w of shape (out, in), as nn.Linear stores it.
func linear(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
	in, err := tensorArgs("linear", args, 2)
	if err != nil {
		return nil, err
	}
	if err := noKeywords(kw); err != nil {
		return nil, err
	}
	return e.outputs(e.b.Matmul(in[0], in[1], false, true))
}

// split(x, n1, n2, ...) cuts the last axis into consecutive pieces of the given sizes.
func split(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
	if len(args) < 2 || args[0].kind != kTensor {
		return nil, fmt.Errorf("takes a tensor and the sizes of its pieces")
	}
	if err := noKeywords(kw); err != nil {
		return nil, err
	}
	x := args[0].t
	axis := len(x.Type.Shape) - 1
	if axis < 0 {
		return nil, fmt.Errorf("cannot split a scalar")
	}
	var outs []*ir.Value
	start := 0
	for i, a := range args[1:] {
		if a.kind != kNum || !a.isInt || a.i <= 0 {
			return nil, fmt.Errorf("size %d must be a positive integer, got %s", i+1, a.describe())
		}
		end := start + int(a.i)
		if end > x.Type.Shape[axis] {
			break
		}
		outs = append(outs, e.b.Slice(x, axis, start, end))
		start = end
	}
	if start != x.Type.Shape[axis] {
		sizes := make([]int64, len(args)-1)
		var total int64
		for i, a := range args[1:] {
			sizes[i] = a.i
			total += a.i
		}
		return nil, fmt.Errorf("sizes %v add up to %d, but the last axis of %v has %d", sizes, total, x.Type, x.Type.Shape[axis])
	}
	return e.outputs(outs...)
}

// reduce gives sum(x, axes = [...], keep = false); axes default to all.
func reduce(op ir.Op) builtin {
	return func(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
		in, err := tensorArgs(string(op), args, 1)
		if err != nil {
			return nil, err
		}
		if err := noKeywords(kw, "axes", "keep"); err != nil {
			return nil, err
		}
		attrs := ir.Attrs{}
		for k, v := range kw {
			a, err := attrValue(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			attrs[k] = a
		}
		rank := len(in[0].Type.Shape)
		if _, ok := attrs["axes"]; !ok {
			all := make([]int, rank)
			for i := range all {
				all[i] = i
			}
			attrs["axes"] = all
		}
		normalizeAxes(attrs, rank)
		return e.outputs(e.b.Op(op, attrs, in[0]))
	}
}

// aux_loss(x) adds a scalar to the training loss (the MoE load-balancing term).
func auxLoss(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
	in, err := tensorArgs("aux_loss", args, 1)
	if err != nil {
		return nil, err
	}
	if !in[0].Type.Equal(ir.T(ir.F32)) {
		return nil, fmt.Errorf("needs an f32 scalar, got %v", in[0].Type)
	}
	e.b.G.AuxLosses = append(e.b.G.AuxLosses, in[0])
	return []val{tensorVal(in[0])}, nil
}

// numericOr computes f on a number at build time, or applies op to a tensor.
func numericOr(f func(float64) float64, op ir.Op) builtin {
	return func(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
		if len(args) == 1 && args[0].kind == kNum && len(kw) == 0 {
			r := f(args[0].f)
			if math.IsNaN(r) || math.IsInf(r, 0) {
				return nil, fmt.Errorf("%s(%g) is not a finite number", op, args[0].f)
			}
			return []val{floatVal(r)}, nil
		}
		return e.applyOp(c, op, args, kw)
	}
}

// minMax is min/max of two numbers, or the elementwise op on tensors.
func minMax(op ir.Op, f func(a, b float64) float64) builtin {
	return func(e *evaluator, c *CallExpr, args []val, kw map[string]val) ([]val, error) {
		if len(args) != 2 || len(kw) != 0 {
			return nil, fmt.Errorf("takes two arguments")
		}
		a, b := args[0], args[1]
		if a.kind == kNum && b.kind == kNum {
			if a.isInt && b.isInt {
				return []val{intVal(int64(f(float64(a.i), float64(b.i))))}, nil
			}
			return []val{floatVal(f(a.f, b.f))}, nil
		}
		if a.kind == kTensor && b.kind == kTensor {
			return e.outputs(e.b.Binary(op, a.t, b.t))
		}
		return nil, fmt.Errorf("needs two numbers or two tensors, got %s and %s", a.describe(), b.describe())
	}
}
