package codegen

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/codegen/msl"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// maxParams is Metal's limit on buffer arguments of a kernel.
const maxParams = 31

// Dispatch is one kernel launch of the plan.
type Dispatch struct {
	Kernel          string
	Groups, Threads [3]int
	Bindings        []Binding
	// Writes are the values the launch leaves in memory.
	Writes []*ir.Value
	Fuses  []*ir.Node
	Kind   string
	// Exact are the values this launch reads only at the elements it writes
	// (known for a launch of one kernel; see shareUpdates).
	Exact map[*ir.Value]bool
}

// shareUpdates lets each update overwrite its parameter in place when that
// is safe: the launch that writes the update is the last to read the
// parameter, and reads it only at the elements it writes (AdamW). The
// update then names the parameter's memory (alias) and the kernel binds one
// buffer for both, which leaves room for more updates in one launch.
func shareUpdates(g *ir.Graph, ls []*launch, alias map[*ir.Value]*ir.Value) {
	lastRead := map[*ir.Value]int{}
	writer := map[*ir.Value]int{}
	for i, l := range ls {
		for _, b := range l.parts[0].d.Bindings {
			lastRead[b.Value] = i
		}
		for _, v := range l.parts[0].d.Writes {
			writer[v] = i
		}
	}
	params := paramsByName(g)
	for _, u := range g.Updates {
		prm := params[u.Param].Value
		w, ok := writer[u.Value]
		if !ok || lastRead[prm] != w || !ls[w].parts[0].d.Exact[prm] || !u.Value.Type.Equal(prm.Type) {
			continue
		}
		alias[u.Value] = prm
		ls[w].parts[0].bindAs(u.Value, prm)
	}
}

// bindAs makes the kernel write v through w's parameter: one buffer for both.
func (p *part) bindAs(v, w *ir.Value) {
	var from, to string
	var keep []Binding
	var params []kir.Param
	for i, b := range p.d.Bindings {
		switch b.Value {
		case v:
			from = p.k.Params[i].Name
			continue
		case w:
			to = p.k.Params[i].Name
		}
		keep = append(keep, b)
		params = append(params, p.k.Params[i])
	}
	if from == "" || to == "" {
		return
	}
	// Parameter names are positional: renumber after dropping one.
	rename := map[string]string{from: to}
	for i := range params {
		if params[i].Name == to {
			params[i].ReadOnly = false
		}
		rename[params[i].Name] = fmt.Sprintf("p%d", i)
		params[i].Name = rename[params[i].Name]
	}
	rename[from] = rename[to]
	p.k.Body = kir.Rewrite(p.k.Body, func(x kir.Expr) kir.Expr { return x }, func(n string) string {
		if r, ok := rename[n]; ok {
			return r
		}
		return n
	})
	p.k.Params, p.d.Bindings = params, keep
}

// Program is a compiled graph: the kernels (one module, one .metal file) and
// the launches of one step in order.
type Program struct {
	Module     *kir.Module
	Dispatches []Dispatch
	Alias      map[*ir.Value]*ir.Value
	// Scratch are values of no graph node that the lowering added: the
	// partials of a reduction split in two launches (split.go), written by
	// one launch and read by a later one. The memory plan places them like
	// any other temporary; the reference has no value for them.
	Scratch map[*ir.Value]bool
}

// A template lowers one group of a kind into the emitter's kernel, setting
// its threadgroup and grid sizes.
type template func(e *Emitter, grp *passes.Group) error

// templates holds one template for each kind of passes.Kinds, keyed alike
// (TestEveryKindHasATemplate).
var templates = map[string]template{
	passes.KindPointwise: pointwise,
}

// Templates lists the kernel kinds codegen can lower, sorted.
func Templates() []string {
	var out []string
	for k := range templates {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Compile lowers every group of the schedule, runs independent kernels of a
// fused schedule as one launch (see horizontal.go), and names the kernels.
// Kernels with identical code are emitted once and launched wherever they apply.
func Compile(g *ir.Graph, s *passes.Schedule) (*Program, error) {
	p := &Program{Module: &kir.Module{Tables: Tables()}, Scratch: map[*ir.Value]bool{}}
	scratch := newScratch(g, p.Scratch)
	var ls []*launch
	for _, grp := range s.Groups {
		parts, err := lowerGroup(grp, scratch)
		if err != nil {
			return nil, err
		}
		for _, pt := range parts {
			ls = append(ls, &launch{parts: []*part{pt}})
		}
	}
	alias := maps.Clone(s.Alias)
	shareUpdates(g, ls, alias)
	if s.Fused {
		ls = mergeLaunches(ls, alias)
	}
	p.Alias = alias
	byBody := map[string]string{} // rendered body → kernel name
	names := map[string]int{}
	for _, l := range ls {
		k, d, base := l.build()
		key, err := bodyKey(k)
		if err != nil {
			return nil, err
		}
		name, seen := byBody[key]
		if !seen {
			name = fmt.Sprintf("%s_%d", base, names[base])
			names[base]++
			byBody[key] = name
			k.Name = name
			p.Module.Kernels = append(p.Module.Kernels, k)
		}
		d.Kernel, d.Groups, d.Threads = name, k.Groups, k.Threads
		p.Dispatches = append(p.Dispatches, d)
	}
	return p, nil
}

// lowerGroup lowers one group with its template into an unnamed kernel, or
// a long reduction into two (see split.go).
func lowerGroup(grp *passes.Group, scratch func(ir.Type, *ir.Node) *ir.Value) ([]*part, error) {
	t, ok := templates[grp.Kind]
	if !ok {
		return nil, fmt.Errorf("codegen: no kernel template for %s (%s)", grp.Kind, grp.Root.Pos)
	}
	if sp := splitters[grp.Kind]; sp != nil {
		if s := sp(grp); s != nil {
			return lowerSplit(grp, s, scratch)
		}
	}
	pt, err := lowerPart(grp, describe(grp), kernelBase(grp), grp.Outputs, grp.Nodes, func(e *Emitter) error { return t(e, grp) })
	if err != nil {
		return nil, err
	}
	return []*part{pt}, nil
}

// lowerPart builds one kernel of a group with fn: it writes writes and
// computes the ops fuses (the ops the launch's cost counts).
func lowerPart(grp *passes.Group, doc, base string, writes []*ir.Value, fuses []*ir.Node, fn func(e *Emitter) error) (*part, error) {
	e := NewEmitter("", doc, grp.Nodes)
	if err := fn(e); err != nil {
		return nil, fmt.Errorf("codegen: %s at %s: %w", grp.Kind, grp.Root.Pos, err)
	}
	e.StageTables()
	e.K.Body = kir.Prune(e.K.Body)
	if len(e.K.Params) > maxParams {
		return nil, fmt.Errorf("codegen: a %s kernel at %s binds %d buffers, more than Metal's %d", grp.Kind, grp.Root.Pos, len(e.K.Params), maxParams)
	}
	exact := map[*ir.Value]bool{}
	for _, b := range e.Bindings {
		if e.ReadExactly(b.Value) {
			exact[b.Value] = true
		}
	}
	d := Dispatch{Bindings: e.Bindings, Writes: writes, Fuses: fuses, Kind: grp.Kind, Exact: exact}
	return &part{k: e.K, d: d, base: base, flat: isFlat(e.K)}, nil
}

// bodyKey identifies a kernel's code independently of its name and comment:
// its rendering (rendered text is the one form of a kernel that is both
// complete and cheap to compare).
func bodyKey(k *kir.Kernel) (string, error) {
	c := *k
	c.Name, c.Doc = "k", ""
	return msl.RenderKernel(&c)
}

// kernelBase names a kernel after what it does: its anchor op, or for
// element-wise kernels the first ops it fuses.
func kernelBase(grp *passes.Group) string {
	if grp.Kind != "pointwise" {
		return grp.Kind
	}
	var ops []string
	seen := map[ir.Op]bool{}
	for i := len(grp.Nodes) - 1; i >= 0 && len(ops) < 3; i-- {
		op := grp.Nodes[i].Op
		if !seen[op] && op != ir.OpBroadcast && op != ir.OpReshape && op != ir.OpConst {
			seen[op] = true
			ops = append(ops, string(op))
		}
	}
	if len(ops) == 0 {
		ops = []string{string(grp.Root.Op)}
	}
	return strings.Join(ops, "_")
}

// describe lists the IR ops a kernel computes, for its comment.
func describe(grp *passes.Group) string {
	var parts []string
	for _, n := range grp.Nodes {
		parts = append(parts, fmt.Sprintf("%s %v", n.Op, n.Outputs[0]))
	}
	doc := "fuses " + strings.Join(parts, ", ")
	if sc := grp.Root.Scope; sc != "" {
		doc += " (" + sc + ")"
	}
	return wrap(doc, 96)
}

func wrap(s string, width int) string {
	var lines []string
	for len(s) > width {
		cut := strings.LastIndex(s[:width], ", ")
		if cut < 0 {
			break
		}
		lines = append(lines, s[:cut+1])
		s = "  " + s[cut+2:]
	}
	return strings.Join(append(lines, s), "\n")
}

// pointwise computes a group of element-wise and layout ops: one thread per
// element of the outputs (all of one shape).
func pointwise(e *Emitter, grp *passes.Group) error {
	const threads = pointwiseThreads
	e.K.Threads = [3]int{threads, 1, 1}
	n, err := pointwisePart(e, grp, kir.Thread(0))
	e.K.Groups = [3]int{(n + threads - 1) / threads, 1, 1}
	return err
}

// pointwiseThreads is the threadgroup size of element-wise kernels.
const pointwiseThreads = 256

// pointwisePart emits one element-wise group for thread index i and
// returns its element count.
func pointwisePart(e *Emitter, grp *passes.Group, i kir.Expr) (int, error) {
	shape := grp.Outputs[0].Type.Shape
	for _, v := range grp.Outputs[1:] {
		if !v.Type.Shape.Equal(shape) {
			return 0, fmt.Errorf("outputs of different shapes: %v and %v", grp.Outputs[0].Type, v.Type)
		}
	}
	n := int(shape.Elems())
	idx := e.Let("i", kir.I32, i)
	if n%pointwiseThreads != 0 {
		e.Emit(kir.If{Cond: kir.Op(">=", idx, kir.I(n)), Then: []kir.Stmt{kir.Return{}}})
	}
	c := e.Split(shape, idx)
	for _, v := range grp.Outputs {
		e.Store(v, c, e.At(v, c))
	}
	return n, nil
}
