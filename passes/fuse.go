package passes

import (
	"slices"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// Group is one kernel of the schedule: the nodes it computes, in graph
// order, and the values it writes to memory. Kind names the kernel template.
type Group struct {
	Kind    string
	Nodes   []*ir.Node
	Outputs []*ir.Value
	// Root is the group's last node: the group runs where it stands.
	Root *ir.Node
	// Anchor is the op the kernel template is chosen by (the matmul of a
	// matmul with an epilogue); for other groups it is Root.
	Anchor *ir.Node
	// Terms, when set, are contractions whose scaled results one accumulator
	// sums (x·W + s·(x·A)·B, LoRA in one kernel): Terms[0] is the Anchor,
	// and Sum is the value of the sum, which the epilogue reads.
	Terms []Term
	Sum   *ir.Value
	// Epilogue lists, for a result of the anchor (or Sum), the element-wise
	// nodes computed where the kernel finishes each of its elements.
	Epilogue map[*ir.Value][]*ir.Node
	// StagesLHS is set when a contraction computes producers of its lhs
	// other than index maps while it stages it (see lhsPrologue).
	StagesLHS bool
	// RowEpilogue, for a reduction over rows, are element-wise nodes computed
	// over each row once its result is known, which they read broadcast
	// along the row (x / Σx, p·(dy − Σ p·dy)).
	RowEpilogue []*ir.Node
}

// Finished lists the values a kernel has at hand where it finishes an
// element of v: v, and the results of v's epilogue.
func (g *Group) Finished(v *ir.Value) map[*ir.Value]bool {
	out := map[*ir.Value]bool{v: true}
	for _, n := range g.Epilogue[v] {
		for _, o := range n.Outputs {
			out[o] = true
		}
	}
	return out
}

// Term is one contraction of a sum, and the factor its result is scaled by.
type Term struct {
	Node  *ir.Node
	Scale float64
}

// Schedule is the fused kernel order of a graph.
type Schedule struct {
	Groups []*Group
	// Alias maps the output of a reshape that needs no kernel to its operand:
	// both name the same memory.
	Alias map[*ir.Value]*ir.Value
	// Fused is set when fusion ran; codegen then also launches independent
	// kernels together (horizontal fusion).
	Fused bool
}

// Pointwise reports whether an op computes each output element from operand
// elements at mapped coordinates, so any kernel can compute it inline.
func Pointwise(op ir.Op) bool {
	switch op {
	case ir.OpScatter, ir.OpInput, ir.OpParam:
		return false
	case ir.OpConst, ir.OpDequant, ir.OpGE, ir.OpAdamW:
		return true
	}
	d, _ := ir.Lookup(op)
	return d.Category == ir.Elementwise || d.Category == ir.Layout
}

// indexMap reports whether a pointwise op only moves or converts elements,
// or does one trivial operation (scale, negate): cheap enough to recompute
// in a kernel that reads each operand element many times, like a matmul.
func indexMap(op ir.Op) bool {
	switch op {
	case ir.OpReshape, ir.OpTranspose, ir.OpBroadcast, ir.OpSlice, ir.OpConcat, ir.OpGather, ir.OpCast, ir.OpDequant, ir.OpConst, ir.OpScale, ir.OpNeg:
		return true
	}
	return false
}

// kindOf is the kernel template for a group anchored at op.
func kindOf(op ir.Op) string {
	if Pointwise(op) {
		return "pointwise"
	}
	return string(op)
}

// accepts reports whether a group of kind may compute producer p inline for
// its consumer: the fusion rules. Pointwise kernels take any pointwise
// producer; reductions over rows take pointwise producers too (each element
// is read once); contractions only take index maps, since they read every
// operand element many times (XLA's rule: never re-read a large input, or
// redo arithmetic, many times).
func accepts(kind string, p *ir.Node) bool {
	if !Pointwise(p.Op) {
		return false
	}
	switch kind {
	case "pointwise", string(ir.OpSoftmax), string(ir.OpRMSNorm), string(ir.OpRMSNormBwd),
		string(ir.OpCrossEntropy), string(ir.OpCrossEntropyBwd), string(ir.OpReduceSum), string(ir.OpReduceMax), string(ir.OpReduceMean):
		return p.Op != ir.OpAdamW
	case string(ir.OpScan), string(ir.OpScanBwd):
		return p.Op != ir.OpAdamW // the discretisation inputs (softplus, −exp) compute in the scan
	case string(ir.OpMatmul), string(ir.OpGroupedMM), string(ir.OpGroupedMMW), string(ir.OpConv), string(ir.OpConvBwd),
		string(ir.OpTopK), string(ir.OpMoERoute), string(ir.OpScatter):
		return indexMap(p.Op)
	}
	return false
}

// Fuse groups the nodes of g into kernels. With fuse false every op is its
// own kernel (the baseline that --no-fuse reports). Reshapes of values in
// memory become aliases in both modes.
//
// The rules, applied from the last node back:
//   - a producer whose every reader is in one group that accepts it joins
//     that group (a prologue, or part of an element-wise chain);
//   - an index map (slice, broadcast, transpose, dequant...) read by several
//     groups that all accept it is copied into each: recomputing an address
//     is cheaper than a round trip through memory;
//   - an element-wise chain that reads a matmul's result at the same
//     elements, and is its only reader, becomes the matmul's epilogue.
func Fuse(g *ir.Graph, fuse bool) *Schedule {
	uses := g.Uses()
	kept := map[*ir.Value]bool{} // values a graph table needs in memory
	for _, v := range g.Results() {
		kept[v] = true
	}
	member := map[*ir.Node][]*Group{} // the groups computing each node
	var groups []*Group
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		n := g.Nodes[i]
		if n.Op == ir.OpInput || n.Op == ir.OpParam || dead(n, uses, kept, member) {
			continue
		}
		if fuse && !anyKept(n, kept) && !contractionSum(n, uses) {
			targets := consumerGroups(n, uses, member)
			if len(targets) > 0 && allFit(targets, n, uses, kept) && (allAccept(targets, n) && (len(targets) == 1 || indexMap(n.Op)) ||
				len(targets) == 1 && lhsPrologue(targets[0], n, uses)) {
				if len(targets) == 1 && !accepts(targets[0].Kind, n) {
					targets[0].StagesLHS = true
				}
				for _, t := range targets {
					t.Nodes = append(t.Nodes, n)
					member[n] = append(member[n], t)
				}
				continue
			}
			if t := storingReader(n, targets, uses, kept); t != nil {
				t.Nodes = append(t.Nodes, n)
				member[n] = []*Group{t}
				continue
			}
		}
		grp := &Group{Kind: kindOf(n.Op), Nodes: []*ir.Node{n}, Root: n, Anchor: n}
		member[n] = []*Group{grp}
		groups = append(groups, grp)
	}
	if fuse {
		f := &fuser{uses: uses, member: member, kept: kept, gone: map[*Group]bool{}}
		f.mergeEpilogues(groups)
		f.mergeRowEpilogues(groups)
		f.mergeRouting(groups)
		f.mergeTerms(groups)
		f.mergeLHSProducers(groups)
		groups = f.rest(groups)
	}
	s := &Schedule{Alias: map[*ir.Value]*ir.Value{}, Fused: fuse}
	for _, grp := range groups {
		sort.Slice(grp.Nodes, func(i, j int) bool { return grp.Nodes[i].ID < grp.Nodes[j].ID })
		if grp.Root.Op == ir.OpReshape && len(grp.Nodes) == 1 {
			s.Alias[grp.Root.Out()] = grp.Root.Inputs[0]
			continue
		}
		for _, n := range grp.Nodes {
			for _, v := range n.Outputs {
				if kept[v] || usedOutside(v, grp, uses, member) {
					grp.Outputs = append(grp.Outputs, v)
				}
			}
		}
		s.Groups = append(s.Groups, grp)
	}
	sort.Slice(s.Groups, func(i, j int) bool { return s.Groups[i].Root.ID < s.Groups[j].Root.ID })
	// Chains of aliases resolve to the first value in memory.
	for v, src := range s.Alias {
		for s.Alias[src] != nil {
			src = s.Alias[src]
		}
		s.Alias[v] = src
	}
	return s
}

// epilogueResults lists, by kernel kind, the anchor results its template
// writes element by element through codegen's StoreThrough: an element-wise
// chain may follow those.
var epilogueResults = map[string][]int{
	string(ir.OpMatmul): {0}, string(ir.OpGroupedMM): {0},
	string(ir.OpConv): {0}, string(ir.OpConvBwd): {0}, // y; dx
	string(ir.OpScan): {0}, string(ir.OpScanBwd): {0, 1}, // y; du, dΔ
	string(ir.OpRMSNorm): {0}, string(ir.OpRMSNormBwd): {0}, string(ir.OpSoftmax): {0}, // y; dx; y
	string(ir.OpReduceSum): {0}, string(ir.OpReduceMax): {0}, string(ir.OpReduceMean): {0},
}

// fuser holds what the merging steps of Fuse share: each folds groups
// into others, which Fuse then drops (rest).
type fuser struct {
	uses   map[*ir.Value][]*ir.Node
	member map[*ir.Node][]*Group // the groups computing each node
	kept   map[*ir.Value]bool
	gone   map[*Group]bool // folded into another
}

// fold moves p's nodes into g.
func (f *fuser) fold(g, p *Group) {
	g.Nodes = append(g.Nodes, p.Nodes...)
	for _, q := range p.Nodes {
		f.member[q] = replaceGroup(f.member[q], p, g)
	}
	f.gone[p] = true
}

// fits reports whether one kernel computing g and p binds at most MaxBuffers.
func (f *fuser) fits(g, p *Group) bool {
	return jointBuffers(append(append([]*ir.Node(nil), g.Nodes...), p.Nodes...), f.uses, f.kept) <= MaxBuffers
}

// rest lists the groups not folded into others.
func (f *fuser) rest(groups []*Group) []*Group {
	out := groups[:0]
	for _, grp := range groups {
		if !f.gone[grp] {
			out = append(out, grp)
		}
	}
	return out
}

// foldElementwise offers each element-wise group, in graph order, to the
// kernel computing each value it reads; try accepts it (and records how the
// kernel will compute it), and the kernel then runs at the group's place.
// Graph order lets a chain of such groups join link by link.
func (f *fuser) foldElementwise(groups []*Group, try func(m, p *Group, v *ir.Value) bool) {
	for i := len(groups) - 1; i >= 0; i-- {
		p := groups[i]
		if p.Kind != "pointwise" || len(p.Root.Outputs) != 1 || f.gone[p] {
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
	switch r.Kind {
	case string(ir.OpReduceSum), string(ir.OpReduceMax), string(ir.OpReduceMean):
	default:
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

// readsFrom lists the values a group reads that it does not compute, in
// graph order of its nodes.
func readsFrom(g *Group) []*ir.Value {
	in := map[*ir.Node]bool{}
	for _, n := range g.Nodes {
		in[n] = true
	}
	nodes := append([]*ir.Node(nil), g.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	var out []*ir.Value
	seen := map[*ir.Value]bool{}
	for _, n := range nodes {
		for _, v := range n.Inputs {
			if !in[v.Node] && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
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
	for _, i := range epilogueResults[m.Kind] {
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

// readersAfter reports whether every other group reading a result of m
// runs after p: m moves to p's place when p joins it.
func readersAfter(m, p *Group, uses map[*ir.Value][]*ir.Node, member map[*ir.Node][]*Group) bool {
	for _, n := range m.Nodes {
		if len(member[n]) > 1 {
			continue // an index map copied into each reader: recomputed there
		}
		for _, v := range n.Outputs {
			for _, u := range uses[v] {
				for _, g := range member[u] {
					if g != m && g != p && g.Root.ID < p.Root.ID {
						return false
					}
				}
			}
		}
	}
	return true
}

// storingReader picks the element-wise kernel that computes n and also
// stores its result for n's other readers (XLA's multi-output fusion): the
// first to run of n's readers with n's shape, when every other reader runs
// after it. Nil when there is none.
func storingReader(n *ir.Node, readers []*Group, uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool) *Group {
	if len(readers) < 2 || !Pointwise(n.Op) || n.Op == ir.OpAdamW || len(n.Outputs) != 1 {
		return nil
	}
	var first *Group
	for _, t := range readers {
		if first == nil || t.Root.ID < first.Root.ID {
			first = t
		}
	}
	if first.Kind != "pointwise" || !first.Root.Out().Type.Shape.Equal(n.Out().Type.Shape) {
		return nil
	}
	if !allFit([]*Group{first}, n, uses, kept) {
		return nil
	}
	for _, t := range readers {
		if t != first && t.Root.ID == first.Root.ID {
			return nil
		}
	}
	return first
}

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
	if g.Kind != string(ir.OpMatmul) && g.Kind != string(ir.OpGroupedMM) || len(g.Terms) > 0 {
		return false
	}
	out := g.Anchor.Out().Type.Shape
	if out[len(out)-1] > fewColumns || len(n.Outputs) == 0 {
		return false
	}
	if !stageable(n, uses) {
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
		if f.gone[t] || (t.Kind != string(ir.OpMatmul) && t.Kind != string(ir.OpGroupedMM)) || len(t.Terms) > 0 {
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
// staging: t has few columns; p's nodes are element-wise, convs or conv
// input gradients; t reads p's results only in its lhs chain; and every
// result of p read elsewhere maps one to one onto lhs elements (so t writes
// each element once) and is read only after t.
func (f *fuser) foldsIntoLHS(t, p *Group) bool {
	uses, member := f.uses, f.member
	out := t.Anchor.Out().Type.Shape
	if out[len(out)-1] > fewColumns || len(p.RowEpilogue) > 0 || len(p.Terms) > 0 {
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

func inGroup(g *Group, n *ir.Node) bool {
	for _, x := range g.Nodes {
		if x == n {
			return true
		}
	}
	return false
}

// mergeTerms joins two contractions of one kind whose results, scaled or
// not, are added and read nowhere else: one kernel runs both K loops into
// the same accumulators (the K axes concatenated), so neither result goes
// through memory. The LoRA forward x·W + s·(x·A)·B and the dx of its
// backward are such sums.
func (f *fuser) mergeTerms(groups []*Group) {
	for _, m := range groups {
		if m.Root == m.Anchor || (m.Kind != string(ir.OpMatmul) && m.Kind != string(ir.OpGroupedMM)) || f.gone[m] || m.StagesLHS {
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

func replaceGroup(gs []*Group, from, to *Group) []*Group {
	for i, g := range gs {
		if g == from {
			gs[i] = to
		}
	}
	return gs
}

// dead reports whether no output of n is kept or read by a node that some
// group computes (the nodes after n are placed already, dead ones in none).
func dead(n *ir.Node, uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool, member map[*ir.Node][]*Group) bool {
	for _, v := range n.Outputs {
		if kept[v] {
			return false
		}
		for _, u := range uses[v] {
			if len(member[u]) > 0 {
				return false
			}
		}
	}
	return true
}

func anyKept(n *ir.Node, kept map[*ir.Value]bool) bool {
	for _, v := range n.Outputs {
		if kept[v] {
			return true
		}
	}
	return false
}

// consumerGroups lists the groups that read an output of n, in first-seen
// order, or nil when some reader belongs to no group yet.
func consumerGroups(n *ir.Node, uses map[*ir.Value][]*ir.Node, member map[*ir.Node][]*Group) []*Group {
	var out []*Group
	seen := map[*Group]bool{}
	for _, v := range n.Outputs {
		for _, u := range uses[v] {
			gs := member[u]
			if len(gs) == 0 {
				return nil
			}
			for _, g := range gs {
				if !seen[g] {
					seen[g] = true
					out = append(out, g)
				}
			}
		}
	}
	return out
}

// MaxBuffers bounds the buffers one kernel binds, well under Metal's 31.
const MaxBuffers = 24

// allFit reports whether every group can take n without binding more than
// MaxBuffers buffers.
func allFit(gs []*Group, n *ir.Node, uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool) bool {
	for _, g := range gs {
		if jointBuffers(append([]*ir.Node{n}, g.Nodes...), uses, kept) > MaxBuffers {
			return false
		}
	}
	return true
}

// boundBuffers counts the buffers a kernel computing nodes binds: the values
// they read that none of them computes (an NF4 weight binds one per section:
// four), and the results it writes.
func boundBuffers(nodes []*ir.Node, results []*ir.Value) int {
	in := map[*ir.Node]bool{}
	for _, x := range nodes {
		in[x] = true
	}
	seen := map[*ir.Value]bool{}
	count := 0
	for _, x := range nodes {
		for _, v := range x.Inputs {
			if in[v.Node] || seen[v] {
				continue
			}
			seen[v] = true
			count++
			if v.Type.DType == ir.NF4 {
				count += 3
			}
		}
	}
	for _, v := range results {
		if !seen[v] {
			seen[v] = true
			count++
		}
	}
	return count
}

// jointBuffers counts the buffers one kernel computing nodes binds: what
// they read from outside and what they write for readers outside (or keep).
func jointBuffers(nodes []*ir.Node, uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool) int {
	in := map[*ir.Node]bool{}
	for _, n := range nodes {
		in[n] = true
	}
	var results []*ir.Value
	for _, n := range nodes {
		for _, v := range n.Outputs {
			escapes := kept[v]
			for _, u := range uses[v] {
				escapes = escapes || !in[u]
			}
			if escapes {
				results = append(results, v)
			}
		}
	}
	return boundBuffers(nodes, results)
}

func allAccept(gs []*Group, n *ir.Node) bool {
	for _, g := range gs {
		if !accepts(g.Kind, n) {
			return false
		}
	}
	return true
}

// usedOutside reports whether some reader of v runs in a group that does
// not compute v itself (copies of a duplicated index map compute it in each).
func usedOutside(v *ir.Value, grp *Group, uses map[*ir.Value][]*ir.Node, member map[*ir.Node][]*Group) bool {
	has := map[*Group]bool{}
	for _, g := range member[v.Node] {
		has[g] = true
	}
	for _, u := range uses[v] {
		for _, g := range member[u] {
			if !has[g] {
				return true
			}
		}
	}
	return false
}

// GlobalBytes estimates the device-memory traffic of one pass over the
// schedule: every kernel reads each value it takes from memory once and
// writes each output once.
func (s *Schedule) GlobalBytes() int64 {
	var total int64
	for _, grp := range s.Groups {
		inside := map[*ir.Node]bool{}
		for _, n := range grp.Nodes {
			inside[n] = true
		}
		read := map[*ir.Value]bool{}
		for _, n := range grp.Nodes {
			for _, v := range n.Inputs {
				if src, ok := s.Alias[v]; ok {
					v = src
				}
				if !inside[v.Node] && !read[v] {
					read[v] = true
					total += v.Type.Bytes()
				}
			}
		}
		for _, v := range grp.Outputs {
			total += v.Type.Bytes()
		}
	}
	return total
}
