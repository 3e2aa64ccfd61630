package ir

import (
	"fmt"
	"reflect"
)

// Verify checks that g is well formed: nodes in topological order, every
// operand defined earlier in g, attributes as the catalogue declares them,
// output types equal to what the shape rules infer, and the graph's tables of
// inputs, parameters and outputs pointing into the graph. Errors carry the
// source position of the offending op.
func Verify(g *Graph) error {
	defined := map[*Value]bool{}
	ids := map[int]bool{}
	for i, n := range g.Nodes {
		if err := verifyNode(n, i, defined); err != nil {
			return &Error{Pos: n.Pos, Msg: fmt.Sprintf("node %d (%s): %v", n.ID, n.Op, err)}
		}
		for _, v := range n.Outputs {
			if ids[v.ID] {
				return &Error{Pos: n.Pos, Msg: fmt.Sprintf("value id %%%d is defined twice", v.ID)}
			}
			ids[v.ID] = true
			defined[v] = true
		}
	}
	check := func(what, name string, v *Value, op Op) error {
		if v == nil || !defined[v] {
			return fmt.Errorf("%s %q refers to a value outside the graph", what, name)
		}
		if op != "" && (v.Node.Op != op || v.Node.Attrs.String("name") != name) {
			return fmt.Errorf("%s %q is not a %s node of that name", what, name, op)
		}
		return nil
	}
	// Every source node must be in its table, and tables must not repeat.
	declared := map[*Value]int{}
	for _, in := range g.Inputs {
		declared[in.Value]++
	}
	for _, p := range g.Params {
		declared[p.Value]++
	}
	for _, n := range g.Nodes {
		if (n.Op == OpInput || n.Op == OpParam) && declared[n.Out()] != 1 {
			return &Error{Pos: n.Pos, Msg: fmt.Sprintf("%s node %s appears %d times in the graph's tables", n.Op, n.Attrs.String("name"), declared[n.Out()])}
		}
	}
	for _, in := range g.Inputs {
		if err := check("input", in.Name, in.Value, OpInput); err != nil {
			return err
		}
	}
	for _, p := range g.Params {
		if err := check("parameter", p.Name, p.Value, OpParam); err != nil {
			return err
		}
		if (p.Role == FrozenNF4) != (p.Value.Type.DType == NF4) {
			return fmt.Errorf("parameter %q: role %v does not match dtype %v", p.Name, p.Role, p.Value.Type.DType)
		}
	}
	for _, o := range g.Outputs {
		if err := check("output", o.Name, o.Value, ""); err != nil {
			return err
		}
	}
	params := make(map[string]*Param, len(g.Params)) // by name, the first as g.Param finds it
	for _, p := range g.Params {
		if _, dup := params[p.Name]; !dup {
			params[p.Name] = p
		}
	}
	for _, u := range g.Updates {
		p := params[u.Param]
		if p == nil {
			return fmt.Errorf("update of unknown parameter %q", u.Param)
		}
		if err := check("update", u.Param, u.Value, ""); err != nil {
			return err
		}
		if !u.Value.Type.Equal(p.Value.Type) {
			return fmt.Errorf("update of %q has type %v, the parameter is %v", u.Param, u.Value.Type, p.Value.Type)
		}
	}
	for i, v := range g.AuxLosses {
		if err := check("aux loss", fmt.Sprint(i), v, ""); err != nil {
			return err
		}
		if !v.Type.Equal(T(F32)) {
			return fmt.Errorf("aux loss %d must be an f32 scalar, got %v", i, v.Type)
		}
	}
	return nil
}

func verifyNode(n *Node, index int, defined map[*Value]bool) error {
	if n.ID != index {
		return fmt.Errorf("id %d at position %d", n.ID, index)
	}
	d, ok := Lookup(n.Op)
	if !ok {
		return fmt.Errorf("unknown op %q", n.Op)
	}
	for i, v := range n.Inputs {
		if !defined[v] {
			return fmt.Errorf("operand %d is not defined before use", i)
		}
	}
	for i, v := range n.Outputs {
		if v.Node != n || v.Index != i {
			return fmt.Errorf("output %d does not point back to its node", i)
		}
	}
	if d.Category == Source {
		return verifySource(n, d)
	}
	want, a, err := inferNode(d, n.Attrs, n.Inputs)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(a, n.Attrs) {
		return fmt.Errorf("attributes %s are not in normal form %s", n.Attrs.Format(), a.Format())
	}
	if len(want) != len(n.Outputs) {
		return fmt.Errorf("%d outputs, the op has %d", len(n.Outputs), len(want))
	}
	for i, t := range want {
		if !n.Outputs[i].Type.Equal(t) {
			return fmt.Errorf("output %d has type %v, the shape rule gives %v", i, n.Outputs[i].Type, t)
		}
	}
	return nil
}

func verifySource(n *Node, d *OpDef) error {
	if len(n.Inputs) != 0 || len(n.Outputs) != 1 {
		return fmt.Errorf("source ops have no operands and one output")
	}
	if _, err := normalize(d.Op, d.Attrs, n.Attrs); err != nil {
		return err
	}
	return checkShape(n.Outputs[0].Type.Shape)
}
