package ir

import "fmt"

// Builder appends nodes to a graph, inferring each output type from the op's
// shape rule. Errors are sticky: after the first, every call returns
// placeholder values and Err reports that first error, so callers can chain
// ops and check once.
type Builder struct {
	G *Graph
	// Pos, Scope and Region are stamped on every node created.
	Pos    Pos
	Scope  string
	Region int
	err    error
	// names indexes the declared inputs, parameters and outputs by name, so
	// declaring the n-th one does not scan the n-1 before it.
	inputs  nameIndex[*Input]
	params  nameIndex[*Param]
	outputs nameIndex[*Output]
}

// nameIndex maps names to the entries of one of the graph's tables. It
// catches up with entries appended behind its back, and starts over when the
// table shrank or was replaced.
type nameIndex[T any] struct {
	m    map[string]T
	n    int // entries of the table indexed
	last T   // the table's entry n-1 when indexed
}

func (x *nameIndex[T]) lookup(table []T, name func(T) string, key string) (T, bool) {
	var zero T
	if x.m == nil || len(table) < x.n || (x.n > 0 && any(table[x.n-1]) != any(x.last)) {
		x.m, x.n = map[string]T{}, 0
	}
	for _, e := range table[x.n:] {
		if _, dup := x.m[name(e)]; !dup {
			x.m[name(e)] = e
		}
	}
	x.n = len(table)
	if x.n > 0 {
		x.last = table[x.n-1]
	} else {
		x.last = zero
	}
	e, ok := x.m[key]
	return e, ok
}

// NewBuilder starts an empty graph.
func NewBuilder(name string) *Builder {
	return &Builder{G: &Graph{Name: name, Consts: map[string]int{}}}
}

// Extend returns a builder that appends to g in place (passes copy g with
// Rewrite first when the input must stay untouched).
func Extend(g *Graph) *Builder { return &Builder{G: g} }

// Err is the first error met, if any.
func (b *Builder) Err() error { return b.err }

// Fail records err (positioned at b.Pos unless it already carries a position).
func (b *Builder) Fail(err error) {
	if b.err != nil || err == nil {
		return
	}
	if _, ok := err.(*Error); !ok {
		err = &Error{Pos: b.Pos, Msg: err.Error()}
	}
	b.err = err
}

func (b *Builder) newNode(op Op, a Attrs, in []*Value, out []Type) *Node {
	g := b.G
	n := &Node{ID: len(g.Nodes), Op: op, Inputs: in, Attrs: a, Pos: b.Pos, Scope: b.Scope, Region: b.Region}
	for i, t := range out {
		n.Outputs = append(n.Outputs, &Value{ID: g.nextID, Type: t, Node: n, Index: i})
		g.nextID++
	}
	g.Nodes = append(g.Nodes, n)
	return n
}

func (b *Builder) placeholders(k int) []*Value {
	out := make([]*Value, k)
	for i := range out {
		out[i] = &Value{ID: -1}
	}
	return out
}

// Apply adds a node for op and returns its outputs.
func (b *Builder) Apply(op Op, a Attrs, in ...*Value) []*Value {
	d, ok := Lookup(op)
	if !ok {
		b.Fail(fmt.Errorf("unknown op %q", op))
		return b.placeholders(1)
	}
	if b.err != nil {
		return b.placeholders(d.NumResults())
	}
	out, a, err := inferNode(d, a, in)
	if err != nil {
		b.Fail(err)
		return b.placeholders(d.NumResults())
	}
	return b.newNode(op, a, in, out).Outputs
}

// inferNode checks operands and attributes of one application of d and
// returns its output types and normalised attributes.
func inferNode(d *OpDef, a Attrs, in []*Value) ([]Type, Attrs, error) {
	if d.Category == Source {
		return nil, nil, fmt.Errorf("%s nodes are made with their own builder methods", d.Op)
	}
	if d.Inputs >= 0 && len(in) != d.Inputs {
		return nil, nil, fmt.Errorf("%s takes %d operands, got %d", d.Op, d.Inputs, len(in))
	}
	if len(in) == 0 {
		return nil, nil, fmt.Errorf("%s needs at least one operand", d.Op)
	}
	types := make([]Type, len(in))
	for i, v := range in {
		if v == nil || v.Node == nil {
			return nil, nil, fmt.Errorf("%s operand %d is undefined", d.Op, i)
		}
		types[i] = v.Type
	}
	a, err := normalize(d.Op, d.Attrs, a)
	if err != nil {
		return nil, nil, err
	}
	out, err := d.Infer(types, a)
	for _, t := range out {
		if err == nil {
			err = checkShape(t.Shape)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", d.Op, err)
	}
	return out, a, nil
}

// Op adds a single-output node.
func (b *Builder) Op(op Op, a Attrs, in ...*Value) *Value { return b.Apply(op, a, in...)[0] }

func (b *Builder) source(op Op, a Attrs, t Type) *Value {
	if b.err != nil {
		return b.placeholders(1)[0]
	}
	if err := checkShape(t.Shape); err != nil {
		b.Fail(fmt.Errorf("%s %v: %v", op, a.Format(), err))
		return b.placeholders(1)[0]
	}
	return b.newNode(op, a, nil, []Type{t}).Out()
}

// Input declares a graph input.
func (b *Builder) Input(name string, t Type) *Value {
	if _, dup := b.inputs.lookup(b.G.Inputs, func(in *Input) string { return in.Name }, name); dup {
		b.Fail(fmt.Errorf("input %q is declared twice", name))
	}
	v := b.source(OpInput, Attrs{"name": name}, t)
	if b.err == nil {
		b.G.Inputs = append(b.G.Inputs, &Input{Name: name, Value: v})
	}
	return v
}

// Param declares a parameter; p.Value is set to its value.
func (b *Builder) Param(p Param, t Type) *Value {
	if _, dup := b.params.lookup(b.G.Params, func(p *Param) string { return p.Name }, p.Name); dup {
		b.Fail(fmt.Errorf("parameter %q is declared twice", p.Name))
	}
	v := b.source(OpParam, Attrs{"name": p.Name}, t)
	if b.err == nil {
		p.Value = v
		b.G.Params = append(b.G.Params, &p)
	}
	return v
}

// Const makes a tensor of type t filled with x.
func (b *Builder) Const(x float64, t Type) *Value {
	return b.source(OpConst, Attrs{"value": x}, t)
}

// Output names a result of the graph.
func (b *Builder) Output(name string, v *Value) {
	if _, dup := b.outputs.lookup(b.G.Outputs, func(o *Output) string { return o.Name }, name); dup {
		b.Fail(fmt.Errorf("output %q is declared twice", name))
		return
	}
	if b.err == nil {
		b.G.Outputs = append(b.G.Outputs, &Output{Name: name, Value: v})
	}
}

// Finish verifies the graph and returns it.
func (b *Builder) Finish() (*Graph, error) {
	if b.err != nil {
		return nil, b.err
	}
	if err := Verify(b.G); err != nil {
		return nil, err
	}
	return b.G, nil
}

// Shorthands for the ops passes build most often.

func (b *Builder) Add(x, y *Value) *Value       { return b.Op(OpAdd, nil, x, y) }
func (b *Builder) Sub(x, y *Value) *Value       { return b.Op(OpSub, nil, x, y) }
func (b *Builder) Mul(x, y *Value) *Value       { return b.Op(OpMul, nil, x, y) }
func (b *Builder) Div(x, y *Value) *Value       { return b.Op(OpDiv, nil, x, y) }
func (b *Builder) Unary(op Op, x *Value) *Value { return b.Op(op, nil, x) }

// Scale multiplies by a constant factor.
func (b *Builder) Scale(x *Value, f float64) *Value { return b.Op(OpScale, Attrs{"factor": f}, x) }

// Matmul is x·w with optional transposes.
func (b *Builder) Matmul(x, w *Value, ta, tb bool) *Value {
	return b.Op(OpMatmul, Attrs{"ta": ta, "tb": tb}, x, w)
}

// Reshape gives x a new shape.
func (b *Builder) Reshape(x *Value, shape ...int) *Value {
	return b.Op(OpReshape, Attrs{"shape": shape}, x)
}

// BroadcastTo expands x to shape (a no-op when the shape already matches).
func (b *Builder) BroadcastTo(x *Value, shape Shape) *Value {
	if x.Type.Shape.Equal(shape) {
		return x
	}
	return b.Op(OpBroadcast, Attrs{"shape": []int(shape.Clone())}, x)
}

// Binary applies an elementwise binary op after numpy broadcasting of both operands.
func (b *Builder) Binary(op Op, x, y *Value) *Value {
	if b.err != nil {
		return b.placeholders(1)[0]
	}
	s, err := BroadcastShapes(x.Type.Shape, y.Type.Shape)
	if err != nil {
		b.Fail(fmt.Errorf("%s: %v", op, err))
		return b.placeholders(1)[0]
	}
	return b.Op(op, nil, b.BroadcastTo(x, s), b.BroadcastTo(y, s))
}

// Reduce applies a reduction over axes.
func (b *Builder) Reduce(op Op, x *Value, keep bool, axes ...int) *Value {
	return b.Op(op, Attrs{"axes": axes, "keep": keep}, x)
}

// Slice takes start ≤ i < end along axis.
func (b *Builder) Slice(x *Value, axis, start, end int) *Value {
	return b.Op(OpSlice, Attrs{"axis": axis, "start": start, "end": end}, x)
}
