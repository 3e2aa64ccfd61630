package passes

// Contractions: the LoRA sum (two K loops into one accumulator) and the
// producers a few-column contraction computes while staging its lhs.

import (
	"slices"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// fewColumns bounds the result columns of a contraction that computes
// producers of its lhs while staging it (XLA's rule against re-reading made
// concrete: its kernel stages each lhs element once per 64 columns, so at
// most four times). x_proj computes the causal conv this way, and the LoRA
// down-projection of the MoE experts their gated activation.
const fewColumns = 256

// lhsPrologue reports whether contraction group g may compute n while it
// stages its lhs: g has few result columns; n is element-wise, a conv, or
// the input gradient of a conv's backward (its weight gradients unread);
// and every reader of n in g computes the lhs (operand 0 of the anchor).
func lhsPrologue(g *Group, n *ir.Node, uses map[*ir.Value][]*ir.Node) bool {
	if !fewColumnContraction(g) || len(n.Outputs) == 0 || !stageable(n, uses) {
		return false
	}
	lhs := lhsChain(g)
	for _, v := range n.Outputs {
		for _, u := range uses[v] {
			if !inGroup(g, u) || lhs[u] {
				continue
			}
			if u != g.Anchor || u.Inputs[0] != v || slices.Contains(u.Inputs[1:], v) {
				return false
			}
		}
	}
	return true
}

// fewColumnContraction reports whether g is a contraction (one term) with few enough
// result columns to compute its lhs's producers while staging it.
func fewColumnContraction(g *Group) bool {
	if !Kinds[g.Kind].Tiled || len(g.Terms) > 0 {
		return false
	}
	out := g.Anchor.Out().Type.Shape
	return out[len(out)-1] <= fewColumns
}

// lhsChain is the set of g's nodes that compute its anchor's lhs.
func lhsChain(g *Group) map[*ir.Node]bool {
	chain := map[*ir.Node]bool{}
	var walk func(v *ir.Value)
	walk = func(v *ir.Value) {
		if chain[v.Node] || !inGroup(g, v.Node) {
			return
		}
		chain[v.Node] = true
		for _, x := range v.Node.Inputs {
			walk(x)
		}
	}
	walk(g.Anchor.Inputs[0])
	return chain
}

// mergeLHSProducers folds into a contraction with few columns the kernels
// that produce its lhs (a conv with its SiLU, the MoE gate's activation,
// the Mamba block's input gradient with its conv backward), when every
// other reader of what they write runs later: the contraction computes
// them while it stages the lhs and writes those results from its first
// column of tiles. It runs after mergeTerms, so a LoRA sum's base matmul,
// which runs at its sum, does not count as an earlier reader.
func (f *fuser) mergeLHSProducers(groups []*Group) {
	for i := len(groups) - 1; i >= 0; i-- {
		t := groups[i]
		if f.gone[t] || !fewColumnContraction(t) {
			continue
		}
		for folded := true; folded; {
			folded = false
			for _, x := range lhsInputs(t) {
				if len(f.member[x.Node]) != 1 {
					continue
				}
				p := f.member[x.Node][0]
				if f.gone[p] || p == t || !f.foldsIntoLHS(t, p) {
					continue
				}
				f.fold(t, p)
				t.StagesLHS, folded = true, true
				break
			}
		}
	}
}

// lhsInputs lists the values t's lhs chain reads from other kernels, in
// graph order.
func lhsInputs(t *Group) []*ir.Value {
	var out []*ir.Value
	seen := map[*ir.Value]bool{}
	add := func(v *ir.Value) {
		if !seen[v] && !inGroup(t, v.Node) {
			seen[v] = true
			out = append(out, v)
		}
	}
	add(t.Anchor.Inputs[0])
	for n := range lhsChain(t) {
		for _, v := range n.Inputs {
			add(v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// foldsIntoLHS reports whether kernel p can run inside contraction t's
// staging (a fewColumnContraction): p's nodes are element-wise, convs or conv input
// gradients; t reads p's results only in its lhs chain; and every
// result of p read elsewhere maps one to one onto lhs elements (so t writes
// each element once) and is read only after t.
func (f *fuser) foldsIntoLHS(t, p *Group) bool {
	uses, member := f.uses, f.member
	if len(p.RowEpilogue) > 0 || len(p.Terms) > 0 {
		return false
	}
	for _, n := range p.Nodes {
		if !stageable(n, uses) || len(member[n]) > 1 && !indexMap(n.Op) {
			return false
		}
	}
	if !f.fits(t, p) {
		return false
	}
	in := map[*ir.Node]bool{}
	for _, n := range append(append([]*ir.Node(nil), t.Nodes...), p.Nodes...) {
		in[n] = true
	}
	chain := map[*ir.Node]bool{}
	var walk func(v *ir.Value)
	walk = func(v *ir.Value) {
		if chain[v.Node] || !in[v.Node] {
			return
		}
		chain[v.Node] = true
		for _, x := range v.Node.Inputs {
			walk(x)
		}
	}
	walk(t.Anchor.Inputs[0])
	for _, n := range p.Nodes {
		if len(member[n]) > 1 {
			continue // an index map copied into each reader
		}
		for _, v := range n.Outputs {
			elsewhere := f.kept[v]
			for _, u := range uses[v] {
				if in[u] && !chain[u] && (u != t.Anchor || u.Inputs[0] != v) {
					return false // read by t outside its lhs
				}
				// Other kernels computing u (an index map is copied into
				// each reader) read v from memory: after t writes it.
				for _, g := range member[u] {
					if g != t && g != p {
						elsewhere = true
						if g.Root.ID <= t.Root.ID {
							return false
						}
					}
				}
			}
			if elsewhere && !oneToOneLHS(t, v, in, uses) {
				return false
			}
		}
	}
	return true
}

// stageable reports whether a contraction's staging can compute n: an
// element-wise node, a conv, or the input gradient of a conv's backward
// whose weight gradients nobody reads.
func stageable(n *ir.Node, uses map[*ir.Value][]*ir.Node) bool {
	switch {
	case n.Op == ir.OpAdamW:
		return false
	case Pointwise(n.Op), n.Op == ir.OpConv:
		return true
	case n.Op == ir.OpConvBwd:
		return len(uses[n.Outputs[1]]) == 0 && len(uses[n.Outputs[2]]) == 0
	}
	return false
}

// oneToOneLHS reports whether v reaches t's lhs through element-wise ops
// and concats only, each value read once on the way: staging every lhs
// element then computes each element of v exactly once.
func oneToOneLHS(t *Group, v *ir.Value, in map[*ir.Node]bool, uses map[*ir.Value][]*ir.Node) bool {
	lhs := t.Anchor.Inputs[0]
	for v != lhs {
		var next *ir.Node
		for _, u := range uses[v] {
			if !in[u] {
				continue
			}
			if next != nil {
				return false
			}
			next = u
		}
		if next == nil || next == t.Anchor || len(next.Outputs) != 1 {
			return false
		}
		d, _ := ir.Lookup(next.Op)
		if next.Op != ir.OpConcat && (d.Category != ir.Elementwise || !next.Out().Type.Shape.Equal(v.Type.Shape)) {
			return false
		}
		v = next.Out()
	}
	return true
}

// mergeTerms joins two contractions of one kind whose results, scaled or
// not, are added and read nowhere else: one kernel runs both K loops into
// the same accumulators (the K axes concatenated), so neither result goes
// through memory. The LoRA forward x·W + s·(x·A)·B and the dx of its
// backward are such sums.
func (f *fuser) mergeTerms(groups []*Group) {
	for _, m := range groups {
		if m.Root == m.Anchor || !Kinds[m.Kind].Tiled || f.gone[m] || m.StagesLHS {
			continue
		}
		for _, add := range m.Nodes {
			if add.Op != ir.OpAdd || len(m.Terms) > 0 {
				continue
			}
			var terms []Term
			var other *Group
			for _, in := range add.Inputs {
				c, scale := scaledContraction(in, f.uses)
				if c == nil || len(f.member[c]) != 1 {
					break
				}
				g := f.member[c][0]
				switch {
				case g == m && c == m.Anchor:
					terms = append([]Term{{c, scale}}, terms...)
				case g != m && g.Kind == m.Kind && g.Root == c && g.Anchor == c && !f.gone[g] && !g.StagesLHS && sameContraction(c, m.Anchor):
					other = g
					terms = append(terms, Term{c, scale})
				}
			}
			if len(terms) != 2 || other == nil || terms[0].Node != m.Anchor || !f.fits(m, other) {
				continue
			}
			m.Terms, m.Sum = terms, add.Out()
			m.Epilogue = map[*ir.Value][]*ir.Node{m.Sum: m.Epilogue[m.Anchor.Out()]} // the sum is what the kernel finishes
			f.fold(m, other)
		}
	}
}

// contractionSum reports whether n adds two contractions' results that
// nothing else reads: it stays a kernel's root, so it can become the sum
// of two K loops (mergeTerms) rather than a consumer's prologue.
func contractionSum(n *ir.Node, uses map[*ir.Value][]*ir.Node) bool {
	if n.Op != ir.OpAdd {
		return false
	}
	a, _ := scaledContraction(n.Inputs[0], uses)
	b, _ := scaledContraction(n.Inputs[1], uses)
	return a != nil && b != nil && a != b && sameContraction(a, b)
}

// scaledContraction finds the contraction behind v = c or v = scale(c)
// when that chain is c's only reader: then c need not exist by itself.
func scaledContraction(v *ir.Value, uses map[*ir.Value][]*ir.Node) (*ir.Node, float64) {
	scale := 1.0
	if v.Node.Op == ir.OpScale && len(uses[v]) == 1 {
		scale = v.Node.Attrs.Float("factor")
		v = v.Node.Inputs[0]
	}
	if (v.Node.Op != ir.OpMatmul && v.Node.Op != ir.OpGroupedMM) || len(uses[v]) != 1 {
		return nil, 0
	}
	return v.Node, scale
}

// sameContraction reports whether a and b compute results of one shape
// over the same rows: for grouped matmuls, the same expert offsets.
func sameContraction(a, b *ir.Node) bool {
	if a.Op != b.Op || !a.Out().Type.Equal(b.Out().Type) {
		return false
	}
	return a.Op != ir.OpGroupedMM || a.Inputs[2] == b.Inputs[2]
}
