package passes

import "github.com/scm-magellano/magc/ir"

// Cost is the work of one node: floating-point operations and bytes moved
// (operands read plus results written), from its op and types alone. It is
// an estimate for ranking choices (remat now, fusion later), not a timing.
type Cost struct {
	FLOPs int64
	Bytes int64
}

// flops is the FLOP count of a node, keyed by op. Element-wise ops with
// scalar maths count ir.Elem.FLOPs per element, and layout ops (which only
// move elements) none; every other non-source op has a rule here (a test
// walks the catalogue).
var flops = map[ir.Op]func(n *ir.Node) int64{
	ir.OpMatmul: func(n *ir.Node) int64 {
		a := operand(n, 0)
		k := a[len(a)-1]
		if n.Attrs.Bool("ta") {
			k = a[len(a)-2]
		}
		return 2 * n.Out().Type.Shape.Elems() * int64(k)
	},
	// 2·R·N·K
	ir.OpGroupedMM: func(n *ir.Node) int64 { return 2 * n.Out().Type.Shape.Elems() * int64(operand(n, 0)[1]) },
	// per expert dyᵀ·x over its rows: 2·R·N·K in all
	ir.OpGroupedMMW: func(n *ir.Node) int64 { return 2 * operand(n, 0).Elems() * int64(operand(n, 1)[1]) },
	// discretise, update and contract the state: ~9 per (b, t, e, n)
	ir.OpScan: func(n *ir.Node) int64 { return 9 * operand(n, 0).Elems() * int64(operand(n, 2)[1]) },
	// a recomputing forward plus the adjoint, about twice the forward
	ir.OpScanBwd:  func(n *ir.Node) int64 { return 27 * operand(n, 0).Elems() * int64(operand(n, 2)[1]) },
	ir.OpConv:     func(n *ir.Node) int64 { return 2 * n.Out().Type.Shape.Elems() * int64(operand(n, 1)[1]) },
	ir.OpConvBwd:  func(n *ir.Node) int64 { return 4 * operand(n, 0).Elems() * int64(operand(n, 1)[1]) },
	ir.OpScatter:  func(n *ir.Node) int64 { return operand(n, 1).Elems() },
	ir.OpTopK:     func(n *ir.Node) int64 { return operand(n, 0).Elems() * int64(n.Attrs.Int("k")) },
	ir.OpMoERoute: func(n *ir.Node) int64 { return 0 }, // integer bookkeeping

	ir.OpReduceSum:       perInput(1),
	ir.OpReduceMax:       perInput(1),
	ir.OpReduceMean:      perInput(1),
	ir.OpSoftmax:         perInput(4), // max, exp, sum, divide
	ir.OpRMSNorm:         perInput(4), // square-sum, rsqrt, two multiplies
	ir.OpRMSNormBwd:      perInput(8),
	ir.OpCrossEntropy:    perInput(4),
	ir.OpCrossEntropyBwd: perInput(4),
	ir.OpDequant:         func(n *ir.Node) int64 { return n.Out().Type.Shape.Elems() },
	ir.OpAdamW:           perInput(12), // decay, two moments, bias corrections, √, divide
}

// operand is the shape of operand i of n.
func operand(n *ir.Node, i int) ir.Shape { return n.Inputs[i].Type.Shape }

// perInput counts k FLOPs per element of the first operand.
func perInput(k int64) func(n *ir.Node) int64 {
	return func(n *ir.Node) int64 { return k * operand(n, 0).Elems() }
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
	if n.Op == ir.OpGather {
		// Only the picked rows of the table are read.
		c.Bytes = n.Inputs[1].Type.Bytes() + 2*n.Out().Type.Bytes()
	}
	switch f := flops[n.Op]; {
	case f != nil:
		c.FLOPs = f(n)
	case d.Elem != nil:
		c.FLOPs = d.Elem.FLOPs * n.Out().Type.Shape.Elems()
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
