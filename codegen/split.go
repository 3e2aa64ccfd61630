package codegen

import (
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Two-pass reductions. A reduction whose output has few elements, each
// summing many, runs in one launch on few threadgroups: the loss over a
// chunk of logits and the RMSNorm γ-gradient on one, the gradient-norm
// parts on one per parameter group. A threadgroup runs on one GPU core, so
// the rest of the GPU idles (on an H100, such launches streamed 7–15 GB/s of
// its 3,350). Such a group is lowered as two launches instead:
//
//   - pass 1: many threadgroups, each reducing a fixed slice of the elements
//     into its own element of a partials buffer (and, for rmsnorm_bwd,
//     writing dx for its rows);
//   - pass 2: the partials of each output folded in slice order, then what
//     the one-launch kernel did with the result (mean's division, the
//     element-wise epilogue, the row epilogue).
//
// Each partial sums its slice in a fixed order and pass 2 folds the partials
// in a fixed order, so the result is the same on every run (it differs from
// the one-launch kernel's by rounding only). The partials buffer is a value
// of no graph node (Program.Scratch): the memory plan places it as any other
// temporary, and the per-kernel checks carry pass 1's partials to pass 2 and
// compare pass 2's result with the reference.
const (
	// splitBelowGroups: a reduction is split only when its one-launch
	// grid has fewer threadgroups than this, half an H100's 132 SMs (an
	// M4's 10 cores fill with fewer, but the one-threadgroup reductions
	// this is for leave 9 of them idle too)...
	splitBelowGroups = 64
	// splitMinGroupElems: ... and each of those threadgroups reads at
	// least this many elements. At the 15 GB/s one threadgroup streamed on
	// the H100, 64Ki f32 take 17 µs, three times the 5 µs a launch costs
	// in the cost model: below that the second launch is not worth it.
	splitMinGroupElems = 64 << 10
	// splitSliceElems is about the fewest elements a pass-1 threadgroup
	// reduces (16 per thread of 1024), so that each threadgroup's partial,
	// written once and read once, is at most 1/8192 of the traffic it
	// saves a core from streaming alone.
	splitSliceElems = 16 << 10
	// splitMaxGroups bounds pass 1's grid (and so the partials per output).
	splitMaxGroups = 1024
)

// split is how a group's reduction runs as two launches.
type split struct {
	// partials is the type of the buffer pass 1 writes and pass 2 reads.
	partials ir.Type
	// pass1 and pass2 emit the two kernels; p is the partials buffer.
	pass1, pass2 func(e *Emitter, p *ir.Value)
	// early reports the group's outputs pass 1 writes (rmsnorm_bwd's dx);
	// nil: pass 2 writes them all.
	early func(v *ir.Value) bool
}

// splitters say, for the kinds that can split, whether a group's reduction
// is long enough to (nil: one launch) and how.
var splitters = map[string]func(grp *passes.Group) *split{}

// splitWorth reports whether a one-launch reduction on groups threadgroups
// that reads elems elements in all leaves most of the GPU idle.
func splitWorth(groups int, elems int64) bool {
	return groups < splitBelowGroups && elems/int64(groups) >= splitMinGroupElems
}

// lowerSplit lowers a group as the two launches s describes.
func lowerSplit(grp *passes.Group, s *split, scratch func(ir.Type, *ir.Node) *ir.Value) ([]*part, error) {
	p := scratch(s.partials, grp.Anchor)
	var w1, w2 []*ir.Value
	for _, v := range grp.Outputs {
		if s.early != nil && s.early(v) {
			w1 = append(w1, v)
		} else {
			w2 = append(w2, v)
		}
	}
	w1 = append(w1, p)
	// Pass 2 computes the epilogues of what it writes; pass 1 the rest.
	late := map[*ir.Node]bool{}
	for _, v := range w2 {
		for _, n := range grp.Epilogue[v] {
			late[n] = true
		}
	}
	for _, n := range grp.RowEpilogue {
		late[n] = true
	}
	var f1, f2 []*ir.Node
	for _, n := range grp.Nodes {
		if late[n] {
			f2 = append(f2, n)
		} else {
			f1 = append(f1, n)
		}
	}
	doc := describe(grp)
	p1, err := lowerPart(grp, "pass 1 of 2, partials: "+doc, grp.Kind+"_pass1", w1, f1, func(e *Emitter) error { s.pass1(e, p); return nil })
	if err != nil {
		return nil, err
	}
	p2, err := lowerPart(grp, "pass 2 of 2, partials folded: "+doc, grp.Kind+"_pass2", w2, f2, func(e *Emitter) error { s.pass2(e, p); return nil })
	if err != nil {
		return nil, err
	}
	return []*part{p1, p2}, nil
}

// newScratch returns a maker of scratch values for a compile of g, recorded
// in set: each a new value (its id after every value of g) of a node of no
// graph, named after the reduction it serves ("cross_entropy_partials").
func newScratch(g *ir.Graph, set map[*ir.Value]bool) func(ir.Type, *ir.Node) *ir.Value {
	next := 0
	for _, n := range g.Nodes {
		for _, v := range n.Outputs {
			next = max(next, v.ID+1)
		}
	}
	return func(t ir.Type, anchor *ir.Node) *ir.Value {
		n := &ir.Node{ID: -1, Op: anchor.Op + "_partials", Pos: anchor.Pos, Scope: anchor.Scope, Region: anchor.Region}
		v := &ir.Value{ID: next, Type: t, Node: n}
		n.Outputs = []*ir.Value{v}
		next++
		set[v] = true
		return v
	}
}

// splitSlices divides n units (rows, or reduced elements) of unit elements
// each into slices of at least splitSliceElems elements, at most limit
// slices: it returns the slice count and the units per slice.
func splitSlices(n int, unit int64, limit int) (slices, per int) {
	per = int(max(1, (splitSliceElems+unit-1)/unit))
	slices = rdCeil(n, per)
	if slices > limit {
		slices = limit
	}
	per = rdCeil(n, max(slices, 1))
	return rdCeil(n, per), per
}

// ScratchBytes is the device-memory traffic the scratch values add to a
// step: each is written once and read once.
func (p *Program) ScratchBytes() int64 {
	var n int64
	for v := range p.Scratch {
		n += 2 * v.Type.Bytes()
	}
	return n
}
