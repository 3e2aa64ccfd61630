package passes

// Epilogues: element-wise work a kernel does where it finishes its
// results (after each element, or over each row of a reduction), and the
// MoE routing kernel.

import (
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// foldElementwise offers each element-wise group, in graph order, to the
// kernel computing each value it reads; try accepts it (and records how the
// kernel will compute it), and the kernel then runs at the group's place.
// Graph order lets a chain of such groups join link by link.
func (f *fuser) foldElementwise(groups []*Group, try func(m, p *Group, v *ir.Value) bool) {
	for i := len(groups) - 1; i >= 0; i-- {
		p := groups[i]
		if p.Kind != KindPointwise || len(p.Root.Outputs) != 1 || f.gone[p] {
			continue
		}
		for _, v := range readsFrom(p) {
			src := f.member[v.Node]
			if len(src) != 1 || f.gone[src[0]] || src[0] == p {
				continue
			}
			m := src[0]
			if !readersAfter(m, p, f.uses, f.member) || !f.fits(m, p) || !try(m, p, v) {
				continue
			}
			f.fold(m, p)
			m.Root = p.Root
			break
		}
	}
}

// mergeEpilogues folds an element-wise group into the kernel whose result
// it reads at the same elements: the kernel computes the chain on each
// element it finishes and writes the chain's results (and its own, when
// others read it).
func (f *fuser) mergeEpilogues(groups []*Group) {
	f.foldElementwise(groups, func(m, p *Group, v *ir.Value) bool {
		base := epilogueBase(m, p, v)
		if base == nil || !v.Type.Shape.Equal(p.Root.Out().Type.Shape) || !readsElementwise(p, v) {
			return false
		}
		if m.Epilogue == nil {
			m.Epilogue = map[*ir.Value][]*ir.Node{}
		}
		m.Epilogue[base] = append(m.Epilogue[base], p.Nodes...)
		return true
	})
}

// mergeRowEpilogues folds an element-wise group into the row reduction
// whose result it reads broadcast along the reduced rows: the reduction's
// kernel has each row's result at hand, so it computes the group over the
// row right after (softmax's backward, a renormalisation).
func (f *fuser) mergeRowEpilogues(groups []*Group) {
	f.foldElementwise(groups, func(r, p *Group, v *ir.Value) bool {
		if !rowEpilogue(r, p, v, f.uses) {
			return false
		}
		r.RowEpilogue = append(r.RowEpilogue, p.Nodes...)
		return true
	})
}

// mergeRouting makes MoE routing one kernel. Top-k runs a thread per row of
// router scores, so that thread can also compute the softmax it selects
// from (written too when the aux loss or the backward pass reads it) and
// the renormalisation of the chosen weights (a sum over the k values with
// its row epilogue, the division).
func (f *fuser) mergeRouting(groups []*Group) {
	join := func(t, g *Group) bool {
		if f.gone[g] || g == t || !readersAfter(g, t, f.uses, f.member) || !f.fits(t, g) {
			return false
		}
		f.fold(t, g)
		return true
	}
	for _, t := range groups {
		if t.Kind != string(ir.OpTopK) || t.Root != t.Anchor || f.gone[t] {
			continue
		}
		if x := t.Anchor.Inputs[0]; len(f.member[x.Node]) == 1 {
			s := f.member[x.Node][0]
			if s.Kind == string(ir.OpSoftmax) && s.Anchor == x.Node && s.Root == s.Anchor && len(s.Nodes) == 1 {
				join(t, s)
			}
		}
		vals := t.Anchor.Outputs[0]
		for _, u := range f.uses[vals] {
			if len(f.member[u]) != 1 {
				continue
			}
			r := f.member[u][0]
			if r.Kind == string(ir.OpReduceSum) && r.Anchor == u && len(r.RowEpilogue) > 0 && len(r.Nodes) == 1+len(r.RowEpilogue) {
				root := r.Root
				if readersAfter(t, r, f.uses, f.member) && join(t, r) {
					t.RowEpilogue, t.Root = r.RowEpilogue, root
				}
				break
			}
		}
	}
}

// rowEpilogue reports whether p may follow reduction r over its rows: r
// reduces trailing axes keeping them (v has r's input rank), p's result has
// r's rows with a last axis of its own, and p reads v only through
// broadcasts to that shape.
func rowEpilogue(r, p *Group, v *ir.Value, uses map[*ir.Value][]*ir.Node) bool {
	if !Kinds[r.Kind].RowEpilogue {
		return false
	}
	if r.Root != r.Anchor || v != r.Anchor.Out() || len(r.RowEpilogue) > 0 {
		return false
	}
	in := r.Anchor.Inputs[0].Type.Shape
	axes := r.Anchor.Attrs.Ints("axes")
	if len(v.Type.Shape) != len(in) || len(axes) != 1 || axes[0] != len(in)-1 {
		return false
	}
	out := p.Root.Out().Type.Shape
	if len(out) != len(in) || !out[:len(in)-1].Equal(in[:len(in)-1]) {
		return false
	}
	inP := map[*ir.Node]bool{}
	for _, n := range p.Nodes {
		inP[n] = true
	}
	for _, u := range uses[v] {
		if inP[u] && (u.Op != ir.OpBroadcast || !u.Out().Type.Shape.Equal(out)) {
			return false
		}
	}
	return true
}

// derived lists the values of g computed element-wise from v, v included.
func (g *Group) derived(v *ir.Value) map[*ir.Value]bool {
	nodes := append([]*ir.Node(nil), g.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	down := map[*ir.Value]bool{v: true}
	for _, n := range nodes {
		if !Pointwise(n.Op) {
			continue
		}
		for _, x := range n.Inputs {
			if down[x] {
				for _, o := range n.Outputs {
					down[o] = true
				}
				break
			}
		}
	}
	return down
}

// epilogueBase finds the result of m's anchor that p may run
// as an epilogue of, reading v: v is that result or one its epilogue
// computes, and every other value p reads from m is too or is a prologue
// index map (recomputed in place), never another result of a multi-result
// anchor. Nil when there is none.
func epilogueBase(m, p *Group, v *ir.Value) *ir.Value {
	var bases []*ir.Value
	for _, i := range Kinds[m.Kind].Epilogue {
		bases = append(bases, m.Anchor.Outputs[i])
	}
	inM := map[*ir.Node]bool{}
	for _, n := range m.Nodes {
		inM[n] = true
	}
	for _, base := range bases {
		at := m.Finished(base)
		if !at[v] {
			continue
		}
		for _, x := range readsFrom(p) {
			if inM[x.Node] && !at[x] && !indexMap(x.Node.Op) {
				return nil
			}
		}
		return base
	}
	return nil
}

// readsElementwise reports whether every node of p downstream of v is
// element-wise with p's output shape: then p reads v exactly at the elements
// it writes, and may be the epilogue of v's producer.
func readsElementwise(p *Group, v *ir.Value) bool {
	shape := p.Root.Out().Type.Shape
	for x := range p.derived(v) {
		if x == v {
			continue
		}
		n := x.Node
		d, _ := ir.Lookup(n.Op)
		if d.Category != ir.Elementwise || n.Op == ir.OpAdamW || len(n.Outputs) != 1 || !n.Out().Type.Shape.Equal(shape) {
			return false
		}
	}
	return true
}
