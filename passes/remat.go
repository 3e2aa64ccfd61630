package passes

import (
	"fmt"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

// Stats are figures the passes measure, for report.json.
type Stats struct {
	// ActivationBytes are the forward activations the backward reads (kept
	// from the forward) under the chosen remat policy.
	ActivationBytes int64
	// ActivationBytesSaved is how many fewer than with Remat "none".
	ActivationBytesSaved int64
	// RecomputeFLOPs are the FLOPs of the forward nodes recomputed in the backward.
	RecomputeFLOPs int64
}

// Recompute levels of a checkpoint region: what its backward recomputes
// instead of reading from the forward.
const (
	keepAll     = iota // nothing (but dequant, always recomputed)
	recompCheap        // elementwise, layout and row-reduction work; matmul, conv, scan and routing outputs stay kept
	recompAll          // everything: only the region's inputs stay kept (Chen et al.'s checkpointing)
	never              // a node no level recomputes
)

// Remat chooses which forward activations the backward reads and which it
// recomputes (cfg.Remat):
//
//	none   keep everything
//	layer  per checkpoint region (node.Region), keep only the region's inputs
//	auto   recompute as little as fits cfg.MemoryBudget bytes of kept activations
//
// The forward is every ancestor of the output "loss" and of the aux losses;
// every other node is backward. A recomputed node is cloned just before the
// first backward node that reads it (with the clones of whatever else it
// needs from its region, in forward order), and backward reads go to the
// clone. A clone is the same op on the same values, so results are
// bit-identical to keeping everything. Nodes whose outputs the forward reads
// outside their region (the region's outputs, aux losses) are never
// recomputed: they are kept anyway.
//
// Under every policy, dequant is recomputed for the backward: a dequantised
// NF4 weight is no activation but an f32 copy of a resident weight, 8× its
// storage (16 GB for scm3b), and QLoRA's backward dx = dy·deq(W) is meant to
// dequantise on the fly (each clone has one reader, so fusion can inline it).
// The figures go to cfg.Stats.
func Remat(g *ir.Graph, cfg *Config) (*ir.Graph, error) {
	policy := cfg.Remat
	if policy == "" {
		policy = "none"
	}
	if policy != "none" && policy != "layer" && policy != "auto" {
		return nil, fmt.Errorf("unknown remat policy %q (want none, layer or auto)", policy)
	}
	p := newRematPlan(g)
	if p == nil {
		return g, nil // no loss: a forward-only graph has nothing to checkpoint
	}
	levels := make([]int, len(p.region))
	noneBytes, _ := p.cost(levels)
	switch policy {
	case "layer":
		for i := range levels {
			levels[i] = recompAll
		}
	case "auto":
		if err := p.fit(levels, cfg.MemoryBudget); err != nil {
			return nil, err
		}
	}
	bytes, flops := p.cost(levels)
	cfg.Stats.ActivationBytes, cfg.Stats.ActivationBytesSaved, cfg.Stats.RecomputeFLOPs = bytes, noneBytes-bytes, flops
	if flops == 0 && bytes == noneBytes {
		return g, nil
	}
	return p.rewrite(levels)
}

type rematPlan struct {
	g   *ir.Graph
	fwd []bool // by node ID: an ancestor of the loss or an aux loss
	// min is, by node ID, the lowest region level that recomputes the node:
	// keepAll for dequant, never for sources, pinned nodes and nodes outside
	// regions.
	min    []int
	region map[int]int // region ID → index into levels
	// level is, by node ID, the index into levels of the node's region.
	level []int
	// Scratch space of cost, by node and by value ID.
	cloned, kept []bool
}

func newRematPlan(g *ir.Graph) *rematPlan {
	loss := g.Output("loss")
	if loss == nil {
		return nil
	}
	size := len(g.Nodes)
	p := &rematPlan{g: g, fwd: make([]bool, size), min: make([]int, size), region: map[int]int{},
		level: make([]int, size), cloned: make([]bool, size)}
	for i, r := range g.Regions {
		p.region[r.ID] = i
	}
	maxID := 0
	for _, n := range g.Nodes {
		p.level[n.ID] = p.region[n.Region]
		for _, v := range n.Outputs {
			maxID = max(maxID, v.ID)
		}
	}
	p.kept = make([]bool, maxID+1)
	p.fwd[loss.Value.Node.ID] = true
	for _, v := range g.AuxLosses {
		p.fwd[v.Node.ID] = true
	}
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		if p.fwd[i] {
			for _, v := range g.Nodes[i].Inputs {
				p.fwd[v.Node.ID] = true
			}
		}
	}
	pinned := map[*ir.Node]bool{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			if p.fwd[n.ID] && v.Node.Region != n.Region {
				pinned[v.Node] = true
			}
		}
	}
	for _, o := range g.Outputs {
		pinned[o.Value.Node] = true
	}
	for _, v := range g.AuxLosses {
		pinned[v.Node] = true
	}
	for _, n := range g.Nodes {
		d, _ := ir.Lookup(n.Op)
		_, inRegion := p.region[n.Region]
		switch {
		case p.fwd[n.ID] && n.Op == ir.OpDequant:
			p.min[n.ID] = keepAll
		case !p.fwd[n.ID] || !inRegion || d.Category == ir.Source || pinned[n]:
			p.min[n.ID] = never
		case d.Category == ir.Elementwise || d.Category == ir.Layout || d.Category == ir.Reduction:
			p.min[n.ID] = recompCheap
		default:
			p.min[n.ID] = recompAll
		}
	}
	return p
}

// ActivationBytes is the bytes of forward values (ancestors of the output
// "loss" and the aux losses) that the rest of g reads: the activations a
// training step keeps from its forward for its backward.
func ActivationBytes(g *ir.Graph) int64 {
	p := newRematPlan(g)
	if p == nil {
		return 0
	}
	b, _ := p.cost(make([]int, len(p.region)))
	return b
}

func (p *rematPlan) recomputed(n *ir.Node, levels []int) bool {
	switch p.min[n.ID] {
	case keepAll:
		return true
	case never:
		return false
	}
	return levels[p.level[n.ID]] >= p.min[n.ID]
}

// cost simulates the cloning: the bytes of forward values the backward
// reads (directly or through clones) and the FLOPs of the clones.
func (p *rematPlan) cost(levels []int) (bytes, flops int64) {
	cloned, kept := p.cloned, p.kept
	clear(cloned)
	clear(kept)
	var read func(v *ir.Value)
	read = func(v *ir.Value) {
		x := v.Node
		switch {
		case p.recomputed(x, levels):
			if !cloned[x.ID] {
				cloned[x.ID] = true
				flops += NodeCost(x).FLOPs
				for _, w := range x.Inputs {
					read(w)
				}
			}
		case p.fwd[x.ID] && x.Op != ir.OpInput && x.Op != ir.OpParam && x.Op != ir.OpConst && !kept[v.ID]:
			kept[v.ID] = true
			bytes += v.Type.Bytes()
		}
	}
	for _, n := range p.g.Nodes {
		if !p.fwd[n.ID] {
			for _, v := range n.Inputs {
				read(v)
			}
		}
	}
	return bytes, flops
}

// fit raises region levels greedily, taking each time the step that saves
// the most bytes per added FLOP, until the kept activations fit budget or
// nothing more can be recomputed.
func (p *rematPlan) fit(levels []int, budget int64) error {
	if budget <= 0 {
		return fmt.Errorf("remat auto needs a positive memory budget for activations (Config.MemoryBudget)")
	}
	bytes, flops := p.cost(levels)
	for bytes > budget {
		best, bestLevel, bestRatio := -1, 0, 0.0
		var bestBytes, bestFlops int64
		for r := range levels {
			old := levels[r]
			for l := old + 1; l <= recompAll; l++ {
				levels[r] = l
				b, f := p.cost(levels)
				if ratio := float64(bytes-b) / float64(max(f-flops, 1)); b < bytes && ratio > bestRatio {
					best, bestLevel, bestRatio, bestBytes, bestFlops = r, l, ratio, b, f
				}
			}
			levels[r] = old
		}
		if best < 0 {
			// Everything recomputable is recomputed: the least this policy
			// can keep. Whether the whole arena fits is the planner's call.
			return nil
		}
		levels[best], bytes, flops = bestLevel, bestBytes, bestFlops
	}
	return nil
}

// rewrite copies the graph, cloning recomputed nodes in front of their
// first backward reader.
func (p *rematPlan) rewrite(levels []int) (*ir.Graph, error) {
	vm := map[*ir.Value]*ir.Value{} // original → copy, learned from each node's operands
	clones := map[*ir.Node][]*ir.Value{}
	remap := func(v *ir.Value) *ir.Value {
		if c := clones[v.Node]; c != nil {
			return c[v.Index]
		}
		return vm[v]
	}
	return ir.Rewrite(p.g, func(b *ir.Builder, n *ir.Node, in []*ir.Value) []*ir.Value {
		for i, v := range n.Inputs {
			vm[v] = in[i]
		}
		if p.fwd[n.ID] {
			return nil
		}
		var todo []*ir.Node
		seen := map[*ir.Node]bool{}
		var need func(v *ir.Value)
		need = func(v *ir.Value) {
			x := v.Node
			if !p.recomputed(x, levels) || clones[x] != nil || seen[x] {
				return
			}
			seen[x] = true
			for _, w := range x.Inputs {
				need(w)
			}
			todo = append(todo, x)
		}
		reads := false
		for _, v := range n.Inputs {
			need(v)
			reads = reads || p.recomputed(v.Node, levels)
		}
		if !reads {
			return nil
		}
		sort.Slice(todo, func(i, j int) bool { return todo[i].ID < todo[j].ID })
		for _, x := range todo {
			ops := make([]*ir.Value, len(x.Inputs))
			for i, v := range x.Inputs {
				ops[i] = remap(v)
			}
			b.Pos, b.Scope, b.Region = x.Pos, x.Scope, 0
			clones[x] = b.Apply(x.Op, x.Attrs, ops...)
		}
		b.Pos, b.Scope, b.Region = n.Pos, n.Scope, n.Region
		ops := make([]*ir.Value, len(n.Inputs))
		for i, v := range n.Inputs {
			ops[i] = remap(v)
		}
		return b.Apply(n.Op, n.Attrs, ops...)
	})
}
