package ref

import (
	"fmt"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// Impl evaluates one node: it receives the node (for its attributes and
// output types) and one tensor per operand, already checked against the
// operand types, and returns one tensor per output. It reports bad data
// (an index out of range) as an error and never panics.
type Impl func(n *ir.Node, in []*Tensor) ([]*Tensor, error)

// Registry holds the reference semantics of every non-source op of the
// catalogue; a test fails when ir.Ops() has an op missing here.
var Registry = map[ir.Op]Impl{}

func register(op ir.Op, f Impl) {
	if _, dup := Registry[op]; dup {
		panic("ref: op registered twice: " + string(op))
	}
	Registry[op] = f
}

// Result is what Eval computes.
type Result struct {
	Outputs   map[string]*Tensor // the graph's named outputs
	AuxLosses []*Tensor          // in the order of g.AuxLosses
	// Values holds the tensor of every value of the graph (inputs and
	// parameters are the caller's tensors, not copies).
	Values map[*ir.Value]*Tensor
}

// Value returns the tensor computed for v.
func (r *Result) Value(v *ir.Value) *Tensor { return r.Values[v] }

// Eval verifies g and evaluates every node in order. inputs and params are
// keyed by name and must match the graph's declarations exactly (same
// names, same types, values representable in their dtype).
func Eval(g *ir.Graph, inputs, params map[string]*Tensor) (*Result, error) {
	if err := ir.Verify(g); err != nil {
		return nil, fmt.Errorf("ref: invalid graph: %w", err)
	}
	vals := make(map[*ir.Value]*Tensor, len(g.Nodes))
	if err := bind(vals, "input", inputs, namesOfInputs(g)); err != nil {
		return nil, err
	}
	if err := bind(vals, "parameter", params, namesOfParams(g)); err != nil {
		return nil, err
	}
	for _, n := range g.Nodes {
		if err := evalNode(n, vals); err != nil {
			return nil, fmt.Errorf("ref: %s: %v", where(n), err)
		}
	}
	r := &Result{Outputs: map[string]*Tensor{}, Values: vals}
	for _, o := range g.Outputs {
		r.Outputs[o.Name] = vals[o.Value]
	}
	for _, v := range g.AuxLosses {
		r.AuxLosses = append(r.AuxLosses, vals[v])
	}
	return r, nil
}

// StreamOptions says how Stream walks a graph.
type StreamOptions struct {
	// Order lists the indices of g.Nodes in the order to evaluate them: a
	// topological order (nil: g.Nodes' own order).
	Order []int
	// Until keeps a value past its last reader: until the node at position
	// Until[v] of Order has been visited.
	Until map[*ir.Value]int
	// Visit is called after the node at position pos of Order is evaluated,
	// with the values live then.
	Visit func(pos int, vals map[*ir.Value]*Tensor) error
}

// Stream evaluates g as Eval does, but keeps only the live values: after
// each node it calls o.Visit, then drops every value that no later node
// reads and that o.Until does not keep. Graph outputs are dropped like any
// value, and so are inputs and parameters (a caller that keeps no reference
// of its own to them lets them go too). Peak memory is the live set, not
// the whole graph.
func Stream(g *ir.Graph, inputs, params map[string]*Tensor, o StreamOptions) error {
	if err := ir.Verify(g); err != nil {
		return fmt.Errorf("ref: invalid graph: %w", err)
	}
	order := o.Order
	if order == nil {
		order = make([]int, len(g.Nodes))
		for i := range order {
			order[i] = i
		}
	}
	pos := make(map[*ir.Node]int, len(g.Nodes)) // each node's position in order
	for p, i := range order {
		if i < 0 || i >= len(g.Nodes) {
			return fmt.Errorf("ref: evaluation order names node %d of %d", i, len(g.Nodes))
		}
		if _, dup := pos[g.Nodes[i]]; dup {
			return fmt.Errorf("ref: evaluation order names node %d twice", i)
		}
		pos[g.Nodes[i]] = p
	}
	if len(order) != len(g.Nodes) {
		return fmt.Errorf("ref: evaluation order has %d of %d nodes", len(order), len(g.Nodes))
	}
	// last[v]: the position of v's last reader, or Until[v] if later.
	last := make(map[*ir.Value]int, len(g.Nodes))
	for p, i := range order {
		n := g.Nodes[i]
		for _, v := range n.Inputs {
			if pos[v.Node] >= p {
				return fmt.Errorf("ref: evaluation order puts %s before the node computing its operand %v", where(n), v)
			}
			last[v] = max(last[v], p)
		}
		for _, v := range n.Outputs {
			last[v] = max(last[v], p)
		}
	}
	for v, p := range o.Until {
		last[v] = max(last[v], p)
	}
	drop := make([][]*ir.Value, len(order))
	for v, p := range last {
		drop[p] = append(drop[p], v)
	}
	vals := make(map[*ir.Value]*Tensor)
	if err := bind(vals, "input", inputs, namesOfInputs(g)); err != nil {
		return err
	}
	if err := bind(vals, "parameter", params, namesOfParams(g)); err != nil {
		return err
	}
	inputs, params = nil, nil // from here vals holds the only references Stream has
	for p, i := range order {
		n := g.Nodes[i]
		if err := evalNode(n, vals); err != nil {
			return fmt.Errorf("ref: %s: %v", where(n), err)
		}
		if o.Visit != nil {
			if err := o.Visit(p, vals); err != nil {
				return err
			}
		}
		for _, v := range drop[p] {
			delete(vals, v)
		}
		drop[p] = nil
	}
	return nil
}

func namesOfInputs(g *ir.Graph) map[string]*ir.Value {
	m := map[string]*ir.Value{}
	for _, in := range g.Inputs {
		m[in.Name] = in.Value
	}
	return m
}

func namesOfParams(g *ir.Graph) map[string]*ir.Value {
	m := map[string]*ir.Value{}
	for _, p := range g.Params {
		m[p.Name] = p.Value
	}
	return m
}

// bind checks the caller's tensors against the declared ones: every
// declared name given, no unknown names, types and contents valid.
func bind(vals map[*ir.Value]*Tensor, what string, given map[string]*Tensor, want map[string]*ir.Value) error {
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	var missing []string
	for _, name := range names {
		t, ok := given[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		v := want[name]
		if err := t.check(v.Type); err != nil {
			return fmt.Errorf("ref: %s %q %v", what, name, err)
		}
		vals[v] = t
	}
	if len(missing) > 0 {
		return fmt.Errorf("ref: missing %s(s) %q", what, missing)
	}
	extra := make([]string, 0)
	for name := range given {
		if _, ok := want[name]; !ok {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		msg := fmt.Sprintf("ref: the graph has no %s %q", what, extra[0])
		if s := ir.Closest(extra[0], names); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// where names a node for an error: "node 7 (gather) at tiny.graph:22:5 in mamba.0".
func where(n *ir.Node) string {
	s := fmt.Sprintf("node %d (%s)", n.ID, n.Op)
	if p := n.Pos.String(); p != "" {
		s += " at " + p
	}
	if n.Scope != "" {
		s += " in " + n.Scope
	}
	return s
}

func evalNode(n *ir.Node, vals map[*ir.Value]*Tensor) error {
	var outs []*Tensor
	switch n.Op {
	case ir.OpInput, ir.OpParam:
		if vals[n.Out()] == nil {
			// Declared by a node but not listed in g.Inputs/g.Params.
			return fmt.Errorf("%s %q is not in the graph's tables", n.Op, n.Attrs.String("name"))
		}
		return nil
	case ir.OpConst:
		t := n.Out().Type
		if t.DType == ir.NF4 {
			return fmt.Errorf("an nf4 const has no meaning (nf4 comes from quantisation)")
		}
		c := New(t)
		x := Convert(t.DType, n.Attrs.Float("value"))
		for i := range c.Data {
			c.Data[i] = x
		}
		outs = []*Tensor{c}
	default:
		f, ok := Registry[n.Op]
		if !ok {
			return fmt.Errorf("no reference implementation of %q", n.Op)
		}
		in := make([]*Tensor, len(n.Inputs))
		for i, v := range n.Inputs {
			in[i] = vals[v]
			if in[i] == nil {
				return fmt.Errorf("operand %d (%v) has no value", i, v)
			}
			// The layout shape rules admit nf4 operands, but only reshape
			// keeps the flat quantisation blocks intact.
			if v.Type.DType == ir.NF4 && n.Op != ir.OpDequant && n.Op != ir.OpReshape {
				return fmt.Errorf("an nf4 operand has no meaning here (only dequant and reshape read nf4)")
			}
		}
		var err error
		if outs, err = f(n, in); err != nil {
			return err
		}
	}
	if len(outs) != len(n.Outputs) {
		return fmt.Errorf("internal error: %d results for %d outputs", len(outs), len(n.Outputs))
	}
	for i, v := range n.Outputs {
		t := outs[i]
		// Storage rounding: every f16/bf16/integer result holds a value of
		// its dtype, and so does a result kept in memory in a half type.
		if d := v.Stored().DType; t != nil && d != ir.F32 && d != ir.NF4 {
			for j, x := range t.Data {
				t.Data[j] = Convert(d, x)
			}
		}
		if err := t.check(v.Type); err != nil {
			return fmt.Errorf("internal error: result %d %v", i, err)
		}
		vals[v] = t
	}
	return nil
}

// EvalOp applies one op to tensors: it builds a one-node graph whose inputs
// have the tensors' types, evaluates it and returns the op's results. It is
// the quickest way to compare a kernel with the reference.
func EvalOp(op ir.Op, attrs ir.Attrs, in ...*Tensor) ([]*Tensor, error) {
	b := ir.NewBuilder(string(op))
	args := make([]*ir.Value, len(in))
	feeds := map[string]*Tensor{}
	for i, t := range in {
		if t == nil {
			return nil, fmt.Errorf("ref: %s operand %d is nil", op, i)
		}
		name := fmt.Sprintf("x%d", i)
		args[i] = b.Input(name, t.Type)
		feeds[name] = t
	}
	outs := b.Apply(op, attrs, args...)
	for i, v := range outs {
		b.Output(fmt.Sprintf("y%d", i), v)
	}
	g, err := b.Finish()
	if err != nil {
		return nil, fmt.Errorf("ref: %v", err)
	}
	r, err := Eval(g, feeds, nil)
	if err != nil {
		return nil, err
	}
	res := make([]*Tensor, len(outs))
	for i, v := range outs {
		res[i] = r.Values[v]
	}
	return res, nil
}
