package lang

import (
	"fmt"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"

	"github.com/scm-magellano/magc/ir"
)

// expr evaluates an expression that must give exactly one value.
func (e *evaluator) expr(x *Expr, fr *frame) (val, error) {
	vs, err := e.exprMulti(x, fr)
	if err != nil {
		return val{}, err
	}
	if len(vs) != 1 {
		return val{}, errAt(x.Pos, "expected one value, got %d", len(vs))
	}
	return vs[0], nil
}

// tensor evaluates an expression that must give one tensor.
func (e *evaluator) tensor(x *Expr, fr *frame, what string) (*ir.Value, error) {
	v, err := e.expr(x, fr)
	if err != nil {
		return nil, err
	}
	if v.kind != kTensor {
		return nil, errAt(x.Pos, "%s must be a tensor, got %s", what, v.describe())
	}
	return v.t, nil
}

// exprMulti evaluates an expression; only a bare call may give several values.
func (e *evaluator) exprMulti(x *Expr, fr *frame) ([]val, error) {
	if len(x.Rest) == 0 && len(x.Left.Rest) == 0 && x.Left.Left.Primary != nil && x.Left.Left.Primary.Call != nil {
		return e.call(x.Left.Left.Primary.Call, fr)
	}
	left, err := e.term(x.Left, fr)
	if err != nil {
		return nil, err
	}
	for _, r := range x.Rest {
		right, err := e.term(r.Term, fr)
		if err != nil {
			return nil, err
		}
		if left, err = e.arith(r.Pos, r.Op, left, right); err != nil {
			return nil, err
		}
	}
	return []val{left}, nil
}

func (e *evaluator) term(t *Term, fr *frame) (val, error) {
	left, err := e.unary(t.Left, fr)
	if err != nil {
		return val{}, err
	}
	for _, r := range t.Rest {
		right, err := e.unary(r.Factor, fr)
		if err != nil {
			return val{}, err
		}
		if left, err = e.arith(r.Pos, r.Op, left, right); err != nil {
			return val{}, err
		}
	}
	return left, nil
}

func (e *evaluator) unary(u *Unary, fr *frame) (val, error) {
	if u.Neg == nil {
		return e.primary(u.Primary, fr)
	}
	v, err := e.unary(u.Neg, fr)
	if err != nil {
		return val{}, err
	}
	switch v.kind {
	case kNum:
		return numOp("-", intVal(0), v)
	case kTensor:
		e.b.Pos = irPos(u.Pos)
		return e.result(e.b.Unary(ir.OpNeg, v.t))
	}
	return val{}, errAt(u.Pos, "cannot negate a %s", v.kind)
}

func (e *evaluator) primary(p *Primary, fr *frame) (val, error) {
	switch {
	case p.Float != nil:
		return floatVal(*p.Float), nil
	case p.Int != nil:
		return checkedInt(*p.Int)
	case p.String != nil:
		return val{kind: kString, s: *p.String}, nil
	case p.Bool != nil:
		return val{kind: kBool, b: *p.Bool == "true"}, nil
	case p.List != nil:
		out := val{kind: kList}
		for _, x := range p.List.Items {
			v, err := e.expr(x, fr)
			if err != nil {
				return val{}, err
			}
			out.list = append(out.list, v)
		}
		return out, nil
	case p.Paren != nil:
		return e.expr(p.Paren, fr)
	case p.Call != nil:
		vs, err := e.call(p.Call, fr)
		if err != nil {
			return val{}, err
		}
		if len(vs) != 1 {
			return val{}, errAt(p.Pos, "%s gives %d values; assign them with a, b = %s(...)", p.Call.Name, len(vs), p.Call.Name)
		}
		return vs[0], nil
	}
	return val{}, errAt(p.Pos, "empty expression")
}

// result turns the builder's latest output into a value, or its error.
func (e *evaluator) result(v *ir.Value) (val, error) {
	if err := e.b.Err(); err != nil {
		return val{}, err
	}
	return tensorVal(v), nil
}

var arithOps = map[string]ir.Op{"+": ir.OpAdd, "-": ir.OpSub, "*": ir.OpMul, "/": ir.OpDiv}

// arith applies a binary operator: number arithmetic, elementwise tensor
// ops with numpy broadcasting, or a tensor with a number (scale or a constant).
func (e *evaluator) arith(pos lexer.Position, op string, a, b val) (val, error) {
	if a.kind == kNum && b.kind == kNum {
		v, err := numOp(op, a, b)
		if err != nil {
			return val{}, errAt(pos, "%v", err)
		}
		return v, nil
	}
	if (a.kind != kNum && a.kind != kTensor) || (b.kind != kNum && b.kind != kTensor) {
		return val{}, errAt(pos, "cannot apply %s to %s and %s", op, a.describe(), b.describe())
	}
	if op == "%" {
		return val{}, errAt(pos, "%% applies to integers, not tensors")
	}
	e.b.Pos = irPos(pos)
	switch {
	case a.kind == kTensor && b.kind == kNum && op == "*":
		return e.result(e.b.Scale(a.t, b.f))
	case a.kind == kNum && b.kind == kTensor && op == "*":
		return e.result(e.b.Scale(b.t, a.f))
	case a.kind == kTensor && b.kind == kNum && op == "/":
		if b.f == 0 {
			return val{}, errAt(pos, "division by zero")
		}
		return e.result(e.b.Scale(a.t, 1/b.f))
	}
	x, y := e.asTensor(a, b), e.asTensor(b, a)
	return e.result(e.b.Binary(arithOps[op], x, y))
}

// asTensor returns v as a tensor, making a scalar constant of like's dtype for a number.
func (e *evaluator) asTensor(v, like val) *ir.Value {
	if v.kind == kTensor {
		return v.t
	}
	return e.b.Const(v.f, ir.T(like.t.Type.DType))
}

// call evaluates name(args): a user function or layer, a built-in, or an op
// of the IR catalogue; a bare name reads a variable or constant.
func (e *evaluator) call(c *CallExpr, fr *frame) ([]val, error) {
	if c.Args == nil {
		v, err := e.lookup(c, fr)
		return []val{v}, err
	}
	if f, ok := e.funcs[c.Name]; ok {
		return e.callFunc(c, f, fr)
	}
	args, kw, err := e.args(c, fr)
	if err != nil {
		return nil, err
	}
	e.b.Pos = irPos(c.Pos)
	if bi := builtins[c.Name]; bi != nil {
		vs, err := bi(e, c, args, kw)
		if err != nil {
			if _, ok := err.(*posError); !ok {
				if _, isIR := err.(*ir.Error); !isIR {
					err = errAt(c.Pos, "%s: %v", c.Name, err)
				}
			}
		}
		return vs, err
	}
	if _, ok := ir.Lookup(ir.Op(c.Name)); ok {
		return e.applyOp(c, ir.Op(c.Name), args, kw)
	}
	return nil, errAt(c.Pos, "unknown function %q%s", c.Name, suggest(c.Name, e.callables()))
}

func (e *evaluator) callables() []string {
	names := sortedKeys(e.funcs)
	names = append(names, sortedKeys(builtins)...)
	for _, d := range ir.Ops() {
		if d.Category != ir.Source {
			names = append(names, string(d.Op))
		}
	}
	return names
}

func (e *evaluator) lookup(c *CallExpr, fr *frame) (val, error) {
	if v, ok := fr.vars[c.Name]; ok {
		return v, nil
	}
	if v, ok := e.consts[c.Name]; ok {
		return v, nil
	}
	if d, ok := ir.ParseDType(c.Name); ok {
		return val{kind: kDType, d: d}, nil
	}
	names := append(sortedKeys(fr.vars), sortedKeys(e.consts)...)
	msg := fmt.Sprintf("unknown name %q%s", c.Name, suggest(c.Name, names))
	if _, isFunc := e.funcs[c.Name]; isFunc {
		msg = fmt.Sprintf("%s is a function: call it as %s(...)", c.Name, c.Name)
	}
	return val{}, errAt(c.Pos, "%s", msg)
}

func (e *evaluator) args(c *CallExpr, fr *frame) ([]val, map[string]val, error) {
	var pos []val
	kw := map[string]val{}
	for _, a := range c.Args.Args {
		v, err := e.expr(a.Value, fr)
		if err != nil {
			return nil, nil, err
		}
		if a.Key == "" {
			if len(kw) > 0 {
				return nil, nil, errAt(a.Pos, "positional argument after a named one")
			}
			pos = append(pos, v)
			continue
		}
		if _, dup := kw[a.Key]; dup {
			return nil, nil, errAt(a.Pos, "argument %s is given twice", a.Key)
		}
		kw[a.Key] = v
	}
	return pos, kw, nil
}

func (e *evaluator) callFunc(c *CallExpr, f *Func, fr *frame) ([]val, error) {
	for _, s := range e.stack {
		if s == f {
			chain := []string{}
			for _, s := range e.stack {
				chain = append(chain, s.Name)
			}
			return nil, errAt(c.Pos, "recursive call: %s → %s (functions are inlined, so they cannot recurse)", strings.Join(chain, " → "), f.Name)
		}
	}
	if len(e.stack) >= maxCallDepth {
		return nil, errAt(c.Pos, "calls nest deeper than %d", maxCallDepth)
	}
	if len(c.Args.Args) != len(f.Params) {
		return nil, errAt(c.Pos, "%s takes %d argument(s) (%s), got %d", f.Name, len(f.Params), strings.Join(f.Params, ", "), len(c.Args.Args))
	}
	callee := &frame{vars: map[string]val{}, scope: fr.scope}
	for i, a := range c.Args.Args {
		if a.Key != "" && a.Key != f.Params[i] {
			return nil, errAt(a.Pos, "%s has no parameter %q here (parameter %d is %s)", f.Name, a.Key, i+1, f.Params[i])
		}
		v, err := e.expr(a.Value, fr)
		if err != nil {
			return nil, err
		}
		callee.vars[f.Params[i]] = v
	}
	// A layer opens a parameter scope named by its call count ("mamba.3");
	// a plain fn declares its parameters in the caller's scope.
	if f.Kind == "layer" {
		key := fr.scope + "/" + f.Name
		callee.scope = scoped(fr.scope, fmt.Sprintf("%s.%d", f.Name, e.counts[key]))
		e.counts[key]++
		e.b.G.Layers = append(e.b.G.Layers, ir.Layer{Kind: f.Name, Scope: callee.scope})
	}
	savedScope := e.b.Scope
	e.b.Scope = callee.scope
	e.stack = append(e.stack, f)
	defer func() {
		e.stack = e.stack[:len(e.stack)-1]
		e.b.Scope = savedScope
	}()
	ret, err := e.block(f.Body, callee)
	if err != nil {
		return nil, err
	}
	if ret == nil {
		return nil, errAt(c.Pos, "%s returns no value", f.Name)
	}
	return ret, nil
}

// applyOp applies an op of the catalogue: positional tensors, keyword attributes.
func (e *evaluator) applyOp(c *CallExpr, op ir.Op, args []val, kw map[string]val) ([]val, error) {
	d, _ := ir.Lookup(op)
	if d.Category == ir.Source {
		return nil, errAt(c.Pos, "%s is declared with its own statement", op)
	}
	if d.Inputs >= 0 && len(args) != d.Inputs {
		return nil, errAt(c.Pos, "%s takes %d tensor argument(s), got %d", op, d.Inputs, len(args))
	}
	in := make([]*ir.Value, len(args))
	for i, a := range args {
		if a.kind != kTensor {
			return nil, errAt(c.Args.Args[i].Pos, "argument %d of %s must be a tensor, got %s", i+1, op, a.describe())
		}
		in[i] = a.t
	}
	attrs := ir.Attrs{}
	for k, v := range kw {
		a, err := attrValue(v)
		if err != nil {
			return nil, errAt(c.Pos, "%s attribute %s: %v", op, k, err)
		}
		attrs[k] = a
	}
	if len(in) > 0 {
		normalizeAxes(attrs, len(in[0].Type.Shape))
	}
	outs := e.b.Apply(op, attrs, in...)
	if err := e.b.Err(); err != nil {
		return nil, err
	}
	vs := make([]val, len(outs))
	for i, o := range outs {
		vs[i] = tensorVal(o)
	}
	return vs, nil
}

// normalizeAxes lets a model write axis = -1 for the last axis.
func normalizeAxes(a ir.Attrs, rank int) {
	if ax, ok := a["axis"].(int); ok && ax < 0 {
		a["axis"] = ax + rank
	}
	if axes, ok := a["axes"].([]int); ok {
		out := make([]int, len(axes))
		for i, ax := range axes {
			if ax < 0 {
				ax += rank
			}
			out[i] = ax
		}
		a["axes"] = out
	}
}

func attrValue(v val) (any, error) {
	switch v.kind {
	case kNum:
		if v.isInt {
			return int(v.i), nil
		}
		return v.f, nil
	case kBool:
		return v.b, nil
	case kDType:
		return v.d, nil
	case kString:
		return v.s, nil
	case kList:
		out := make([]int, len(v.list))
		for i, x := range v.list {
			if x.kind != kNum || !x.isInt {
				return nil, fmt.Errorf("lists hold integers, got %s", x.describe())
			}
			out[i] = int(x.i)
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %s cannot be an attribute", v.kind)
}
