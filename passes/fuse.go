package passes

import (
	"slices"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// Group is one kernel of the schedule: the nodes it computes, in graph
// order, and the values it writes to memory. Kind names the kernel's kind
// (Kinds): codegen lowers it with the template of that name.
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
	case ir.OpConst: // a source, but computed where read
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

// KindPointwise is the kind of kernels of element-wise and layout ops only.
const KindPointwise = "pointwise"

// KindOf is the kind of a group anchored at op: KindPointwise for a
// pointwise op, else the op's name.
func KindOf(op ir.Op) string {
	if Pointwise(op) {
		return KindPointwise
	}
	return string(op)
}

// Prologue is what a kernel kind computes inline of the producers of what
// it reads.
type Prologue uint8

const (
	// PrologueIndexMaps: only index maps, since the kernel reads each
	// operand element many times (XLA's rule: never re-read a large input,
	// or redo arithmetic, many times).
	PrologueIndexMaps Prologue = iota + 1
	// ProloguePointwise: any pointwise producer but adamw: the kernel reads
	// each operand element once.
	ProloguePointwise
)

// KindDef is what fusion knows of a kind of kernel; codegen lowers each
// kind with a template of that name (a test checks that both agree).
type KindDef struct {
	Prologue Prologue
	// Epilogue lists the anchor results the template writes element by
	// element through codegen's StoreThrough: an element-wise chain may
	// follow those.
	Epilogue []int
	// RowEpilogue: a reduction of the last axis whose template computes
	// element-wise work over each row once its result is known.
	RowEpilogue bool
	// Tiled: a contraction whose template stages its lhs in tiles, so it
	// may compute the lhs's producers while staging (few columns) and sum
	// several contractions in one accumulator (LoRA).
	Tiled bool
}

// Kinds lists every kind of kernel by name.
var Kinds = map[string]KindDef{
	KindPointwise: {Prologue: ProloguePointwise},

	string(ir.OpSoftmax):         {Prologue: ProloguePointwise, Epilogue: []int{0}},
	string(ir.OpRMSNorm):         {Prologue: ProloguePointwise, Epilogue: []int{0}},
	string(ir.OpRMSNormBwd):      {Prologue: ProloguePointwise, Epilogue: []int{0}}, // dx
	string(ir.OpCrossEntropy):    {Prologue: ProloguePointwise},
	string(ir.OpCrossEntropyBwd): {Prologue: ProloguePointwise},
	string(ir.OpReduceSum):       {Prologue: ProloguePointwise, Epilogue: []int{0}, RowEpilogue: true},
	string(ir.OpReduceMax):       {Prologue: ProloguePointwise, Epilogue: []int{0}, RowEpilogue: true},
	string(ir.OpReduceMean):      {Prologue: ProloguePointwise, Epilogue: []int{0}, RowEpilogue: true},
	// The discretisation inputs (softplus, −exp) compute in the scan.
	string(ir.OpScan):    {Prologue: ProloguePointwise, Epilogue: []int{0}},    // y
	string(ir.OpScanBwd): {Prologue: ProloguePointwise, Epilogue: []int{0, 1}}, // du, dΔ

	string(ir.OpMatmul):     {Prologue: PrologueIndexMaps, Epilogue: []int{0}, Tiled: true},
	string(ir.OpGroupedMM):  {Prologue: PrologueIndexMaps, Epilogue: []int{0}, Tiled: true},
	string(ir.OpGroupedMMW): {Prologue: PrologueIndexMaps},
	string(ir.OpConv):       {Prologue: PrologueIndexMaps, Epilogue: []int{0}}, // y
	string(ir.OpConvBwd):    {Prologue: PrologueIndexMaps, Epilogue: []int{0}}, // dx
	string(ir.OpTopK):       {Prologue: PrologueIndexMaps},
	string(ir.OpMoERoute):   {Prologue: PrologueIndexMaps},
	string(ir.OpScatter):    {Prologue: PrologueIndexMaps},
}

// accepts reports whether a group of kind may compute producer p inline for
// its consumer: the fusion rules, by the kind's Prologue.
func accepts(kind string, p *ir.Node) bool {
	if !Pointwise(p.Op) {
		return false
	}
	switch Kinds[kind].Prologue {
	case ProloguePointwise:
		return p.Op != ir.OpAdamW
	case PrologueIndexMaps:
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
	bb := newBudget(uses, kept)
	var groups []*Group
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		n := g.Nodes[i]
		if n.Op == ir.OpInput || n.Op == ir.OpParam || dead(n, uses, kept, member) {
			continue
		}
		if fuse && !anyKept(n, kept) && !contractionSum(n, uses) {
			targets := consumerGroups(n, uses, member)
			if len(targets) > 0 && bb.allFit(targets, n) && (allAccept(targets, n) && (len(targets) == 1 || indexMap(n.Op)) ||
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
			if t := storingReader(n, targets, bb); t != nil {
				t.Nodes = append(t.Nodes, n)
				member[n] = []*Group{t}
				continue
			}
		}
		grp := &Group{Kind: KindOf(n.Op), Nodes: []*ir.Node{n}, Root: n, Anchor: n}
		member[n] = []*Group{grp}
		groups = append(groups, grp)
	}
	if fuse {
		f := &fuser{uses: uses, member: member, kept: kept, gone: map[*Group]bool{}, budget: bb}
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

// fuser holds what the merging steps of Fuse share: each folds groups
// into others, which Fuse then drops (rest).
type fuser struct {
	uses   map[*ir.Value][]*ir.Node
	member map[*ir.Node][]*Group // the groups computing each node
	kept   map[*ir.Value]bool
	gone   map[*Group]bool // folded into another
	budget *budget
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
	return f.budget.fitsBoth(g, p)
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
func storingReader(n *ir.Node, readers []*Group, bb *budget) *Group {
	if len(readers) < 2 || !Pointwise(n.Op) || n.Op == ir.OpAdamW || len(n.Outputs) != 1 {
		return nil
	}
	var first *Group
	for _, t := range readers {
		if first == nil || t.Root.ID < first.Root.ID {
			first = t
		}
	}
	if first.Kind != KindPointwise || !first.Root.Out().Type.Shape.Equal(n.Out().Type.Shape) {
		return nil
	}
	if !bb.allFit([]*Group{first}, n) {
		return nil
	}
	for _, t := range readers {
		if t != first && t.Root.ID == first.Root.ID {
			return nil
		}
	}
	return first
}

func inGroup(g *Group, n *ir.Node) bool {
	for _, x := range g.Nodes {
		if x == n {
			return true
		}
	}
	return false
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
func (bb *budget) allFit(gs []*Group, n *ir.Node) bool {
	for _, g := range gs {
		if bb.of(g).with(n) > MaxBuffers {
			return false
		}
	}
	return true
}

// budget keeps, for each group, the count of buffers it binds (what
// jointBuffers would say) up to date as nodes join it, so asking whether one
// more node fits costs that node's operands and readers rather than a pass
// over the group: Fuse stays linear on a chain of thousands of ops that all
// join one kernel.
type budget struct {
	uses   map[*ir.Value][]*ir.Node
	kept   map[*ir.Value]bool
	groups map[*Group]*groupBuffers
}

func newBudget(uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool) *budget {
	return &budget{uses: uses, kept: kept, groups: map[*Group]*groupBuffers{}}
}

// groupBuffers is what one group binds: values it reads from outside, and
// for each value its nodes compute, how many readers it has outside.
type groupBuffers struct {
	bb      *budget
	nodes   []*ir.Node // the group's nodes accounted, in the order they joined
	in      map[*ir.Node]bool
	readsIn map[*ir.Value]int // each value's occurrences among the inputs of in
	reads   map[*ir.Value]bool
	outside map[*ir.Value]int
	count   int
}

// of returns g's account, catching up with the nodes appended to g.Nodes
// since it was last asked (groups only ever grow by appending); it starts
// over if g.Nodes no longer begins with the nodes accounted.
func (bb *budget) of(g *Group) *groupBuffers {
	a := bb.groups[g]
	if a != nil && (len(g.Nodes) < len(a.nodes) || len(a.nodes) > 0 && g.Nodes[len(a.nodes)-1] != a.nodes[len(a.nodes)-1]) {
		a = nil
	}
	if a == nil {
		a = &groupBuffers{bb: bb, in: map[*ir.Node]bool{}, readsIn: map[*ir.Value]int{}, reads: map[*ir.Value]bool{}, outside: map[*ir.Value]int{}}
		bb.groups[g] = a
	}
	for _, n := range g.Nodes[len(a.nodes):] {
		a.add(n)
	}
	return a
}

// bufferCost is the buffers a value read from memory binds: an NF4 weight
// binds one per section, four.
func bufferCost(v *ir.Value) int {
	if v.Type.DType == ir.NF4 {
		return 4
	}
	return 1
}

func (a *groupBuffers) escapes(v *ir.Value, outside int) bool { return a.bb.kept[v] || outside > 0 }

// delta is the change in a's count if n joined; with commit set, n joins.
func (a *groupBuffers) delta(n *ir.Node, commit bool) int {
	d := 0
	if commit {
		if !a.in[n] {
			for _, w := range n.Inputs {
				a.readsIn[w]++
			}
		}
		a.in[n] = true
		a.nodes = append(a.nodes, n)
	}
	for _, v := range n.Outputs {
		if a.reads[v] {
			d -= bufferCost(v)
			if commit {
				delete(a.reads, v)
			}
		}
		// Readers outside: v's uses less the group's reads of it (n
		// cannot read its own output). Counted, not searched, as a value
		// may have thousands of readers (a scale every update reads).
		c := len(a.bb.uses[v]) - a.readsIn[v]
		if a.escapes(v, c) {
			d++
		}
		if commit {
			a.outside[v] = c
		}
	}
	for i, w := range n.Inputs {
		if slices.Contains(n.Inputs[:i], w) {
			continue // counted with its first occurrence
		}
		if a.in[w.Node] {
			k := 0 // n's reads of w: each was a reader outside
			for _, x := range n.Inputs[i:] {
				if x == w {
					k++
				}
			}
			before := a.outside[w]
			if a.escapes(w, before) && !a.escapes(w, before-k) {
				d--
			}
			if commit {
				a.outside[w] = before - k
			}
		} else if !a.reads[w] {
			d += bufferCost(w)
			if commit {
				a.reads[w] = true
			}
		}
	}
	if commit {
		a.count += d
	}
	return d
}

func (a *groupBuffers) add(n *ir.Node)      { a.delta(n, true) }
func (a *groupBuffers) with(n *ir.Node) int { return a.count + a.delta(n, false) }

// fitsBoth reports whether one kernel computing g and p binds at most
// MaxBuffers, counted afresh: the merging steps that ask fold few groups.
func (bb *budget) fitsBoth(g, p *Group) bool {
	return jointBuffers(append(append([]*ir.Node(nil), g.Nodes...), p.Nodes...), bb.uses, bb.kept) <= MaxBuffers
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
					total += v.Stored().Bytes()
				}
			}
		}
		for _, v := range grp.Outputs {
			total += v.Stored().Bytes()
		}
	}
	return total
}
