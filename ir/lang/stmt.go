package lang

import (
	"fmt"

	"github.com/scm-magellano/magc/ir"
)

// stmt executes one statement; a return statement yields its values and done.
func (e *evaluator) stmt(s *Stmt, fr *frame) (ret []val, err error) {
	e.b.Pos = irPos(s.Pos)
	switch {
	case s.Const != nil:
		return nil, e.constStmt(s, fr)
	case s.Input != nil:
		return nil, e.inputStmt(s, fr)
	case s.Param != nil:
		return nil, e.paramStmt(s, fr)
	case s.Output != nil:
		if !fr.top {
			return nil, errAt(s.Pos, "outputs are declared at the top level, not inside a function")
		}
		v, err := e.tensor(s.Output.Value, fr, "output "+s.Output.Name)
		if err != nil {
			return nil, err
		}
		e.b.Output(s.Output.Name, v)
		fr.vars[s.Output.Name] = tensorVal(v) // later statements may use it (loss from logits)
		return nil, e.b.Err()
	case s.Repeat != nil:
		return e.repeat(s, fr)
	case s.Checkpoint != nil:
		return e.checkpoint(s, fr)
	case s.Return != nil:
		if fr.top {
			return nil, errAt(s.Pos, "return outside a function")
		}
		for _, x := range s.Return {
			v, err := e.expr(x, fr)
			if err != nil {
				return nil, err
			}
			ret = append(ret, v)
		}
		return ret, nil
	case s.Assign != nil:
		return nil, e.assign(s.Assign, fr)
	case s.Call != nil:
		if s.Call.Args == nil {
			return nil, errAt(s.Pos, "%q alone does nothing: assign it or call it", s.Call.Name)
		}
		_, err := e.call(s.Call, fr)
		return nil, err
	}
	return nil, errAt(s.Pos, "empty statement")
}

func (e *evaluator) constStmt(s *Stmt, fr *frame) error {
	c := s.Const
	if !fr.top {
		return errAt(s.Pos, "const declarations belong at the top level of a file")
	}
	if _, ok := e.consts[c.Name]; ok {
		return errAt(s.Pos, "const %s is already defined", c.Name)
	}
	v, err := e.expr(c.Value, fr)
	if err != nil {
		return err
	}
	if v.kind != kNum {
		return errAt(c.Value.Pos, "const %s must be a number, got %s", c.Name, v.describe())
	}
	if o, ok := e.opts.Overrides[c.Name]; ok {
		if !v.isInt {
			return errAt(s.Pos, "const %s is not an integer and cannot be overridden", c.Name)
		}
		v = intVal(int64(o))
	}
	e.consts[c.Name] = v
	return nil
}

func (e *evaluator) typeExpr(t *TypeExpr, fr *frame) (ir.Type, error) {
	d, ok := ir.ParseDType(t.DType)
	if !ok {
		return ir.Type{}, errAt(t.Pos, "unknown dtype %q%s", t.DType, suggest(t.DType, ir.DTypeNames()))
	}
	shape := make(ir.Shape, len(t.Dims))
	for i, x := range t.Dims {
		v, err := e.expr(x, fr)
		if err != nil {
			return ir.Type{}, err
		}
		if v.kind != kNum || !v.isInt {
			return ir.Type{}, errAt(x.Pos, "a dimension must be an integer, got %s", v.describe())
		}
		if v.i <= 0 {
			return ir.Type{}, errAt(x.Pos, "dimension %d is %d: dimensions must be positive", i, v.i)
		}
		if v.i > 1<<31-1 {
			return ir.Type{}, errAt(x.Pos, "dimension %d is %d: larger than 2^31-1", i, v.i)
		}
		shape[i] = int(v.i)
	}
	return ir.Type{DType: d, Shape: shape}, nil
}

func (e *evaluator) inputStmt(s *Stmt, fr *frame) error {
	in := s.Input
	if !fr.top {
		return errAt(s.Pos, "inputs are declared at the top level, not inside a function")
	}
	t, err := e.typeExpr(in.Type, fr)
	if err != nil {
		return err
	}
	if err := e.define(fr, in.Name, s, tensorVal(e.b.Input(in.Name, t))); err != nil {
		return err
	}
	return e.b.Err()
}

func (e *evaluator) paramStmt(s *Stmt, fr *frame) error {
	p := s.Param
	t, err := e.typeExpr(p.Type, fr)
	if err != nil {
		return err
	}
	if !t.DType.IsFloat() {
		return errAt(p.Type.Pos, "parameters are float tensors, got %v", t.DType)
	}
	init, err := e.initExpr(p.Init, fr)
	if err != nil {
		return err
	}
	param := ir.Param{Name: scoped(fr.scope, p.Name), Role: ir.Trainable, Init: init}
	for _, f := range p.Flags {
		switch f {
		case "frozen":
			param.Role = ir.Frozen
		case "nodecay":
			param.NoDecay = true
		case "lora":
			param.LoRA = true
		}
	}
	if err := e.define(fr, p.Name, s, tensorVal(e.b.Param(param, t))); err != nil {
		return err
	}
	return e.b.Err()
}

func (e *evaluator) initExpr(c *CallExpr, fr *frame) (ir.Init, error) {
	kw, err := e.keywordNumbers(c.Args, fr)
	if err != nil {
		return ir.Init{}, err
	}
	args := map[string]float64{}
	for k, v := range kw {
		args[k] = v.f
	}
	init, err := ir.NewInit(c.Name, args)
	if err != nil {
		return ir.Init{}, errAt(c.Pos, "%v", err)
	}
	return init, nil
}

func scoped(scope, name string) string {
	if scope == "" {
		return name
	}
	return scope + "." + name
}

// define binds a new name in the frame; parameters and inputs may not shadow.
func (e *evaluator) define(fr *frame, name string, s *Stmt, v val) error {
	if _, ok := fr.vars[name]; ok {
		return errAt(s.Pos, "%s is already defined in this scope", name)
	}
	fr.vars[name] = v
	return nil
}

func (e *evaluator) assign(a *Assign, fr *frame) error {
	vals, err := e.exprMulti(a.Value, fr)
	if err != nil {
		return err
	}
	if len(vals) != len(a.Names) {
		return errAt(a.Value.Pos, "%d names on the left, but the right side gives %d value(s)", len(a.Names), len(vals))
	}
	for i, n := range a.Names {
		if n == "_" {
			continue
		}
		if _, isConst := e.consts[n]; isConst {
			return errAt(a.Value.Pos, "%s is a const and cannot be assigned", n)
		}
		fr.vars[n] = vals[i]
	}
	return nil
}

func (e *evaluator) repeat(s *Stmt, fr *frame) ([]val, error) {
	n, err := e.expr(s.Repeat.Count, fr)
	if err != nil {
		return nil, err
	}
	if n.kind != kNum || !n.isInt || n.i < 0 || n.i > maxRepeat {
		return nil, errAt(s.Repeat.Count.Pos, "repeat count must be an integer from 0 to %d, got %s", maxRepeat, n.describe())
	}
	for i := int64(0); i < n.i; i++ {
		if e.steps++; e.steps > maxSteps {
			return nil, errAt(s.Pos, "the model executes more than %d statements", maxSteps)
		}
		ret, err := e.block(s.Repeat.Body, fr)
		if err != nil || ret != nil {
			return ret, err
		}
	}
	return nil, nil
}

func (e *evaluator) checkpoint(s *Stmt, fr *frame) ([]val, error) {
	if e.b.Region != 0 {
		return nil, errAt(s.Pos, "checkpoint regions cannot nest")
	}
	g := e.b.G
	id := len(g.Regions) + 1
	g.Regions = append(g.Regions, ir.Region{ID: id, Name: fmt.Sprintf("checkpoint.%d", id-1)})
	e.b.Region = id
	defer func() { e.b.Region = 0 }()
	return e.block(s.Checkpoint.Stmts, fr)
}

func (e *evaluator) block(body []*Stmt, fr *frame) ([]val, error) {
	for _, s := range body {
		if e.steps++; e.steps > maxSteps {
			return nil, errAt(s.Pos, "the model executes more than %d statements", maxSteps)
		}
		ret, err := e.stmt(s, fr)
		if err != nil || ret != nil {
			return ret, err
		}
		if len(e.b.G.Nodes) > maxNodes {
			return nil, errAt(s.Pos, "the graph has more than %d nodes", maxNodes)
		}
	}
	return nil, nil
}
