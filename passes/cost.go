package passes

import "github.com/scm-magellano/magc/ir"

// Cost is the work of one node: floating-point operations and bytes moved
// (operands read plus results written), from its op and types alone. It is
// an estimate for ranking choices (remat now, fusion later), not a timing.
type Cost struct {
	FLOPs int64
	Bytes int64
}

// Per-element FLOP counts of ops whose work is a small multiple of their size.
var elemFLOPs = map[ir.Op]int64{
	ir.OpSoftmax:         4, // max, exp, sum, divide
	ir.OpRMSNorm:         4, // square-sum, rsqrt, two multiplies
	ir.OpRMSNormBwd:      8,
	ir.OpCrossEntropy:    4,
	ir.OpCrossEntropyBwd: 4,
	ir.OpAdamW:           12, // decay, two moments, bias corrections, √, divide
}

// NodeCost estimates the FLOPs and bytes of n.
func NodeCost(n *ir.Node) Cost {
	d, ok := ir.Lookup(n.Op)
	if !ok || d.Category == ir.Source {
		return Cost{}
	}
	var c Cost
	for _, v := range n.Inputs {
		c.Bytes += v.Type.Bytes()
	}
	for _, v := range n.Outputs {
		c.Bytes += v.Type.Bytes()
	}
	in := func(i int) ir.Shape { return n.Inputs[i].Type.Shape }
	out := n.Out().Type.Shape
	switch n.Op {
	case ir.OpMatmul:
		k := in(0)[len(in(0))-1]
		if n.Attrs.Bool("ta") {
			k = in(0)[len(in(0))-2]
		}
		c.FLOPs = 2 * out.Elems() * int64(k)
	case ir.OpGroupedMM: // 2·R·N·K
		c.FLOPs = 2 * out.Elems() * int64(in(0)[1])
	case ir.OpGroupedMMW: // per expert dyᵀ·x over its rows: 2·R·N·K in all
		c.FLOPs = 2 * in(0).Elems() * int64(in(1)[1])
	case ir.OpScan: // discretise, update and contract the state: ~9 per (b, t, e, n)
		c.FLOPs = 9 * in(0).Elems() * int64(in(2)[1])
	case ir.OpScanBwd: // a recomputing forward plus the adjoint, about twice the forward
		c.FLOPs = 27 * in(0).Elems() * int64(in(2)[1])
	case ir.OpConv:
		c.FLOPs = 2 * out.Elems() * int64(in(1)[1])
	case ir.OpConvBwd:
		c.FLOPs = 4 * in(0).Elems() * int64(in(1)[1])
	case ir.OpGather:
		// Only the picked rows of the table are read.
		c.Bytes = n.Inputs[1].Type.Bytes() + 2*n.Out().Type.Bytes()
	case ir.OpScatter:
		c.FLOPs = in(1).Elems()
	case ir.OpTopK:
		c.FLOPs = in(0).Elems() * int64(n.Attrs.Int("k"))
	default:
		switch d.Category {
		case ir.Elementwise:
			c.FLOPs = out.Elems()
		case ir.Reduction:
			c.FLOPs = in(0).Elems()
		}
		if f, ok := elemFLOPs[n.Op]; ok {
			c.FLOPs = f * in(0).Elems()
		}
	}
	return c
}

// FlopsPerStep is the FLOPs of every node of g: one training step of a
// train-step graph, recomputation included.
func FlopsPerStep(g *ir.Graph) int64 {
	var s int64
	for _, n := range g.Nodes {
		s += NodeCost(n).FLOPs
	}
	return s
}

// BytesPerStep is the bytes every node of g reads and writes, before fusion.
func BytesPerStep(g *ir.Graph) int64 {
	var s int64
	for _, n := range g.Nodes {
		s += NodeCost(n).Bytes
	}
	return s
}

// Live is the lifetime of a value in node order: defined by node Def, read
// last by node Last. Last is len(g.Nodes) for values that outlive the graph
// (outputs, aux losses, updates), and Def for values nobody reads.
type Live struct{ Def, Last int }

// Liveness returns the lifetime of every value of g.
func Liveness(g *ir.Graph) map[*ir.Value]Live {
	live := map[*ir.Value]Live{}
	for i, n := range g.Nodes {
		for _, v := range n.Inputs {
			l := live[v]
			l.Last = i
			live[v] = l
		}
		for _, v := range n.Outputs {
			live[v] = Live{Def: i, Last: i}
		}
	}
	end := func(v *ir.Value) {
		l := live[v]
		l.Last = len(g.Nodes)
		live[v] = l
	}
	for _, v := range g.Results() {
		end(v)
	}
	return live
}
