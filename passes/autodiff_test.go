package passes

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// caseBuilder builds the small graph of a gradient-check case and records
// the tensors to feed it: every float operand is a trainable parameter with
// random values (so its gradient is checked), integer operands are inputs.
type caseBuilder struct {
	*ir.Builder
	rng           *rand.Rand
	params, feeds map[string]*ref.Tensor
}

// param is a trainable f32 parameter uniform in [lo, hi).
func (c *caseBuilder) param(name string, lo, hi float64, shape ...int) *ir.Value {
	v := c.Param(ir.Param{Name: name, Role: ir.Trainable, Init: ir.Init{Kind: "zeros"}}, ir.T(ir.F32, shape...))
	t := ref.New(v.Type)
	for i := range t.Data {
		t.Data[i] = lo + (hi-lo)*c.rng.Float64()
	}
	c.params[name] = t
	return v
}

// x is a parameter uniform in [-1, 1).
func (c *caseBuilder) x(name string, shape ...int) *ir.Value { return c.param(name, -1, 1, shape...) }

// ints is an i32 input.
func (c *caseBuilder) ints(name string, shape []int, vals ...int) *ir.Value {
	v := c.Input(name, ir.T(ir.I32, shape...))
	t, err := ref.FromInts(shape, vals)
	if err != nil {
		panic(err)
	}
	c.feeds[name] = t
	return v
}

// nf4 is a frozen NF4 weight.
func (c *caseBuilder) nf4(name string, shape ...int) *ir.Value {
	v := c.Param(ir.Param{Name: name, Role: ir.FrozenNF4, Init: ir.Init{Kind: "zeros"}}, ir.T(ir.NF4, shape...))
	w := make([]float32, v.Type.Shape.Elems())
	for i := range w {
		w[i] = float32(c.rng.Float64()*2 - 1)
	}
	t, err := ref.QuantizeNF4(shape, w)
	if err != nil {
		panic(err)
	}
	c.params[name] = t
	return v
}

// gradCase is a small graph around one op. Its float results are
// contracted with fixed random tensors into the loss, so every output
// element matters.
type gradCase struct {
	op    ir.Op // the op under test; "" for composite cases
	name  string
	build func(c *caseBuilder) []*ir.Value
}

func mm(ta, tb bool, xs, ws []int) gradCase {
	return gradCase{op: ir.OpMatmul, name: fmt.Sprintf("ta=%v,tb=%v,%v·%v", ta, tb, xs, ws), build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Matmul(c.x("x", xs...), c.x("w", ws...), ta, tb)}
	}}
}

func gmm(tb bool) gradCase {
	return gradCase{op: ir.OpGroupedMM, name: fmt.Sprintf("tb=%v", tb), build: func(c *caseBuilder) []*ir.Value {
		ws := []int{3, 4, 5}
		if tb {
			ws = []int{3, 5, 4}
		}
		// Expert 1 owns no rows; row 6 belongs to no expert (its output is 0).
		off := c.ints("off", []int{4}, 0, 2, 2, 6)
		return []*ir.Value{c.Op(ir.OpGroupedMM, ir.Attrs{"tb": tb}, c.x("x", 7, 4), c.x("w", ws...), off)}
	}}
}

// elementwiseCase checks the gradient of an element-wise op with scalar
// maths from its catalogue entry alone: each operand a (3,4) parameter
// drawn from the op's Domain, attributes from sampleAttrs.
func elementwiseCase(t *testing.T, d *ir.OpDef) gradCase {
	a := sampleAttrs(t, d)
	return gradCase{op: d.Op, build: func(c *caseBuilder) []*ir.Value {
		in := make([]*ir.Value, d.Inputs)
		for i := range in {
			in[i] = c.param(fmt.Sprintf("x%d", i), d.Elem.Domain[0], d.Elem.Domain[1], 3, 4)
		}
		return []*ir.Value{c.Op(d.Op, a, in...)}
	}}
}

// sampleAttrs gives each attribute of an element-wise op a value: a factor
// of -1.7, the dtype f32 (a cast whose gradient is checked).
func sampleAttrs(t *testing.T, d *ir.OpDef) ir.Attrs {
	a := ir.Attrs{}
	for _, ad := range d.Attrs {
		switch ad.Kind {
		case ir.AttrFloat:
			a[ad.Name] = -1.7
		case ir.AttrDType:
			a[ad.Name] = ir.F32
		default:
			t.Fatalf("%s: no sample value for a %s attribute %q", d.Op, ad.Kind, ad.Name)
		}
	}
	return a
}

// TestElementwiseGradients checks, against central differences, the
// gradient of every differentiable element-wise op of the catalogue.
func TestElementwiseGradients(t *testing.T) {
	n := 0
	for _, d := range ir.Ops() {
		if d.Elem == nil || !d.Differentiable {
			continue
		}
		n++
		t.Run(string(d.Op), func(t *testing.T) {
			gc := elementwiseCase(t, d)
			fwd, feeds, params := gc.graph(t, 1)
			r := eval(t, gradGraph(t, fwd), feeds, params)
			loss := func() float64 { return eval(t, fwd, feeds, params).Outputs["loss"].Data[0] }
			for _, p := range fwd.Params {
				x := params[p.Name].Data
				numericCheck(t, p.Name, x, all(len(x)), r.Outputs["grad."+p.Name].Data, loss)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d differentiable element-wise ops", n)
	}
}

// gradCases are the gradient checks of the other differentiable ops, and
// of compositions (element-wise ops: TestElementwiseGradients).
var gradCases = []gradCase{
	{op: ir.OpReduceSum, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Reduce(ir.OpReduceSum, c.x("x", 2, 3, 4), false, 0, 2)}
	}},
	{op: ir.OpReduceMean, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Reduce(ir.OpReduceMean, c.x("x", 2, 3, 4), true, 1)}
	}},
	{op: ir.OpReduceMax, build: func(c *caseBuilder) []*ir.Value {
		x := c.x("x", 2, 3, 4)
		return []*ir.Value{c.Reduce(ir.OpReduceMax, x, false, 1), c.Reduce(ir.OpReduceMax, x, true, 0, 2)}
	}},
	{op: ir.OpReshape, build: func(c *caseBuilder) []*ir.Value { return []*ir.Value{c.Reshape(c.x("x", 2, 6), 3, 4)} }},
	{op: ir.OpTranspose, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpTranspose, ir.Attrs{"perm": []int{2, 0, 1}}, c.x("x", 2, 3, 4))}
	}},
	{op: ir.OpBroadcast, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.BroadcastTo(c.x("x", 3, 1), ir.Shape{2, 3, 4})}
	}},
	{op: ir.OpSlice, build: func(c *caseBuilder) []*ir.Value {
		x := c.x("x", 3, 5)
		return []*ir.Value{c.Slice(x, 1, 1, 3), c.Slice(x, 0, 0, 2), c.Slice(x, 1, 2, 5)}
	}},
	{op: ir.OpConcat, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpConcat, ir.Attrs{"axis": 1}, c.x("a", 2, 1), c.x("b", 2, 3), c.x("c", 2, 2))}
	}},
	{op: ir.OpGather, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpGather, nil, c.x("table", 4, 3), c.ints("idx", []int{2, 3}, 3, 0, 3, 1, 1, 3))}
	}},
	{op: ir.OpScatter, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpScatter, ir.Attrs{"rows": 4}, c.ints("idx", []int{5}, 3, 0, 3, 1, 3), c.x("src", 5, 2))}
	}},
	mm(false, false, []int{3, 4}, []int{4, 5}), mm(true, false, []int{4, 3}, []int{4, 5}),
	mm(false, true, []int{3, 4}, []int{5, 4}), mm(true, true, []int{4, 3}, []int{5, 4}),
	mm(false, false, []int{2, 3, 4}, []int{2, 4, 5}), mm(true, true, []int{2, 4, 3}, []int{2, 5, 4}),
	// A weight without batch axes: its gradient sums over the batch.
	mm(false, false, []int{2, 2, 3, 4}, []int{4, 5}), mm(false, true, []int{2, 3, 4}, []int{5, 4}),
	mm(true, false, []int{2, 4, 3}, []int{4, 5}), mm(true, true, []int{2, 4, 3}, []int{5, 4}),
	gmm(true), gmm(false),
	{op: ir.OpSoftmax, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Unary(ir.OpSoftmax, c.param("x", -2, 2, 3, 4))}
	}},
	{op: ir.OpRMSNorm, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpRMSNorm, ir.Attrs{"eps": 1e-5}, c.x("x", 2, 3, 5), c.param("gamma", 0.5, 1.5, 5))}
	}},
	{op: ir.OpCrossEntropy, build: func(c *caseBuilder) []*ir.Value {
		y := c.ints("y", []int{2, 3}, 1, -100, 3, 0, 0, 2)
		return []*ir.Value{c.Op(ir.OpCrossEntropy, nil, c.param("z", -3, 3, 2, 3, 4), y)}
	}},
	{op: ir.OpConv, build: func(c *caseBuilder) []*ir.Value {
		return []*ir.Value{c.Op(ir.OpConv, nil, c.x("x", 2, 5, 3), c.x("w", 3, 4), c.x("b", 3))}
	}},
	{op: ir.OpScan, name: "3 chunks, the last partial", build: func(c *caseBuilder) []*ir.Value {
		out := c.Apply(ir.OpScan, ir.Attrs{"chunk": 2}, c.x("u", 2, 5, 3), c.param("dt", 0.1, 1, 2, 5, 3),
			c.param("A", -2, -0.5, 3, 2), c.x("B", 2, 5, 2), c.x("C", 2, 5, 2), c.x("D", 3))
		return out[:1]
	}},
	{op: ir.OpTopK, build: func(c *caseBuilder) []*ir.Value {
		return c.Apply(ir.OpTopK, ir.Attrs{"k": 2}, c.param("x", -2, 2, 3, 5))[:1]
	}},
	{name: "moe layer with aux and z-loss", build: moeCase},
	{name: "qlora linear", build: qloraCase},
}

// moeCase is a top-2 MoE layer as blocks.graph writes it: router softmax,
// topk, renormalisation, dispatch by gather, SwiGLU experts as grouped
// matmuls, combine by scatter_add, the Switch aux loss (whose top-1 one_hot
// takes no gradient), plus the ST-MoE router z-loss mean(logsumexp(z)²).
func moeCase(c *caseBuilder) []*ir.Value {
	const tokens, d, experts, ff, k = 6, 4, 4, 3, 2
	x := c.x("x", tokens, d)
	logits := c.Matmul(x, c.param("router", -2, 2, experts, d), false, true)
	p := c.Unary(ir.OpSoftmax, logits)
	tk := c.Apply(ir.OpTopK, ir.Attrs{"k": k}, p)
	top, choice := tk[0], tk[1]
	weight := c.Binary(ir.OpDiv, top, c.Reduce(ir.OpReduceSum, top, true, 1))
	route := c.Apply(ir.OpMoERoute, ir.Attrs{"experts": experts}, choice)
	rows, slots, off := route[0], route[1], route[2]
	gmmT := func(x, w *ir.Value) *ir.Value { return c.Op(ir.OpGroupedMM, ir.Attrs{"tb": true}, x, w, off) }
	gu := gmmT(c.Op(ir.OpGather, nil, x, rows), c.x("w13", experts, 2*ff, d))
	act := c.Mul(c.Unary(ir.OpSiLU, c.Slice(gu, 1, 0, ff)), c.Slice(gu, 1, ff, 2*ff))
	ys := gmmT(act, c.x("w2", experts, d, ff))
	ws := c.Op(ir.OpGather, nil, c.Reshape(weight, tokens*k), slots)
	y := c.Op(ir.OpScatter, ir.Attrs{"rows": tokens}, rows, c.Binary(ir.OpMul, ys, c.Reshape(ws, tokens*k, 1)))

	f := c.Reduce(ir.OpReduceMean, c.Op(ir.OpOneHot, ir.Attrs{"depth": experts}, c.Slice(choice, 1, 0, 1)), false, 0, 1)
	aux := c.Scale(c.Reduce(ir.OpReduceSum, c.Mul(f, c.Reduce(ir.OpReduceMean, p, false, 0)), false, 0), 0.01*experts)
	m := c.Reduce(ir.OpReduceMax, logits, true, 1)
	lse := c.Add(c.Reshape(m, tokens), c.Unary(ir.OpLog, c.Reduce(ir.OpReduceSum, c.Unary(ir.OpExp, c.Binary(ir.OpSub, logits, m)), false, 1)))
	z := c.Scale(c.Reduce(ir.OpReduceMean, c.Unary(ir.OpSquare, lse), false, 0), 0.001)
	return []*ir.Value{y, aux, z}
}

// qloraCase is a QLoRA linear: x·deq(W)ᵀ + (α/r)·(x·Aᵀ)·Bᵀ with W frozen NF4.
func qloraCase(c *caseBuilder) []*ir.Value {
	x := c.x("x", 2, 3, 8)
	base := c.Matmul(x, c.Unary(ir.OpDequant, c.nf4("w", 6, 8)), false, true)
	low := c.Matmul(c.Matmul(x, c.x("lora_a", 2, 8), false, true), c.x("lora_b", 6, 2), false, true)
	return []*ir.Value{c.Add(base, c.Scale(low, 4))}
}

// build makes the case's forward graph (output "loss") and its feeds and
// parameter values.
func (gc gradCase) graph(t *testing.T, seed uint64) (*ir.Graph, map[string]*ref.Tensor, map[string]*ref.Tensor) {
	t.Helper()
	c := &caseBuilder{Builder: ir.NewBuilder("case"), rng: rand.New(rand.NewPCG(seed, 1)),
		params: map[string]*ref.Tensor{}, feeds: map[string]*ref.Tensor{}}
	var loss *ir.Value
	for i, y := range gc.build(c) {
		name := fmt.Sprintf("w%d", i)
		w := c.Input(name, y.Type)
		wt := ref.New(y.Type)
		for j := range wt.Data {
			wt.Data[j] = c.rng.Float64()*2 - 1
		}
		c.feeds[name] = wt
		axes := all(len(y.Type.Shape))
		term := c.Reduce(ir.OpReduceSum, c.Mul(y, w), false, axes...)
		if loss == nil {
			loss = term
		} else {
			loss = c.Add(loss, term)
		}
	}
	c.Output("loss", loss)
	g, err := c.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g, c.feeds, c.params
}

// gradGraph copies fwd and appends the gradients of its loss with respect
// to its trainable parameters, as outputs "grad.<name>".
func gradGraph(t *testing.T, fwd *ir.Graph) *ir.Graph {
	t.Helper()
	g, err := ir.Rewrite(fwd, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := ir.Extend(g)
	var wrt []*ir.Value
	var names []string
	for _, p := range g.Params {
		if p.Role == ir.Trainable {
			wrt, names = append(wrt, p.Value), append(names, p.Name)
		}
	}
	grads, err := Gradients(b, g.Output("loss").Value, wrt)
	if err != nil {
		t.Fatal(err)
	}
	for i, gr := range grads {
		if gr == nil {
			t.Fatalf("no gradient for %s", names[i])
		}
		b.Output("grad."+names[i], gr)
	}
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGradients checks every case's gradients against central differences
// at every element of every parameter.
func TestGradients(t *testing.T) {
	for i, gc := range gradCases {
		name := string(gc.op)
		if gc.name != "" {
			name += " " + gc.name
		}
		t.Run(name, func(t *testing.T) {
			fwd, feeds, params := gc.graph(t, uint64(i+1))
			gg := gradGraph(t, fwd)
			r := eval(t, gg, feeds, params)
			if gc.op == "" {
				if gap := routingGap(gg, r); gap < 1e-3 {
					t.Fatalf("routing too close to a tie (gap %g): pick another seed", gap)
				}
			}
			loss := func() float64 { return eval(t, fwd, feeds, params).Outputs["loss"].Data[0] }
			for _, p := range fwd.Params {
				if p.Role != ir.Trainable {
					continue
				}
				x := params[p.Name].Data
				numericCheck(t, p.Name, x, all(len(x)), r.Outputs["grad."+p.Name].Data, loss)
			}
		})
	}
}

// TestFrozenBranches: the NF4 weight of a QLoRA linear gets no gradient
// work: the backward has the dx matmul of the base product and two per
// LoRA factor, nothing that reads the dequantised weight for a dW.
func TestFrozenBranches(t *testing.T) {
	fwd, _, _ := gradCase{build: qloraCase}.graph(t, 1)
	gg := gradGraph(t, fwd)
	var deq *ir.Value
	count := 0
	for _, n := range gg.Nodes[len(fwd.Nodes):] {
		if n.Op == ir.OpMatmul {
			count++
		}
	}
	for _, n := range fwd.Nodes {
		if n.Op == ir.OpDequant {
			deq = n.Out()
		}
	}
	if count != 5 {
		t.Errorf("backward has %d matmuls, want 5 (dx of the base, dx and dW of each LoRA factor)", count)
	}
	for _, n := range gg.Nodes[len(fwd.Nodes):] {
		for i, v := range n.Inputs {
			if v == gg.Nodes[deq.Node.ID].Out() && !(n.Op == ir.OpMatmul && i == 1) {
				t.Errorf("backward node %s reads the dequantised weight as operand %d", n.Op, i)
			}
		}
	}
}

// TestCatalogue fails when an op of the catalogue lacks a reference
// implementation, or a differentiable op lacks a VJP rule or a gradient
// check case, or a non-differentiable op has a rule.
func TestCatalogue(t *testing.T) {
	cased := map[ir.Op]bool{}
	for _, gc := range gradCases {
		cased[gc.op] = true
	}
	for _, d := range ir.Ops() {
		if d.Elem != nil {
			cased[d.Op] = true // TestElementwiseGradients
			if d.Differentiable != (d.Elem.Grad != nil) {
				t.Errorf("element-wise op %s: differentiable %v, but its entry has a gradient: %v", d.Op, d.Differentiable, d.Elem.Grad != nil)
			}
		}
		if _, ok := ref.Registry[d.Op]; !ok && d.Category != ir.Source {
			t.Errorf("op %s has no reference implementation", d.Op)
		}
		_, rule := VJPs[d.Op]
		switch {
		case d.Differentiable && !rule:
			t.Errorf("differentiable op %s has no VJP rule", d.Op)
		case d.Differentiable && !cased[d.Op]:
			t.Errorf("differentiable op %s has no gradient-check case", d.Op)
		case !d.Differentiable && rule:
			t.Errorf("op %s is not differentiable but has a VJP rule", d.Op)
		}
	}
}

// TestVJPShapeCheck: a rule whose gradient has the wrong type is an error,
// not a silently wrong graph.
func TestVJPShapeCheck(t *testing.T) {
	neg, _ := ir.Lookup(ir.OpNeg)
	fwd, _, _ := elementwiseCase(t, neg).graph(t, 1) // x: (3,4)
	saved := VJPs[ir.OpNeg]
	defer func() { VJPs[ir.OpNeg] = saved }()
	VJPs[ir.OpNeg] = func(b *ir.Builder, n *ir.Node, dy []*ir.Value, need []bool) []*ir.Value {
		return []*ir.Value{b.Reshape(dy[0], 12)}
	}
	g, _ := ir.Rewrite(fwd, nil)
	_, err := Gradients(ir.Extend(g), g.Output("loss").Value, []*ir.Value{g.Params[0].Value})
	if err == nil {
		t.Fatal("a mis-shaped gradient was accepted")
	}
	t.Log(err)
}

// Gradients of disjoint slices accumulate into concats of at most
// maxConcatParts operands (nested beyond that), with the right values:
// ∂/∂x Σ_i w_i·Σ x[rows of i]² = 2·w_i·x on slice i's rows.
func TestSliceGradientsConcat(t *testing.T) {
	const pieces, rows = 20, 2
	b := ir.NewBuilder("slices")
	x := b.Param(ir.Param{Name: "x", Role: ir.Trainable, Init: ir.Init{Kind: "normal", Args: map[string]float64{"std": 1}}}, ir.T(ir.F32, pieces*rows, 3))
	var loss *ir.Value
	for i := 0; i < pieces; i++ {
		term := b.Scale(b.Reduce(ir.OpReduceSum, b.Unary(ir.OpSquare, b.Slice(x, 0, i*rows, (i+1)*rows)), false, 0, 1), float64(i+1))
		if loss == nil {
			loss = term
		} else {
			loss = b.Add(loss, term)
		}
	}
	b.Output("loss", loss)
	fwd, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	g := gradGraph(t, fwd)
	for _, n := range g.Nodes {
		if n.Op == ir.OpConcat && len(n.Inputs) > maxConcatParts {
			t.Errorf("a concat of %d operands", len(n.Inputs))
		}
		if n.Op == ir.OpAdd && n.Out().Type.Shape.Equal(x.Type.Shape) {
			t.Errorf("slice gradients summed by an add, not joined")
		}
	}
	params, err := ref.InitParams(g, 3)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ref.Eval(g, nil, params)
	if err != nil {
		t.Fatal(err)
	}
	got, xs := res.Outputs["grad.x"].Data, params["x"].Data
	for i := range xs {
		want := 2 * float64(i/(rows*3)+1) * xs[i]
		if math.Abs(got[i]-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Fatalf("grad[%d] = %g, want %g", i, got[i], want)
		}
	}
}
