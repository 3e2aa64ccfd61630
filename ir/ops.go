package ir

import (
	"fmt"
	"sort"
)

// Op names an operation of the catalogue.
type Op string

// Category groups ops by how they touch memory; fusion and the cost model use it.
type Category uint8

const (
	Source      Category = iota + 1 // input, param, const: no computation
	Elementwise                     // one output element from the same element of each input
	Reduction                       // reduces along axes
	Layout                          // moves elements without arithmetic
	Contraction                     // matmul family: dominant FLOPs
	Special                         // scans, routing, losses: their own kernels
)

// OpDef is the catalogue entry of an op: its signature, shape rule and
// whether it has a gradient. An element-wise op with scalar maths carries
// them all in Elem (see elementwise.go). Other ops' reference semantics, VJP
// rules, costs and kernels live in one registry per phase, each keyed by Op
// (ir/ref.Registry, passes.VJPs, passes' flops, codegen's templates and
// Emitter.compute); catalogue tests walk Ops() and fail when any misses one.
type OpDef struct {
	Op       Op
	Doc      string
	Category Category
	// Inputs is the number of operands; -1 means one or more.
	Inputs int
	// Results is the number of outputs when more than one.
	Results int
	Attrs   []AttrDef
	// Differentiable is false for ops with no gradient: integer outputs,
	// frozen weights, and the backward ops themselves.
	Differentiable bool
	// Infer is the shape rule: output types from input types and attributes.
	// Source ops have none; their type is declared.
	Infer func(in []Type, a Attrs) ([]Type, error)
	// Elem holds the scalar maths of an element-wise op whose every result
	// element is a function of the same element of each operand; nil for
	// other ops (dequant and adamw are element-wise but have their own
	// reference and kernel).
	Elem *Elem
}

// The catalogue.
const (
	OpInput Op = "input"
	OpParam Op = "param"
	OpConst Op = "const"

	// The element-wise ops with scalar maths are in elementwise.go.

	OpReduceSum  Op = "reduce_sum"
	OpReduceMax  Op = "reduce_max"
	OpReduceMean Op = "reduce_mean"

	OpReshape   Op = "reshape"
	OpTranspose Op = "transpose"
	OpBroadcast Op = "broadcast"
	OpSlice     Op = "slice"
	OpConcat    Op = "concat"
	OpGather    Op = "gather"
	OpScatter   Op = "scatter_add"
	OpOneHot    Op = "one_hot"

	OpMatmul       Op = "matmul"
	OpGroupedMM    Op = "grouped_matmul"
	OpGroupedMMW   Op = "grouped_matmul_wgrad"
	OpDequant      Op = "dequant"
	OpSoftmax      Op = "softmax"
	OpRMSNorm      Op = "rmsnorm"
	OpCrossEntropy Op = "cross_entropy"
	OpConv         Op = "causal_conv1d"
	OpConvBwd      Op = "causal_conv1d_bwd"
	OpScan         Op = "selective_scan"
	OpScanBwd      Op = "selective_scan_bwd"
	OpTopK         Op = "topk"
	OpMoERoute     Op = "moe_route"

	// Ops the training passes emit.
	OpRMSNormBwd      Op = "rmsnorm_bwd"
	OpCrossEntropyBwd Op = "cross_entropy_bwd"
	OpAdamW           Op = "adamw"
)

var catalogue = map[Op]*OpDef{}

func def(d OpDef) { catalogue[d.Op] = &d }

// Lookup returns the catalogue entry of op.
func Lookup(op Op) (*OpDef, bool) {
	d, ok := catalogue[op]
	return d, ok
}

// Ops lists the catalogue, sorted by name.
func Ops() []*OpDef {
	out := make([]*OpDef, 0, len(catalogue))
	for _, d := range catalogue {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Op < out[j].Op })
	return out
}

func init() {
	def(OpDef{Op: OpInput, Category: Source, Doc: "a named graph input (a batch)",
		Attrs: []AttrDef{{Name: "name", Kind: AttrString}}})
	def(OpDef{Op: OpParam, Category: Source, Doc: "a named parameter (weights, optimizer state)",
		Attrs: []AttrDef{{Name: "name", Kind: AttrString}}})
	def(OpDef{Op: OpConst, Category: Source, Doc: "a tensor filled with one value",
		Attrs: []AttrDef{{Name: "value", Kind: AttrFloat}}})

	axes := []AttrDef{{Name: "axes", Kind: AttrInts}, {Name: "keep", Kind: AttrBool, Optional: true, Default: false}}
	for _, r := range []struct {
		op  Op
		doc string
	}{{OpReduceSum, "sum over axes"}, {OpReduceMax, "maximum over axes"}, {OpReduceMean, "mean over axes"}} {
		def(OpDef{Op: r.op, Doc: r.doc, Category: Reduction, Inputs: 1, Differentiable: true, Attrs: axes, Infer: inferReduce})
	}

	def(OpDef{Op: OpReshape, Doc: "same elements, new shape", Category: Layout, Inputs: 1, Differentiable: true,
		Attrs: []AttrDef{{Name: "shape", Kind: AttrInts}}, Infer: inferReshape})
	def(OpDef{Op: OpTranspose, Doc: "permute axes: out.shape[i] = in.shape[perm[i]]", Category: Layout, Inputs: 1,
		Differentiable: true, Attrs: []AttrDef{{Name: "perm", Kind: AttrInts}}, Infer: inferTranspose})
	def(OpDef{Op: OpBroadcast, Doc: "repeat along new leading axes and size-1 axes (numpy rules)", Category: Layout,
		Inputs: 1, Differentiable: true, Attrs: []AttrDef{{Name: "shape", Kind: AttrInts}}, Infer: inferBroadcast})
	def(OpDef{Op: OpSlice, Doc: "elements start ≤ i < end along axis", Category: Layout, Inputs: 1, Differentiable: true,
		Attrs: []AttrDef{{Name: "axis", Kind: AttrInt}, {Name: "start", Kind: AttrInt}, {Name: "end", Kind: AttrInt}},
		Infer: inferSlice})
	def(OpDef{Op: OpConcat, Doc: "join along axis", Category: Layout, Inputs: -1, Differentiable: true,
		Attrs: []AttrDef{{Name: "axis", Kind: AttrInt}}, Infer: inferConcat})
	def(OpDef{Op: OpGather, Doc: "rows of table picked by integer indices: out[i…] = table[idx[i…]]", Category: Layout,
		Inputs: 2, Differentiable: true, Infer: inferGather})
	def(OpDef{Op: OpScatter, Doc: "out[idx[i…]] += src[i…], out has `rows` rows (gather's adjoint)", Category: Layout,
		Inputs: 2, Differentiable: true, Attrs: []AttrDef{{Name: "rows", Kind: AttrInt}}, Infer: inferScatter})
	def(OpDef{Op: OpOneHot, Doc: "1.0 at idx along a new last axis of size depth (an index outside [0, depth) gives a zero row)", Category: Layout, Inputs: 1,
		Attrs: []AttrDef{{Name: "depth", Kind: AttrInt}}, Infer: inferOneHot})

	def(OpDef{Op: OpMatmul, Doc: "batched a·b over the last two axes (ta, tb transpose them)", Category: Contraction,
		Inputs: 2, Differentiable: true, Infer: inferMatmul,
		Attrs: []AttrDef{{Name: "ta", Kind: AttrBool, Optional: true, Default: false}, {Name: "tb", Kind: AttrBool, Optional: true, Default: false}}})
	def(OpDef{Op: OpGroupedMM, Doc: "rows offsets[e] ≤ r < offsets[e+1] of x times w[e] (dropless MoE experts); offsets non-decreasing in [0, R], rows outside give 0",
		Category: Contraction, Inputs: 3, Differentiable: true, Infer: inferGroupedMM,
		Attrs: []AttrDef{{Name: "tb", Kind: AttrBool, Optional: true, Default: false}}})
	def(OpDef{Op: OpGroupedMMW, Doc: "per-expert dy[rows e]ᵀ·x[rows e] → (E,N,K): the weight gradient of grouped_matmul with tb (transpose it for tb=false)",
		Category: Contraction, Inputs: 3, Infer: inferGroupedMMW})
	def(OpDef{Op: OpDequant, Doc: "NF4 codes × double-quantised block absmax → f32 (frozen: no gradient)",
		Category: Elementwise, Inputs: 1, Infer: inferDequant})
	def(OpDef{Op: OpSoftmax, Doc: "softmax over the last axis", Category: Reduction, Inputs: 1, Differentiable: true,
		Infer: inferSoftmax})
	def(OpDef{Op: OpRMSNorm, Doc: "x/√(mean(x²)+eps)·gamma over the last axis", Category: Reduction, Inputs: 2,
		Differentiable: true, Attrs: []AttrDef{{Name: "eps", Kind: AttrFloat}}, Infer: inferRMSNorm})
	def(OpDef{Op: OpCrossEntropy, Doc: "mean over non-ignored targets of logsumexp(z) − z[target]", Category: Reduction,
		Inputs: 2, Differentiable: true, Infer: inferCrossEntropy,
		Attrs: []AttrDef{{Name: "ignore_index", Kind: AttrInt, Optional: true, Default: -100}}})
	def(OpDef{Op: OpConv, Doc: "causal depthwise conv over L: b[c] + Σk w[c,k]·x[t−K+1+k, c]", Category: Special,
		Inputs: 3, Differentiable: true, Infer: inferConv})
	def(OpDef{Op: OpConvBwd, Doc: "causal_conv1d's (dx, dw, db) from (x, w, dy)", Category: Special, Inputs: 3, Results: 3,
		Infer: inferConvBwd})
	chunk := []AttrDef{{Name: "chunk", Kind: AttrInt}}
	def(OpDef{Op: OpScan, Doc: "Mamba selective scan (u, Δ, A, B, C, D) → (y, state at the start of each chunk)",
		Category: Special, Inputs: 6, Results: 2, Differentiable: true, Attrs: chunk, Infer: inferScan})
	def(OpDef{Op: OpScanBwd, Doc: "selective scan adjoint: recomputes states per chunk → (du, dΔ, dA, dB, dC, dD)",
		Category: Special, Inputs: 8, Results: 6, Attrs: chunk, Infer: inferScanBwd})
	def(OpDef{Op: OpTopK, Doc: "k largest along the last axis, descending (ties: lower index first) → (values, indices)",
		Category: Special, Inputs: 1, Results: 2, Differentiable: true, Attrs: []AttrDef{{Name: "k", Kind: AttrInt}}, Infer: inferTopK})
	def(OpDef{Op: OpMoERoute, Doc: "expert choices (T,k) → (token of each row, slot t·k+j of each row, expert offsets), rows grouped by expert",
		Category: Special, Inputs: 1, Results: 3, Attrs: []AttrDef{{Name: "experts", Kind: AttrInt}}, Infer: inferMoERoute})
}

// NumResults is the number of outputs of the op.
func (d *OpDef) NumResults() int { return max(d.Results, 1) }

func init() {
	def(OpDef{Op: OpRMSNormBwd, Doc: "rmsnorm's (dx, dgamma) from (x, gamma, dy)", Category: Reduction, Inputs: 3,
		Results: 2, Attrs: []AttrDef{{Name: "eps", Kind: AttrFloat}}, Infer: inferRMSNormBwd})
	def(OpDef{Op: OpCrossEntropyBwd, Doc: "cross_entropy's dlogits = (softmax(z) − onehot(y))·dloss/count from (z, y, dloss)",
		Category: Reduction, Inputs: 3, Infer: inferCrossEntropyBwd,
		Attrs: []AttrDef{{Name: "ignore_index", Kind: AttrInt, Optional: true, Default: -100}}})
	// The optional seventh operand gates the step on the device: a train
	// step with loss scaling skips a step whose gradients overflowed.
	def(OpDef{Op: OpAdamW, Doc: "decoupled AdamW step on (θ, g, m, v, lr, step[, apply]) → (θ', m', v'); lr and step (counting from 1) are f32 scalars; an apply of 0 returns θ, m, v unchanged",
		Category: Elementwise, Inputs: -1, Results: 3, Infer: inferAdamW,
		Attrs: []AttrDef{{Name: "beta1", Kind: AttrFloat}, {Name: "beta2", Kind: AttrFloat}, {Name: "eps", Kind: AttrFloat},
			{Name: "weight_decay", Kind: AttrFloat}}})
}

func inferRMSNormBwd(in []Type, a Attrs) ([]Type, error) {
	if _, err := inferRMSNorm(in[:2], a); err != nil {
		return nil, err
	}
	if !in[2].Equal(in[0]) {
		return nil, fmt.Errorf("rmsnorm gradient %v must match input %v", in[2], in[0])
	}
	return []Type{in[0], in[1]}, nil
}

func inferCrossEntropyBwd(in []Type, a Attrs) ([]Type, error) {
	if _, err := inferCrossEntropy(in[:2], a); err != nil {
		return nil, err
	}
	if !in[2].Equal(T(F32)) {
		return nil, fmt.Errorf("loss gradient must be an f32 scalar, got %v", in[2])
	}
	return one(in[0]), nil
}

func inferAdamW(in []Type, _ Attrs) ([]Type, error) {
	if len(in) != 6 && len(in) != 7 {
		return nil, fmt.Errorf("adamw takes 6 operands (θ, g, m, v, lr, step) and an optional apply flag, got %d", len(in))
	}
	p := in[0]
	if p.DType != F32 {
		return nil, fmt.Errorf("adamw updates f32 parameters, got %v", p)
	}
	for i, name := range []string{"gradient", "first moment", "second moment"} {
		if !in[i+1].Equal(p) {
			return nil, fmt.Errorf("adamw %s %v must match the parameter %v", name, in[i+1], p)
		}
	}
	for i, name := range []string{"lr", "step", "apply flag"}[:len(in)-4] {
		if !in[i+4].Equal(T(F32)) {
			return nil, fmt.Errorf("adamw %s must be an f32 scalar, got %v", name, in[i+4])
		}
	}
	return []Type{p, p, p}, nil
}

func one(t Type) []Type { return []Type{t} }

func needFloat(what string, t Type) error {
	if !t.DType.IsFloat() {
		return fmt.Errorf("%s must be a float tensor, got %v", what, t)
	}
	return nil
}

func needInt(what string, t Type) error {
	if t.DType != I32 {
		return fmt.Errorf("%s must be i32, got %v", what, t)
	}
	return nil
}

func needRank(what string, t Type, r int) error {
	if len(t.Shape) != r {
		return fmt.Errorf("%s must have rank %d, got %v", what, r, t)
	}
	return nil
}

func inferUnary(in []Type, _ Attrs) ([]Type, error) {
	if err := needFloat("operand", in[0]); err != nil {
		return nil, err
	}
	return one(in[0]), nil
}

func inferSoftmax(in []Type, _ Attrs) ([]Type, error) {
	if len(in[0].Shape) < 1 {
		return nil, fmt.Errorf("softmax needs an axis, got a scalar")
	}
	return inferUnary(in, nil)
}

// noNF4 rejects NF4 operands of layout ops: quantisation blocks are flat, so
// only reshape keeps them meaningful.
func noNF4(t Type) error {
	if t.DType == NF4 {
		return fmt.Errorf("nf4 weights are read through dequant, not %v", t)
	}
	return nil
}

func inferCast(in []Type, a Attrs) ([]Type, error) {
	to := a.DType("to")
	if in[0].DType == NF4 || to == NF4 || to == Invalid {
		return nil, fmt.Errorf("cannot cast %v to %v (NF4 is produced by quantisation, read by dequant)", in[0], to)
	}
	return one(Type{to, in[0].Shape}), nil
}

func inferBinary(in []Type, _ Attrs) ([]Type, error) {
	if !in[0].Equal(in[1]) {
		return nil, fmt.Errorf("operands differ: %v and %v", in[0], in[1])
	}
	return inferUnary(in[:1], nil)
}

func checkAxes(axes []int, rank int) error {
	for i, ax := range axes {
		if ax < 0 || ax >= rank {
			return fmt.Errorf("axis %d out of range for rank %d", ax, rank)
		}
		if i > 0 && ax <= axes[i-1] {
			return fmt.Errorf("axes %v must be increasing", axes)
		}
	}
	return nil
}

func inferReduce(in []Type, a Attrs) ([]Type, error) {
	axes := a.Ints("axes")
	if err := checkAxes(axes, len(in[0].Shape)); err != nil {
		return nil, err
	}
	if err := needFloat("operand", in[0]); err != nil {
		return nil, err
	}
	var out Shape
	for i, d := range in[0].Shape {
		if contains(axes, i) {
			if a.Bool("keep") {
				out = append(out, 1)
			}
			continue
		}
		out = append(out, d)
	}
	return one(Type{in[0].DType, out}), nil
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func inferReshape(in []Type, a Attrs) ([]Type, error) {
	s := Shape(a.Ints("shape"))
	if err := checkShape(s); err != nil {
		return nil, err
	}
	if s.Elems() != in[0].Shape.Elems() {
		return nil, fmt.Errorf("cannot reshape %v (%d elements) to %v (%d elements)", in[0], in[0].Shape.Elems(), s, s.Elems())
	}
	return one(Type{in[0].DType, s.Clone()}), nil
}

func inferTranspose(in []Type, a Attrs) ([]Type, error) {
	if err := noNF4(in[0]); err != nil {
		return nil, err
	}
	perm := a.Ints("perm")
	r := len(in[0].Shape)
	if len(perm) != r {
		return nil, fmt.Errorf("perm %v has %d entries for rank %d", perm, len(perm), r)
	}
	seen := make([]bool, r)
	out := make(Shape, r)
	for i, p := range perm {
		if p < 0 || p >= r || seen[p] {
			return nil, fmt.Errorf("perm %v is not a permutation of 0..%d", perm, r-1)
		}
		seen[p] = true
		out[i] = in[0].Shape[p]
	}
	return one(Type{in[0].DType, out}), nil
}

// BroadcastShapes is the numpy result shape of two shapes, right-aligned.
func BroadcastShapes(x, y Shape) (Shape, error) {
	if len(x) < len(y) {
		x, y = y, x
	}
	out := x.Clone()
	off := len(x) - len(y)
	for i, d := range y {
		switch {
		case out[off+i] == d || d == 1:
		case out[off+i] == 1:
			out[off+i] = d
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", x, y)
		}
	}
	return out, nil
}

func inferBroadcast(in []Type, a Attrs) ([]Type, error) {
	if err := noNF4(in[0]); err != nil {
		return nil, err
	}
	s := Shape(a.Ints("shape"))
	if err := checkShape(s); err != nil {
		return nil, err
	}
	if b, err := BroadcastShapes(in[0].Shape, s); err != nil || !b.Equal(s) {
		return nil, fmt.Errorf("cannot broadcast %v to %v", in[0], s)
	}
	return one(Type{in[0].DType, s.Clone()}), nil
}

func inferSlice(in []Type, a Attrs) ([]Type, error) {
	if err := noNF4(in[0]); err != nil {
		return nil, err
	}
	ax, start, end := a.Int("axis"), a.Int("start"), a.Int("end")
	s := in[0].Shape
	if ax < 0 || ax >= len(s) {
		return nil, fmt.Errorf("slice axis %d out of range for %v", ax, in[0])
	}
	if start < 0 || end > s[ax] || start >= end {
		return nil, fmt.Errorf("slice [%d:%d] out of range for axis %d of size %d", start, end, ax, s[ax])
	}
	out := s.Clone()
	out[ax] = end - start
	return one(Type{in[0].DType, out}), nil
}

func inferConcat(in []Type, a Attrs) ([]Type, error) {
	if err := noNF4(in[0]); err != nil {
		return nil, err
	}
	ax := a.Int("axis")
	first := in[0]
	if ax < 0 || ax >= len(first.Shape) {
		return nil, fmt.Errorf("concat axis %d out of range for %v", ax, first)
	}
	out := first.Shape.Clone()
	for _, t := range in[1:] {
		o := t.Shape.Clone()
		if len(o) == len(out) {
			o[ax] = out[ax]
		}
		if t.DType != first.DType || !o.Equal(out) {
			return nil, fmt.Errorf("cannot concat %v and %v along axis %d", first, t, ax)
		}
		out[ax] += t.Shape[ax]
	}
	return one(Type{first.DType, out}), nil
}

func inferGather(in []Type, _ Attrs) ([]Type, error) {
	table, idx := in[0], in[1]
	if err := needInt("gather indices", idx); err != nil {
		return nil, err
	}
	if len(table.Shape) < 1 || table.DType == NF4 {
		return nil, fmt.Errorf("gather table must be a dense tensor of rank ≥ 1, got %v", table)
	}
	out := append(idx.Shape.Clone(), table.Shape[1:]...)
	return one(Type{table.DType, out}), nil
}

func inferScatter(in []Type, a Attrs) ([]Type, error) {
	idx, src := in[0], in[1]
	if err := needInt("scatter indices", idx); err != nil {
		return nil, err
	}
	if err := needFloat("scatter source", src); err != nil {
		return nil, err
	}
	n := len(idx.Shape)
	if len(src.Shape) < n || !src.Shape[:n].Equal(idx.Shape) {
		return nil, fmt.Errorf("scatter source %v must start with the index shape %v", src, idx.Shape)
	}
	out := append(Shape{a.Int("rows")}, src.Shape[n:]...)
	if err := checkShape(out); err != nil {
		return nil, err
	}
	return one(Type{src.DType, out}), nil
}

func inferOneHot(in []Type, a Attrs) ([]Type, error) {
	if err := needInt("one_hot indices", in[0]); err != nil {
		return nil, err
	}
	out := append(in[0].Shape.Clone(), a.Int("depth"))
	if err := checkShape(out); err != nil {
		return nil, err
	}
	return one(Type{F32, out}), nil
}

// matmulDims returns the (rows, inner) of an operand's last two axes, read
// transposed when t is set.
func matmulDims(s Shape, t bool) (int, int) {
	r, c := s[len(s)-2], s[len(s)-1]
	if t {
		return c, r
	}
	return r, c
}

func inferMatmul(in []Type, a Attrs) ([]Type, error) {
	x, w := in[0], in[1]
	if err := needFloat("matmul lhs", x); err != nil {
		return nil, err
	}
	if err := needFloat("matmul rhs", w); err != nil {
		return nil, err
	}
	if len(x.Shape) < 2 || len(w.Shape) < 2 {
		return nil, fmt.Errorf("matmul needs rank ≥ 2 operands, got %v and %v", x, w)
	}
	if x.DType != w.DType {
		return nil, fmt.Errorf("matmul operands differ in dtype: %v and %v", x, w)
	}
	m, k := matmulDims(x.Shape, a.Bool("ta"))
	k2, n := matmulDims(w.Shape, a.Bool("tb"))
	if k != k2 {
		return nil, fmt.Errorf("matmul inner dimensions differ: %v (ta=%v) and %v (tb=%v)", x, a.Bool("ta"), w, a.Bool("tb"))
	}
	xb, wb := x.Shape[:len(x.Shape)-2], w.Shape[:len(w.Shape)-2]
	if len(wb) > 0 && !wb.Equal(xb) {
		return nil, fmt.Errorf("matmul batch axes differ: %v and %v", x, w)
	}
	out := append(xb.Clone(), m, n)
	return one(Type{x.DType, out}), nil
}

func inferOffsets(off Type) (int, error) {
	if err := needInt("expert offsets", off); err != nil {
		return 0, err
	}
	if err := needRank("expert offsets", off, 1); err != nil {
		return 0, err
	}
	if off.Shape[0] < 2 {
		return 0, fmt.Errorf("expert offsets need at least 2 entries, got %v", off)
	}
	return off.Shape[0] - 1, nil
}

func inferGroupedMM(in []Type, a Attrs) ([]Type, error) {
	x, w := in[0], in[1]
	e, err := inferOffsets(in[2])
	if err != nil {
		return nil, err
	}
	if err := needRank("grouped_matmul input", x, 2); err != nil {
		return nil, err
	}
	if err := needRank("grouped_matmul weights", w, 3); err != nil {
		return nil, err
	}
	if x.DType != w.DType || !x.DType.IsFloat() {
		return nil, fmt.Errorf("grouped_matmul operands must share a float dtype: %v and %v", x, w)
	}
	if w.Shape[0] != e {
		return nil, fmt.Errorf("grouped_matmul weights %v have %d experts, offsets say %d", w, w.Shape[0], e)
	}
	k, n := matmulDims(w.Shape, a.Bool("tb"))
	if x.Shape[1] != k {
		return nil, fmt.Errorf("grouped_matmul inner dimensions differ: %v and %v (tb=%v)", x, w, a.Bool("tb"))
	}
	return one(Type{x.DType, Shape{x.Shape[0], n}}), nil
}

func inferGroupedMMW(in []Type, _ Attrs) ([]Type, error) {
	dy, x := in[0], in[1]
	e, err := inferOffsets(in[2])
	if err != nil {
		return nil, err
	}
	if len(dy.Shape) != 2 || len(x.Shape) != 2 || dy.Shape[0] != x.Shape[0] || dy.DType != x.DType || !x.DType.IsFloat() {
		return nil, fmt.Errorf("grouped_matmul_wgrad needs (R,N) and (R,K) float operands, got %v and %v", dy, x)
	}
	return one(Type{x.DType, Shape{e, dy.Shape[1], x.Shape[1]}}), nil
}

func inferDequant(in []Type, _ Attrs) ([]Type, error) {
	if in[0].DType != NF4 {
		return nil, fmt.Errorf("dequant reads nf4 weights, got %v", in[0])
	}
	return one(Type{F32, in[0].Shape.Clone()}), nil
}

func inferRMSNorm(in []Type, a Attrs) ([]Type, error) {
	x, g := in[0], in[1]
	if err := needFloat("rmsnorm input", x); err != nil {
		return nil, err
	}
	if len(x.Shape) < 1 || len(g.Shape) != 1 || g.Shape[0] != x.Shape[len(x.Shape)-1] || g.DType != x.DType {
		return nil, fmt.Errorf("rmsnorm weight %v must match the last axis of %v", g, x)
	}
	if a.Float("eps") <= 0 {
		return nil, fmt.Errorf("rmsnorm eps must be positive, got %g", a.Float("eps"))
	}
	return one(x), nil
}

func inferCrossEntropy(in []Type, _ Attrs) ([]Type, error) {
	z, y := in[0], in[1]
	if err := needFloat("logits", z); err != nil {
		return nil, err
	}
	if err := needInt("targets", y); err != nil {
		return nil, err
	}
	if len(z.Shape) < 1 || !z.Shape[:len(z.Shape)-1].Equal(y.Shape) {
		return nil, fmt.Errorf("targets %v must match the leading axes of logits %v", y, z)
	}
	return one(Type{F32, Shape{}}), nil
}

func inferConv(in []Type, _ Attrs) ([]Type, error) {
	x, w, b := in[0], in[1], in[2]
	if err := needRank("conv input", x, 3); err != nil {
		return nil, err
	}
	if err := needFloat("conv input", x); err != nil {
		return nil, err
	}
	c := x.Shape[2]
	if len(w.Shape) != 2 || w.Shape[0] != c || len(b.Shape) != 1 || b.Shape[0] != c || w.DType != x.DType || b.DType != x.DType {
		return nil, fmt.Errorf("conv weight %v and bias %v must be (C,K) and (C) with C=%d", w, b, c)
	}
	return one(x), nil
}

func inferConvBwd(in []Type, _ Attrs) ([]Type, error) {
	x, w, dy := in[0], in[1], in[2]
	if !dy.Equal(x) {
		return nil, fmt.Errorf("conv gradient %v must match input %v", dy, x)
	}
	if _, err := inferConv([]Type{x, w, {x.DType, Shape{x.Shape[2]}}}, nil); err != nil {
		return nil, err
	}
	return []Type{x, w, {x.DType, Shape{x.Shape[2]}}}, nil
}

// scanDims checks the six selective-scan operands and returns B, L, E, N.
func scanDims(in []Type, chunk int) (b, l, e, n int, err error) {
	u := in[0]
	if len(u.Shape) != 3 || u.DType != F32 {
		return 0, 0, 0, 0, fmt.Errorf("scan input u must be f32 (B,L,E), got %v", u)
	}
	b, l, e = u.Shape[0], u.Shape[1], u.Shape[2]
	a := in[2]
	if len(a.Shape) != 2 || a.Shape[0] != e {
		return 0, 0, 0, 0, fmt.Errorf("scan A must be (E=%d,N), got %v", e, a)
	}
	n = a.Shape[1]
	want := []Type{u, u, T(F32, e, n), T(F32, b, l, n), T(F32, b, l, n), T(F32, e)}
	names := []string{"u", "Δ", "A", "B", "C", "D"}
	for i, w := range want {
		if !in[i].Equal(w) {
			return 0, 0, 0, 0, fmt.Errorf("scan %s must be %v, got %v", names[i], w, in[i])
		}
	}
	if chunk <= 0 {
		return 0, 0, 0, 0, fmt.Errorf("scan chunk must be positive, got %d", chunk)
	}
	return b, l, e, n, nil
}

// ScanChunks is the number of chunks a scan of length l is split into.
func ScanChunks(l, chunk int) int { return (l + chunk - 1) / chunk }

func inferScan(in []Type, a Attrs) ([]Type, error) {
	b, l, e, n, err := scanDims(in, a.Int("chunk"))
	if err != nil {
		return nil, err
	}
	return []Type{in[0], T(F32, b, ScanChunks(l, a.Int("chunk")), e, n)}, nil
}

func inferScanBwd(in []Type, a Attrs) ([]Type, error) {
	fwd, err := inferScan(in[:6], a)
	if err != nil {
		return nil, err
	}
	if !in[6].Equal(fwd[1]) || !in[7].Equal(fwd[0]) {
		return nil, fmt.Errorf("scan backward needs states %v and dy %v, got %v and %v", fwd[1], fwd[0], in[6], in[7])
	}
	return []Type{in[0], in[1], in[2], in[3], in[4], in[5]}, nil
}

func inferTopK(in []Type, a Attrs) ([]Type, error) {
	x, k := in[0], a.Int("k")
	if err := needFloat("topk input", x); err != nil {
		return nil, err
	}
	if len(x.Shape) < 1 || k < 1 || k > x.Shape[len(x.Shape)-1] {
		return nil, fmt.Errorf("topk k=%d must be between 1 and the last axis of %v", k, x)
	}
	s := x.Shape.Clone()
	s[len(s)-1] = k
	return []Type{{x.DType, s}, {I32, s.Clone()}}, nil
}

func inferMoERoute(in []Type, a Attrs) ([]Type, error) {
	idx, e := in[0], a.Int("experts")
	if err := needInt("expert choices", idx); err != nil {
		return nil, err
	}
	if err := needRank("expert choices", idx, 2); err != nil {
		return nil, err
	}
	if e < 1 {
		return nil, fmt.Errorf("moe_route needs at least one expert, got %d", e)
	}
	r := idx.Shape[0] * idx.Shape[1]
	return []Type{T(I32, r), T(I32, r), T(I32, e+1)}, nil
}
