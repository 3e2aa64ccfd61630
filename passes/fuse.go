package passes

import (
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// Group is one kernel of the schedule: the nodes it computes, in graph
// order, and the values it writes to memory. Kind names the kernel template.
type Group struct {
	Kind    string
	Nodes   []*ir.Node
	Outputs []*ir.Value
	// Root is the node the group is named after and scheduled by: its last.
	Root *ir.Node
}

// Schedule is the fused kernel order of a graph.
type Schedule struct {
	Groups []*Group
	// Alias maps the output of a reshape that needs no kernel to its operand:
	// both name the same memory.
	Alias map[*ir.Value]*ir.Value
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

// indexMap reports whether a pointwise op only moves or converts elements
// (no arithmetic worth recomputing): safe to inline into a kernel that reads
// each operand element many times, like a matmul.
func indexMap(op ir.Op) bool {
	switch op {
	case ir.OpReshape, ir.OpTranspose, ir.OpBroadcast, ir.OpSlice, ir.OpCast, ir.OpDequant, ir.OpConst:
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
func Fuse(g *ir.Graph, fuse bool) *Schedule {
	uses := g.Uses()
	kept := map[*ir.Value]bool{} // values a graph table needs in memory
	for _, o := range g.Outputs {
		kept[o.Value] = true
	}
	for _, v := range g.AuxLosses {
		kept[v] = true
	}
	for _, u := range g.Updates {
		kept[u.Value] = true
	}
	group := map[*ir.Node]*Group{}
	var groups []*Group
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		n := g.Nodes[i]
		if n.Op == ir.OpInput || n.Op == ir.OpParam || dead(n, uses, kept) {
			continue
		}
		if fuse && !anyKept(n, kept) {
			if target := soleConsumerGroup(n, uses, group); target != nil && accepts(target.Kind, n) {
				target.Nodes = append(target.Nodes, n)
				group[n] = target
				continue
			}
		}
		grp := &Group{Kind: kindOf(n.Op), Nodes: []*ir.Node{n}, Root: n}
		group[n] = grp
		groups = append(groups, grp)
	}
	s := &Schedule{Alias: map[*ir.Value]*ir.Value{}}
	for _, grp := range groups {
		sort.Slice(grp.Nodes, func(i, j int) bool { return grp.Nodes[i].ID < grp.Nodes[j].ID })
		if grp.Root.Op == ir.OpReshape && len(grp.Nodes) == 1 {
			s.Alias[grp.Root.Out()] = grp.Root.Inputs[0]
			continue
		}
		for _, n := range grp.Nodes {
			for _, v := range n.Outputs {
				if kept[v] || usedOutside(v, grp, uses, group) {
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

// dead reports whether no output of n is read or kept.
func dead(n *ir.Node, uses map[*ir.Value][]*ir.Node, kept map[*ir.Value]bool) bool {
	for _, v := range n.Outputs {
		if kept[v] || len(uses[v]) > 0 {
			return false
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

// soleConsumerGroup is the one group that reads every output of n, or nil.
func soleConsumerGroup(n *ir.Node, uses map[*ir.Value][]*ir.Node, group map[*ir.Node]*Group) *Group {
	var target *Group
	for _, v := range n.Outputs {
		for _, u := range uses[v] {
			gu := group[u]
			if gu == nil || (target != nil && gu != target) {
				return nil
			}
			target = gu
		}
	}
	return target
}

func usedOutside(v *ir.Value, grp *Group, uses map[*ir.Value][]*ir.Node, group map[*ir.Node]*Group) bool {
	for _, u := range uses[v] {
		if group[u] != grp {
			return true
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
