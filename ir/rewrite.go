package ir

import (
	"fmt"
	"maps"
)

// Rewrite copies g node by node through a fresh builder, so passes can
// replace nodes without mutating the input graph. For each node, edit may
// build replacement nodes with b (in terms of in, the node's already-mapped
// operands) and return the values that stand for the node's outputs; when it
// returns nil the node is copied unchanged. Source nodes reach edit too: a
// pass can retype a parameter by declaring a new one. Graph tables (outputs,
// aux losses, layers, regions, constants, training mode) follow the mapping.
func Rewrite(g *Graph, edit func(b *Builder, n *Node, in []*Value) []*Value) (*Graph, error) {
	return rewrite(g, edit, g.Nodes)
}

// Reorder copies g with its nodes in the given order, which must list each
// node once and every node after its operands.
func Reorder(g *Graph, order []*Node) (*Graph, error) {
	if len(order) != len(g.Nodes) {
		return nil, fmt.Errorf("reorder: %d nodes for a graph of %d", len(order), len(g.Nodes))
	}
	done := map[*Node]bool{}
	for _, n := range order {
		for _, v := range n.Inputs {
			if !done[v.Node] {
				return nil, fmt.Errorf("reorder: node %d (%s) before its operand %d", n.ID, n.Op, v.Node.ID)
			}
		}
		done[n] = true
	}
	return rewrite(g, nil, order)
}

// Prune copies g without the nodes that no output, aux loss or update
// depends on (parameters and inputs stay: they are the graph's signature).
func Prune(g *Graph) (*Graph, error) {
	live := map[*Node]bool{}
	var mark func(v *Value)
	mark = func(v *Value) {
		if live[v.Node] {
			return
		}
		live[v.Node] = true
		for _, x := range v.Node.Inputs {
			mark(x)
		}
	}
	for _, v := range g.Results() {
		mark(v)
	}
	var keep []*Node
	for _, n := range g.Nodes {
		if live[n] || n.Op == OpParam || n.Op == OpInput {
			keep = append(keep, n)
		}
	}
	return rewrite(g, nil, keep)
}

// rewrite copies the nodes of g in order (a subset of g's, operands first)
// through edit.
func rewrite(g *Graph, edit func(b *Builder, n *Node, in []*Value) []*Value, order []*Node) (*Graph, error) {
	b := NewBuilder(g.Name)
	ng := b.G
	ng.Layers = append([]Layer(nil), g.Layers...)
	ng.Regions = append([]Region(nil), g.Regions...)
	ng.Consts = maps.Clone(g.Consts)
	ng.Train = g.Train
	vmap := map[*Value]*Value{}
	params := map[*Value]*Param{}
	for _, p := range g.Params {
		params[p.Value] = p
	}
	for _, n := range order {
		b.Pos, b.Scope, b.Region = n.Pos, n.Scope, n.Region
		in := make([]*Value, len(n.Inputs))
		for i, v := range n.Inputs {
			in[i] = vmap[v]
		}
		var out []*Value
		if edit != nil {
			out = edit(b, n, in)
		}
		if out == nil {
			out = copyNode(b, n, in, params[n.Out()])
		}
		if b.Err() != nil {
			return nil, b.Err()
		}
		for i, v := range n.Outputs {
			vmap[v] = out[i]
		}
	}
	for _, o := range g.Outputs {
		b.Output(o.Name, vmap[o.Value])
	}
	for _, v := range g.AuxLosses {
		ng.AuxLosses = append(ng.AuxLosses, vmap[v])
	}
	for _, u := range g.Updates {
		ng.Updates = append(ng.Updates, &Update{Param: u.Param, Value: vmap[u.Value]})
	}
	return b.Finish()
}

// copyNode re-creates n in b with operands in.
func copyNode(b *Builder, n *Node, in []*Value, p *Param) []*Value {
	switch n.Op {
	case OpInput:
		return []*Value{b.Input(n.Attrs.String("name"), n.Out().Type)}
	case OpParam:
		return []*Value{b.Param(*p, n.Out().Type)}
	case OpConst:
		return []*Value{b.Const(n.Attrs.Float("value"), n.Out().Type)}
	}
	return b.Apply(n.Op, n.Attrs, in...)
}
