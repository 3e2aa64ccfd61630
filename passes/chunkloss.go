package passes

import (
	"fmt"
	"strings"

	"github.com/scm-magellano/magc/ir"
)

// The loss of a language model, cross_entropy(x·Eᵀ, y), has logits of
// tokens × vocabulary: 1.6 GB for scm3b at batch 16, and its gradient as
// much again, both live at once where the backward pass begins (the
// memory peak of the step). Chunked, the loss is a sum over blocks of rows,
// each block's logits made, used and dropped (forward and backward) before
// the next block's are made:
//
//	loss = Σ_c mean_c · n_c / max(n, 1)
//
// where mean_c is the chunk's cross-entropy (over its targets that are not
// ignored), n_c their count and n = Σ n_c. A chunk without targets has
// mean_c = 0, so all-ignored batches still give 0.

// defaultLossChunkBytes bounds one chunk's f32 logits.
const defaultLossChunkBytes = 64 << 20

// lossScope prefixes the scope of the chunks' nodes (and of their backward
// nodes, which autodiff gives the same scope).
const lossScope = "loss."

// chunkLoss splits the output "loss" into chunks of rows when it is a
// cross-entropy of one matmul's logits larger than chunkBytes. Other graphs
// come back unchanged.
func chunkLoss(g *ir.Graph, chunkBytes int64) (*ir.Graph, error) {
	if chunkBytes <= 0 {
		chunkBytes = defaultLossChunkBytes
	}
	out := g.Output("loss")
	if out == nil || out.Value.Node.Op != ir.OpCrossEntropy {
		return g, nil
	}
	ce := out.Value.Node
	z := ce.Inputs[0]
	mm := z.Node
	ignore := ce.Attrs.Int("ignore_index")
	if mm.Op != ir.OpMatmul || mm.Attrs.Bool("ta") || len(g.Uses()[z]) != 1 || ignore >= 0 {
		return g, nil
	}
	for _, o := range g.Outputs {
		if o.Value == z {
			return g, nil // the logits are wanted whole
		}
	}
	x, e := mm.Inputs[0], mm.Inputs[1]
	zs, xs := z.Type.Shape, x.Type.Shape
	if len(e.Type.Shape) != 2 || len(xs) != len(zs) || z.Type.DType != ir.F32 {
		return g, nil
	}
	vocab, d := zs[len(zs)-1], xs[len(xs)-1]
	rows := int(zs[:len(zs)-1].Elems())
	chunks := int((int64(rows)*int64(vocab)*4 + chunkBytes - 1) / chunkBytes)
	if chunks <= 1 {
		return g, nil
	}
	per := (rows + chunks - 1) / chunks
	chunks = (rows + per - 1) / per // rounding per up can leave trailing chunks empty
	scalar := ir.T(ir.F32)
	return ir.Rewrite(g, func(b *ir.Builder, n *ir.Node, in []*ir.Value) []*ir.Value {
		if n != ce {
			return nil
		}
		// The copied full-size logits matmul goes dead; the train step prunes it.
		x, e, y := in[0].Node.Inputs[0], in[0].Node.Inputs[1], in[1]
		xf, yf := b.Reshape(x, rows, d), b.Reshape(y, rows)
		span := func(c int) (int, int) { return c * per, min(rows, (c+1)*per) }
		counts := make([]*ir.Value, chunks)
		var total *ir.Value
		for c := range counts {
			lo, hi := span(c)
			yc := b.Slice(yf, 0, lo, hi)
			yv := b.Op(ir.OpCast, ir.Attrs{"to": ir.F32}, yc)
			kept := b.Op(ir.OpGE, nil, yv, b.Const(0, yv.Type)) // targets, not ignore_index < 0
			counts[c] = b.Reduce(ir.OpReduceSum, kept, false, 0)
			if total == nil {
				total = counts[c]
			} else {
				total = b.Add(total, counts[c])
			}
		}
		denom := b.Op(ir.OpMax, nil, total, b.Const(1, scalar))
		scope := b.Scope
		var loss *ir.Value
		for c := range counts {
			b.Scope = fmt.Sprintf("%s%d", lossScope, c)
			lo, hi := span(c)
			zc := b.Matmul(b.Slice(xf, 0, lo, hi), e, false, mm.Attrs.Bool("tb"))
			term := b.Mul(b.Op(ir.OpCrossEntropy, ce.Attrs, zc, b.Slice(yf, 0, lo, hi)), counts[c])
			if loss == nil {
				loss = term
			} else {
				loss = b.Add(loss, term)
			}
		}
		loss = b.Div(loss, denom)
		b.Scope = scope
		return []*ir.Value{loss}
	})
}

// scheduleLossChunks orders a train step so that each chunk of the loss
// runs backward right after its forward, before the next chunk's logits
// are made: the backward nodes of the chunks, with the backward nodes they
// need (the loss's gradient seed), move to the first place where their
// operands are ready. forward counts the nodes autodiff found.
func scheduleLossChunks(g *ir.Graph, forward int) (*ir.Graph, error) {
	index := map[*ir.Node]int{}
	for i, n := range g.Nodes {
		index[n] = i
	}
	early := map[*ir.Node]bool{}
	var mark func(n *ir.Node)
	mark = func(n *ir.Node) {
		if early[n] || index[n] < forward {
			return
		}
		early[n] = true
		for _, v := range n.Inputs {
			mark(v.Node)
		}
	}
	for _, n := range g.Nodes[forward:] {
		if strings.HasPrefix(n.Scope, lossScope) {
			mark(n)
		}
	}
	if len(early) == 0 {
		return g, nil
	}
	var pending, order []*ir.Node
	done := map[*ir.Node]bool{}
	for _, n := range g.Nodes {
		if early[n] {
			pending = append(pending, n)
		}
	}
	ready := func(n *ir.Node) bool {
		for _, v := range n.Inputs {
			if !done[v.Node] {
				return false
			}
		}
		return true
	}
	emit := func(n *ir.Node) {
		order = append(order, n)
		done[n] = true
		for progress := true; progress; {
			progress = false
			rest := pending[:0]
			for _, p := range pending {
				if ready(p) {
					order = append(order, p)
					done[p] = true
					progress = true
				} else {
					rest = append(rest, p)
				}
			}
			pending = rest
		}
	}
	for _, n := range g.Nodes {
		if !early[n] {
			emit(n)
		}
	}
	return ir.Reorder(g, order)
}
