package passes

import (
	"fmt"
	"slices"

	"github.com/scm-magellano/magc/ir"
)

// VJP is the reverse-mode rule of one op: from the gradients dy of a node's
// outputs (nil for an output that gets none) it builds, with b, the
// gradients of the operands for which need is set, returning one value per
// operand (nil where not needed). A rule builds only what it returns, so the
// backward has no dead nodes.
type VJP func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value

// VJPs is the rule registry: every differentiable op of the catalogue has
// one (a test walks ir.Ops()). Element-wise ops' rules come from their
// catalogue entry (ir.Elem.Grad).
var VJPs = map[ir.Op]VJP{}

// Gradients appends to b's graph the backward pass of the scalar loss and
// returns the gradient of each value of wrt (nil where the loss does not
// depend on it). As in GoMLX, nodes are already in topological order, so the
// backward walks them in reverse from the loss; contributions to a value
// used several times are summed with add, in that reverse order.
// Gradients flow only into values that depend on wrt through differentiable
// ops: frozen and NF4 branches, integer values and non-differentiable ops
// (one_hot, moe_route, dequant) get none, so none of their work is built.
func Gradients(b *ir.Builder, loss *ir.Value, wrt []*ir.Value) ([]*ir.Value, error) {
	return SeededGradients(b, loss, nil, wrt)
}

// SeededGradients is Gradients with the loss's own gradient seed, an f32
// scalar (nil: 1): every gradient is then seed times the loss's (loss
// scaling seeds with the scale).
func SeededGradients(b *ir.Builder, loss, seed *ir.Value, wrt []*ir.Value) ([]*ir.Value, error) {
	g := b.G
	if seed != nil && !seed.Type.Equal(ir.T(ir.F32)) {
		return nil, fmt.Errorf("autodiff: the gradient seed must be an f32 scalar, got %v", seed.Type)
	}
	if !loss.Type.Equal(ir.T(ir.F32)) {
		return nil, fmt.Errorf("autodiff: the loss must be an f32 scalar, got %v", loss.Type)
	}
	dep := map[*ir.Value]bool{}
	for _, v := range wrt {
		dep[v] = true
	}
	last := loss.Node.ID
	for _, n := range g.Nodes[:last+1] {
		d, _ := ir.Lookup(n.Op)
		if d.Differentiable && slices.ContainsFunc(n.Inputs, func(v *ir.Value) bool { return dep[v] }) {
			for _, v := range n.Outputs {
				dep[v] = v.Type.DType.IsFloat()
			}
		}
	}
	grad := map[*ir.Value]*ir.Value{}
	if dep[loss] {
		b.Pos, b.Scope, b.Region = loss.Node.Pos, "", 0
		grad[loss] = seed
		if seed == nil {
			grad[loss] = b.Const(1, loss.Type)
		}
	}
	for i := last; i >= 0; i-- {
		n := g.Nodes[i]
		dy := make([]*ir.Value, len(n.Outputs))
		for j, v := range n.Outputs {
			dy[j] = grad[v]
		}
		need := make([]bool, len(n.Inputs))
		for j, v := range n.Inputs {
			need[j] = dep[v]
		}
		if !slices.ContainsFunc(dy, func(v *ir.Value) bool { return v != nil }) || !slices.Contains(need, true) {
			continue
		}
		rule := VJPs[n.Op]
		if rule == nil {
			return nil, ir.Errorf(n.Pos, "autodiff: op %s has no VJP rule", n.Op)
		}
		// Backward nodes keep the forward node's position and scope (for
		// errors and dumps) but belong to no checkpoint region.
		b.Pos, b.Scope, b.Region = n.Pos, n.Scope, 0
		dx := rule(b, n, dy, need)
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("autodiff: gradient of node %d (%s): %w", n.ID, n.Op, err)
		}
		if len(dx) != len(n.Inputs) {
			return nil, ir.Errorf(n.Pos, "autodiff: the %s rule gives %d gradients for %d operands", n.Op, len(dx), len(n.Inputs))
		}
		for j, v := range n.Inputs {
			if !need[j] || dx[j] == nil {
				continue
			}
			if !dx[j].Type.Equal(v.Type) {
				return nil, ir.Errorf(n.Pos, "autodiff: the %s rule gives operand %d a gradient of type %v, the operand is %v", n.Op, j, dx[j].Type, v.Type)
			}
			if prev := grad[v]; prev != nil {
				grad[v] = accumulate(b, prev, dx[j])
			} else {
				grad[v] = dx[j]
			}
		}
	}
	out := make([]*ir.Value, len(wrt))
	for i, v := range wrt {
		out[i] = grad[v]
	}
	return out, b.Err()
}

// accumulate adds two gradient contributions of one value. The gradients of
// slices are zero-padded (concat with zeros); when the non-zero pieces of
// both lie apart, the sum is one concat of them, which fusion treats as an
// index map, rather than adds over mostly zeros.
func accumulate(b *ir.Builder, x, y *ir.Value) *ir.Value {
	ax, ok := concatAxis(x)
	if !ok {
		if ax, ok = concatAxis(y); !ok {
			return b.Add(x, y)
		}
	}
	px, py := pieces(x, ax), pieces(y, ax)
	// Cut both at every boundary; each interval may be non-zero in one only.
	cuts := map[int]bool{}
	for _, p := range append(append([]piece(nil), px...), py...) {
		cuts[p.start], cuts[p.end] = true, true
	}
	bounds := make([]int, 0, len(cuts))
	for c := range cuts {
		bounds = append(bounds, c)
	}
	slices.Sort(bounds)
	var parts []*ir.Value
	zeros := 0 // width of zeros not yet emitted
	flush := func() {
		if zeros > 0 {
			shape := x.Type.Shape.Clone()
			shape[ax] = zeros
			parts = append(parts, b.Const(0, ir.Type{DType: x.Type.DType, Shape: shape}))
			zeros = 0
		}
	}
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i], bounds[i+1]
		a, c := pieceAt(px, lo, hi), pieceAt(py, lo, hi)
		switch {
		case a == nil || c == nil:
			return b.Add(x, y) // a non-zero piece is cut: no gain
		case a.v != nil && c.v != nil:
			return b.Add(x, y) // both non-zero here
		case a.v == nil && c.v == nil:
			zeros += hi - lo
		default:
			flush()
			if a.v != nil {
				parts = append(parts, a.v)
			} else {
				parts = append(parts, c.v)
			}
		}
	}
	flush()
	return concatTree(b, ax, parts)
}

// maxConcatParts bounds the operands of one concat: a kernel reading it
// binds them all.
const maxConcatParts = 16

// concatTree joins parts along ax in concats of at most maxConcatParts
// operands (the gradient of many row chunks of the loss). Runs of non-zero
// parts nest; zero parts stay at the top, where a later gradient can still
// fill them.
func concatTree(b *ir.Builder, ax int, parts []*ir.Value) *ir.Value {
	join := func(ps []*ir.Value) *ir.Value {
		if len(ps) == 1 {
			return ps[0]
		}
		return b.Op(ir.OpConcat, ir.Attrs{"axis": ax}, ps...)
	}
	if len(parts) <= maxConcatParts {
		return join(parts)
	}
	var top, run []*ir.Value
	nest := func() {
		for len(run) > maxConcatParts || len(run) > 1 && len(top)+len(run) > maxConcatParts { // fold the run in groups
			var level []*ir.Value
			for i := 0; i < len(run); i += maxConcatParts {
				level = append(level, join(run[i:min(i+maxConcatParts, len(run))]))
			}
			run = level
		}
		if len(run) > 0 {
			top = append(top, join(run))
		}
		run = nil
	}
	for _, p := range parts {
		if isZero(p) {
			nest()
			top = append(top, p)
		} else {
			run = append(run, p)
		}
	}
	nest()
	if len(top) == len(parts) { // zeros between single parts: nest them all
		top = nil
		for i := 0; i < len(parts); i += maxConcatParts {
			top = append(top, join(parts[i:min(i+maxConcatParts, len(parts))]))
		}
	}
	return concatTree(b, ax, top)
}

// piece is the interval [start, end) of a value along an axis: v, or
// zeros when v is nil.
type piece struct {
	start, end int
	v          *ir.Value
}

func concatAxis(v *ir.Value) (int, bool) {
	if v.Node.Op != ir.OpConcat {
		return 0, false
	}
	return v.Node.Attrs.Int("axis"), true
}

func isZero(v *ir.Value) bool { return v.Node.Op == ir.OpConst && v.Node.Attrs.Float("value") == 0 }

// pieces splits v along ax: the parts of a concat on ax, else v whole.
func pieces(v *ir.Value, ax int) []piece {
	parts := []*ir.Value{v}
	if a, ok := concatAxis(v); ok && a == ax {
		parts = v.Node.Inputs
	}
	var out []piece
	at := 0
	for _, p := range parts {
		end := at + p.Type.Shape[ax]
		pc := piece{start: at, end: end, v: p}
		if isZero(p) {
			pc.v = nil
		}
		out = append(out, pc)
		at = end
	}
	return out
}

// pieceAt returns the piece covering [lo, hi) exactly when it is non-zero,
// a zero piece when zeros cover it, or nil when a non-zero piece only
// partly covers it.
func pieceAt(ps []piece, lo, hi int) *piece {
	for i := range ps {
		p := &ps[i]
		if p.start <= lo && hi <= p.end {
			if p.v != nil && (p.start != lo || p.end != hi) {
				return nil
			}
			if p.v == nil {
				return &piece{lo, hi, nil}
			}
			return p
		}
	}
	return nil
}

func init() {
	// Element-wise ops carry their gradient in their catalogue entry.
	for _, d := range ir.Ops() {
		if d.Elem != nil && d.Elem.Grad != nil {
			grad := d.Elem.Grad
			VJPs[d.Op] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
				return grad(b, n, dy[0], need)
			}
		}
	}

	VJPs[ir.OpSoftmax] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		y := n.Out()
		s := b.Reduce(ir.OpReduceSum, b.Mul(dy[0], y), true, len(y.Type.Shape)-1)
		return []*ir.Value{b.Mul(y, b.Sub(dy[0], b.BroadcastTo(s, y.Type.Shape)))}
	}

	VJPs[ir.OpReduceSum] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return []*ir.Value{unreduce(b, n, dy[0])}
	}
	VJPs[ir.OpReduceMean] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		cnt := n.Inputs[0].Type.Shape.Elems() / n.Out().Type.Shape.Elems()
		return []*ir.Value{b.Scale(unreduce(b, n, dy[0]), 1/float64(cnt))}
	}
	// reduce_max: the gradient goes to the maxima, split evenly between ties.
	VJPs[ir.OpReduceMax] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		x := n.Inputs[0]
		mask := b.Op(ir.OpGE, nil, x, unreduce(b, n, n.Out()))
		cnt := b.Reduce(ir.OpReduceSum, mask, true, n.Attrs.Ints("axes")...)
		share := b.Div(mask, b.BroadcastTo(cnt, x.Type.Shape))
		return []*ir.Value{b.Mul(unreduce(b, n, dy[0]), share)}
	}

	VJPs[ir.OpReshape] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return []*ir.Value{b.Reshape(dy[0], n.Inputs[0].Type.Shape...)}
	}
	VJPs[ir.OpTranspose] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		perm := n.Attrs.Ints("perm")
		inv := make([]int, len(perm))
		for i, p := range perm {
			inv[p] = i
		}
		return []*ir.Value{b.Op(ir.OpTranspose, ir.Attrs{"perm": inv}, dy[0])}
	}
	// broadcast: sum over the new leading axes and the stretched size-1 axes.
	VJPs[ir.OpBroadcast] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		in, out := n.Inputs[0].Type.Shape, n.Out().Type.Shape
		off := len(out) - len(in)
		var axes []int
		for i := range out {
			if i < off || in[i-off] == 1 && out[i] != 1 {
				axes = append(axes, i)
			}
		}
		d := dy[0]
		if len(axes) > 0 {
			d = b.Reduce(ir.OpReduceSum, d, false, axes...)
		}
		if !d.Type.Shape.Equal(in) {
			d = b.Reshape(d, in...)
		}
		return []*ir.Value{d}
	}
	// slice: the gradient padded with zeros to the operand's extent.
	VJPs[ir.OpSlice] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		x := n.Inputs[0].Type
		ax, start, end := n.Attrs.Int("axis"), n.Attrs.Int("start"), n.Attrs.Int("end")
		zeros := func(size int) *ir.Value {
			s := x.Shape.Clone()
			s[ax] = size
			return b.Const(0, ir.Type{DType: x.DType, Shape: s})
		}
		parts := []*ir.Value{dy[0]}
		if start > 0 {
			parts = append([]*ir.Value{zeros(start)}, parts...)
		}
		if end < x.Shape[ax] {
			parts = append(parts, zeros(x.Shape[ax]-end))
		}
		if len(parts) == 1 {
			return parts
		}
		return []*ir.Value{b.Op(ir.OpConcat, ir.Attrs{"axis": ax}, parts...)}
	}
	VJPs[ir.OpConcat] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		ax := n.Attrs.Int("axis")
		out := make([]*ir.Value, len(n.Inputs))
		at := 0
		for i, v := range n.Inputs {
			size := v.Type.Shape[ax]
			if need[i] {
				out[i] = b.Slice(dy[0], ax, at, at+size)
			}
			at += size
		}
		return out
	}
	VJPs[ir.OpGather] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		rows := n.Inputs[0].Type.Shape[0]
		return []*ir.Value{b.Op(ir.OpScatter, ir.Attrs{"rows": rows}, n.Inputs[1], dy[0]), nil}
	}
	VJPs[ir.OpScatter] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return []*ir.Value{nil, b.Op(ir.OpGather, nil, dy[0], n.Inputs[0])}
	}

	VJPs[ir.OpMatmul] = matmulVJP
	// grouped_matmul: dx is the grouped product with the weights read the
	// other way round; dw comes from grouped_matmul_wgrad, which gives the
	// tb=true layout (E,N,K), so the operands swap for tb=false.
	VJPs[ir.OpGroupedMM] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		x, w, off := n.Inputs[0], n.Inputs[1], n.Inputs[2]
		tb := n.Attrs.Bool("tb")
		return lazy(need,
			func() *ir.Value { return b.Op(ir.OpGroupedMM, ir.Attrs{"tb": !tb}, dy[0], w, off) },
			func() *ir.Value {
				if tb {
					return b.Op(ir.OpGroupedMMW, nil, dy[0], x, off)
				}
				return b.Op(ir.OpGroupedMMW, nil, x, dy[0], off)
			},
			nil) // the integer offsets
	}

	VJPs[ir.OpRMSNorm] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return b.Apply(ir.OpRMSNormBwd, ir.Attrs{"eps": n.Attrs.Float("eps")}, n.Inputs[0], n.Inputs[1], dy[0])
	}
	VJPs[ir.OpCrossEntropy] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		a := ir.Attrs{"ignore_index": n.Attrs.Int("ignore_index")}
		return []*ir.Value{b.Op(ir.OpCrossEntropyBwd, a, n.Inputs[0], n.Inputs[1], dy[0]), nil}
	}
	VJPs[ir.OpConv] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return b.Apply(ir.OpConvBwd, nil, n.Inputs[0], n.Inputs[1], dy[0])
	}
	// selective_scan: selective_scan_bwd recomputes the states chunk by chunk
	// from the forward's start-of-chunk states (its second output), so the
	// B·L·E·N state tensor is never stored.
	VJPs[ir.OpScan] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		if dy[1] != nil {
			b.Fail(fmt.Errorf("the scan's chunk states have no gradient (they feed only its backward)"))
			return make([]*ir.Value, 6)
		}
		in := append(append([]*ir.Value(nil), n.Inputs...), n.Outputs[1], dy[0])
		return b.Apply(ir.OpScanBwd, ir.Attrs{"chunk": n.Attrs.Int("chunk")}, in...)
	}
	// topk: each chosen value's gradient lands on its index, spread with a
	// one_hot of the indices: dx[…, w] = Σ_j dvalues[…, j]·[idx[…, j] = w].
	VJPs[ir.OpTopK] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		x := n.Inputs[0].Type
		r, w, k := len(x.Shape), x.Shape[len(x.Shape)-1], n.Attrs.Int("k")
		oh := b.Op(ir.OpOneHot, ir.Attrs{"depth": w}, n.Outputs[1]) // (…, k, W)
		if x.DType != ir.F32 {
			oh = b.Op(ir.OpCast, ir.Attrs{"to": x.DType}, oh)
		}
		col := append(x.Shape[:r-1].Clone(), k, 1)
		d := b.BroadcastTo(b.Reshape(dy[0], col...), oh.Type.Shape)
		return []*ir.Value{b.Reduce(ir.OpReduceSum, b.Mul(d, oh), false, r-1)}
	}
}

// lazy builds the gradient of operand i only when need[i] is set (fs[i] is
// nil for operands that never have one).
func lazy(need []bool, fs ...func() *ir.Value) []*ir.Value {
	out := make([]*ir.Value, len(fs))
	for i, f := range fs {
		if need[i] && f != nil {
			out[i] = f()
		}
	}
	return out
}

// unreduce broadcasts v, shaped like the output of reduction n, back to the
// shape of n's operand.
func unreduce(b *ir.Builder, n *ir.Node, v *ir.Value) *ir.Value {
	x := n.Inputs[0].Type.Shape
	keep := x.Clone()
	for _, a := range n.Attrs.Ints("axes") {
		keep[a] = 1
	}
	if !v.Type.Shape.Equal(keep) {
		v = b.Reshape(v, keep...)
	}
	return b.BroadcastTo(v, x)
}

// matmulVJP: with C = op(A)·op(B), op(A) (M,K) and op(B) (K,N),
// d op(A) = dC·op(B)ᵀ and d op(B) = op(A)ᵀ·dC, written as matmuls whose
// ta/tb flags absorb the transposes. A weight B without batch axes is
// shared by every batch entry of A, so its gradient sums over the batch: A
// and dC are flattened to (batch·M, ·) and one matmul contracts over both.
func matmulVJP(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
	a, w, d := n.Inputs[0], n.Inputs[1], dy[0]
	ta, tb := n.Attrs.Bool("ta"), n.Attrs.Bool("tb")
	shared := len(w.Type.Shape) == 2 && len(a.Type.Shape) > 2
	var da, dw *ir.Value
	if need[0] {
		switch {
		case !ta:
			da = b.Matmul(d, w, false, !tb)
		case shared: // (dC·op(B)ᵀ)ᵀ; a batched rhs cannot follow an unbatched lhs
			da = transposeLast(b, b.Matmul(d, w, false, !tb))
		default:
			da = b.Matmul(w, d, tb, true)
		}
	}
	if need[1] {
		if shared {
			if ta {
				a, ta = transposeLast(b, a), false
			}
			s := a.Type.Shape
			a = b.Reshape(a, int(s[:len(s)-1].Elems()), s[len(s)-1])
			ds := d.Type.Shape
			d = b.Reshape(d, int(ds[:len(ds)-1].Elems()), ds[len(ds)-1])
		}
		if tb {
			dw = b.Matmul(d, a, true, ta)
		} else {
			dw = b.Matmul(a, d, !ta, false)
		}
	}
	return []*ir.Value{da, dw}
}

// transposeLast swaps the last two axes.
func transposeLast(b *ir.Builder, v *ir.Value) *ir.Value {
	r := len(v.Type.Shape)
	perm := make([]int, r)
	for i := range perm {
		perm[i] = i
	}
	perm[r-2], perm[r-1] = perm[r-1], perm[r-2]
	return b.Op(ir.OpTranspose, ir.Attrs{"perm": perm}, v)
}
