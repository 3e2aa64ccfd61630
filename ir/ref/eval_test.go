package ref

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

// TestCatalogue fails when an op of the catalogue has no reference
// implementation, or the registry holds an op the catalogue lacks.
func TestCatalogue(t *testing.T) {
	for _, d := range ir.Ops() {
		_, ok := Registry[d.Op]
		if d.Category == ir.Source && ok {
			t.Errorf("source op %q should be handled by Eval, not the registry", d.Op)
		}
		if d.Category != ir.Source && !ok {
			t.Errorf("op %q has no reference implementation", d.Op)
		}
	}
	for op := range Registry {
		if _, ok := ir.Lookup(op); !ok {
			t.Errorf("registry has %q, which the catalogue lacks", op)
		}
	}
}

// smallGraph is y = (x·W)·2, output "y", aux loss mean(y).
func smallGraph(t *testing.T) (*ir.Graph, *ir.Value) {
	t.Helper()
	b := ir.NewBuilder("small")
	x := b.Input("x", ir.T(ir.F32, 2, 3))
	ids := b.Input("ids", ir.T(ir.I32, 2))
	init, _ := ir.NewInit("zeros", nil)
	w := b.Param(ir.Param{Name: "W", Role: ir.Trainable, Init: init}, ir.T(ir.F32, 3, 2))
	y := b.Mul(b.Matmul(x, w, false, false), b.Const(2, ir.T(ir.F32, 2, 2)))
	b.Output("y", y)
	b.Pos, b.Scope = ir.Pos{File: "small.graph", Line: 3, Col: 7}, "head"
	b.Output("rows", b.Op(ir.OpGather, nil, y, ids))
	aux := b.Reduce(ir.OpReduceMean, y, false, 0, 1)
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	g.AuxLosses = append(g.AuxLosses, aux)
	return g, y
}

func TestEvalGraph(t *testing.T) {
	g, y := smallGraph(t)
	in := map[string]*Tensor{"x": f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6), "ids": i32(t, sh(2), 1, 1)}
	ps := map[string]*Tensor{"W": f32(t, sh(3, 2), 1, 0, 0, 1, 1, 1)}
	r, err := Eval(g, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	// x·W = [[4,5],[10,11]].
	expect(t, "y", r.Outputs["y"], sh(2, 2), 0, 8, 10, 20, 22)
	expect(t, "rows", r.Outputs["rows"], sh(2, 2), 0, 20, 22, 20, 22)
	if len(r.AuxLosses) != 1 {
		t.Fatalf("%d aux losses", len(r.AuxLosses))
	}
	expect(t, "aux", r.AuxLosses[0], nil, 0, 15)
	if r.Value(y) != r.Outputs["y"] {
		t.Fatal("Values and Outputs disagree")
	}
	for _, n := range g.Nodes {
		for _, v := range n.Outputs {
			if tv := r.Value(v); tv == nil || !tv.Type.Equal(v.Type) {
				t.Fatalf("value %v: %v", v, tv)
			}
		}
	}
}

func TestEvalRejectsBadFeeds(t *testing.T) {
	g, _ := smallGraph(t)
	x := f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6)
	ids := i32(t, sh(2), 0, 1)
	w := f32(t, sh(3, 2), 1, 0, 0, 1, 1, 1)
	cases := []struct {
		name   string
		in, ps map[string]*Tensor
		want   string
	}{
		{"missing input", map[string]*Tensor{"x": x}, map[string]*Tensor{"W": w}, `missing input(s) ["ids"]`},
		{"missing param", map[string]*Tensor{"x": x, "ids": ids}, nil, `missing parameter(s) ["W"]`},
		{"wrong shape", map[string]*Tensor{"x": w, "ids": ids}, map[string]*Tensor{"W": w}, `input "x" has type f32[3,2], want f32[2,3]`},
		{"wrong dtype", map[string]*Tensor{"x": x, "ids": f32(t, sh(2), 0, 1)}, map[string]*Tensor{"W": w}, `input "ids" has type f32[2], want i32[2]`},
		{"short data", map[string]*Tensor{"x": {Type: x.Type, Data: x.Data[:5]}, "ids": ids}, map[string]*Tensor{"W": w}, `input "x" has 5 values`},
		{"fractional index", map[string]*Tensor{"x": x, "ids": {Type: ids.Type, Data: []float64{0, 0.5}}}, map[string]*Tensor{"W": w}, `input "ids" value 0.5 at 1 is not representable in i32`},
		{"nil tensor", map[string]*Tensor{"x": nil, "ids": ids}, map[string]*Tensor{"W": w}, `input "x" is nil`},
		{"unknown name", map[string]*Tensor{"x": x, "ids": ids}, map[string]*Tensor{"W": w, "w": w}, `no parameter "w"; did you mean "W"?`},
		{"out-of-range gather", map[string]*Tensor{"x": x, "ids": i32(t, sh(2), 0, 2)}, map[string]*Tensor{"W": w}, `node 6 (gather) at small.graph:3:7 in head: index 2 at position 1 is outside the table's 2 rows`},
	}
	for _, c := range cases {
		_, err := Eval(g, c.in, c.ps)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
}

func TestEvalRejectsBadGraphs(t *testing.T) {
	g, y := smallGraph(t)
	y.Type = ir.T(ir.F32, 4) // breaks the shape rule
	if _, err := Eval(g, nil, nil); err == nil || !strings.Contains(err.Error(), "invalid graph") {
		t.Fatalf("bad graph: %v", err)
	}
	// An input node missing from the graph's input table.
	b := ir.NewBuilder("orphan")
	x := b.Input("x", ir.T(ir.F32, 2))
	b.Output("y", b.Unary(ir.OpExp, x))
	g2, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	g2.Inputs = nil
	if _, err := Eval(g2, nil, nil); err == nil || !strings.Contains(err.Error(), "appears 0 times in the graph's tables") {
		t.Fatalf("orphan input: %v", err)
	}
}

// TestStorageRounding: f16 results are rounded like a stored half, consts
// are converted to their dtype, NaN is an ordinary value.
func TestStorageRounding(t *testing.T) {
	b := ir.NewBuilder("half")
	x := b.Input("x", ir.T(ir.F16, 2))
	one := b.Const(1, ir.T(ir.F16, 2))
	b.Output("sum", b.Add(x, one))
	b.Output("third", b.Const(1.0/3, ir.T(ir.F16, 1)))
	b.Output("int", b.Const(-2.9, ir.T(ir.I32, 1)))
	b.Output("nan", b.Unary(ir.OpLog, b.Const(-1, ir.T(ir.F32, 1))))
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	h := math.Ldexp(1, -11) // half an f16 ulp at 1
	xs, err := FromFloat64(ir.T(ir.F16, 2), []float64{h, 3 * h})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Eval(g, map[string]*Tensor{"x": xs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "sum", r.Outputs["sum"], sh(2), 0, 1, 1+4*h) // ties to even
	expect(t, "third", r.Outputs["third"], sh(1), 0, 0.333251953125)
	expect(t, "int", r.Outputs["int"], sh(1), 0, -2)
	expect(t, "nan", r.Outputs["nan"], sh(1), 0, math.NaN())
	// An f16 input must already hold f16 values.
	bad := &Tensor{Type: ir.T(ir.F16, 2), Data: []float64{0.1, 0}}
	if _, err := Eval(g, map[string]*Tensor{"x": bad}, nil); err == nil || !strings.Contains(err.Error(), "is not representable in f16") {
		t.Fatalf("non-f16 input: %v", err)
	}
}

func nf4Tensor(t *testing.T, shape ...int) *Tensor {
	t.Helper()
	w := make([]float32, ir.Shape(shape).Elems())
	for i := range w {
		w[i] = float32(i%7) - 3
	}
	q, err := QuantizeNF4(shape, w)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestNF4Layout: reshape keeps the quantised weights; the shape rules
// refuse other layout ops on NF4.
func TestNF4Layout(t *testing.T) {
	q := nf4Tensor(t, 2, 3, 50)
	r := run(t, ir.OpReshape, ir.Attrs{"shape": []int{6, 50}}, q)[0]
	closeAll(t, "reshaped", run(t, ir.OpDequant, nil, r)[0].Data, run(t, ir.OpDequant, nil, q)[0].Data, 0)
	if _, err := EvalOp(ir.OpTranspose, ir.Attrs{"perm": []int{0, 2, 1}}, q); err == nil || !strings.Contains(err.Error(), "read through dequant") {
		t.Fatalf("transpose of nf4: %v", err)
	}
}

func TestNF4Feeds(t *testing.T) {
	b := ir.NewBuilder("q")
	init, _ := ir.NewInit("zeros", nil)
	w := b.Param(ir.Param{Name: "w", Role: ir.FrozenNF4, Init: init}, ir.T(ir.NF4, 2, 64))
	b.Output("w", b.Op(ir.OpDequant, nil, w))
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Eval(g, nil, map[string]*Tensor{"w": New(ir.T(ir.NF4, 2, 64))}); err == nil || !strings.Contains(err.Error(), "Q is nil") {
		t.Fatalf("nf4 without Q: %v", err)
	}
	small, _ := QuantizeNF4([]int{64}, make([]float32, 64))
	small.Type = ir.T(ir.NF4, 2, 64)
	if _, err := Eval(g, nil, map[string]*Tensor{"w": small}); err == nil || !strings.Contains(err.Error(), "holds 64 quantised weights") {
		t.Fatalf("nf4 of the wrong size: %v", err)
	}
}

// TestNoPanics feeds every op a handful of operand lists, most of them
// wrong; EvalOp must answer with results or an error, never a panic.
func TestNoPanics(t *testing.T) {
	operands := [][]*Tensor{
		nil,
		{f32(t, sh(2), 1, 2)},
		{f32(t, sh(2, 2), 1, 2, 3, 4)},
		{f32(t, sh(2, 2), 1, 2, 3, 4), f32(t, sh(2, 2), 1, 2, 3, 4)},
		{i32(t, sh(2, 2), 0, 5, -1, 1)},
		{f32(t, sh(2, 2), 1, 2, 3, 4), i32(t, sh(2), 7, -3)},
		{i32(t, sh(2), 7, -3), f32(t, sh(2, 2), 1, 2, 3, 4)},
		{f32(t, sh(4, 2), 1, 2, 3, 4, 5, 6, 7, 8), f32(t, sh(2, 2, 2), 1, 2, 3, 4, 5, 6, 7, 8), i32(t, sh(3), 0, 9, 2)},
		{f32(t, nil, 1)},
		{nf4Tensor(t, 2, 4)},
		{nf4Tensor(t, 2, 4), nf4Tensor(t, 2, 4)},
	}
	attrs := []ir.Attrs{nil, {"k": 1, "chunk": 1, "experts": 2, "depth": 3, "rows": 2, "axis": 0, "start": 0, "end": 1,
		"axes": []int{0}, "shape": []int{4}, "perm": []int{1, 0}, "eps": 1e-5, "factor": 2.0, "to": ir.F16}}
	for _, d := range ir.Ops() {
		for _, a := range attrs {
			for _, in := range operands {
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Errorf("%s%v on %v panicked: %v", d.Op, a, in, p)
						}
					}()
					// Keep only the attributes the op declares.
					aa := ir.Attrs{}
					for _, ad := range d.Attrs {
						if v, ok := a[ad.Name]; ok {
							aa[ad.Name] = v
						}
					}
					_, _ = EvalOp(d.Op, aa, in...)
				}()
			}
		}
	}
}

func ExampleEvalOp() {
	x, _ := FromFloat64(ir.T(ir.F32, 2, 2), []float64{1, 2, 3, 4})
	out, err := EvalOp(ir.OpReduceSum, ir.Attrs{"axes": []int{1}}, x)
	fmt.Println(out[0], err)
	// Output: f32[2]{3 7} <nil>
}

// TestStream checks that Stream computes what Eval does, in any topological
// order, drops each value after its last reader unless Until keeps it, and
// refuses an order that is not topological.
func TestStream(t *testing.T) {
	g, y := smallGraph(t)
	feeds := func() (map[string]*Tensor, map[string]*Tensor) {
		return map[string]*Tensor{"x": f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6), "ids": i32(t, sh(2), 1, 1)},
			map[string]*Tensor{"W": f32(t, sh(3, 2), 1, 0, 0, 1, 1, 1)}
	}
	in, ps := feeds()
	want, err := Eval(g, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	reversedSources := []int{}
	for i := len(g.Nodes) - 1; i >= 0; i-- { // sources last to first, then the rest
		if len(g.Nodes[i].Inputs) == 0 {
			reversedSources = append(reversedSources, i)
		}
	}
	for i, n := range g.Nodes {
		if len(n.Inputs) > 0 {
			reversedSources = append(reversedSources, i)
		}
	}
	for _, order := range [][]int{nil, reversedSources} {
		in, ps := feeds()
		seen := map[*ir.Value]bool{}
		xLive := true
		err := Stream(g, in, ps, StreamOptions{Order: order, Visit: func(p int, vals map[*ir.Value]*Tensor) error {
			for v, tv := range vals {
				seen[v] = true
				if d := want.Value(v).Data; fmt.Sprint(d) != fmt.Sprint(tv.Data) {
					t.Errorf("order %v: %v = %v, Eval says %v", order, v, tv.Data, d)
				}
			}
			if p == len(g.Nodes)-1 {
				xLive = vals[g.Inputs[0].Value] != nil
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range g.Nodes {
			for _, v := range n.Outputs {
				if !seen[v] {
					t.Errorf("order %v: %v never computed", order, v)
				}
			}
		}
		// x's only reader is the matmul, well before the last node.
		if xLive {
			t.Errorf("order %v: input x still held at the last node", order)
		}
	}
	// Until keeps y to the end.
	in, ps = feeds()
	last := len(g.Nodes) - 1
	err = Stream(g, in, ps, StreamOptions{Until: map[*ir.Value]int{y: last}, Visit: func(p int, vals map[*ir.Value]*Tensor) error {
		if p == last && vals[y] == nil {
			t.Error("Until did not keep y")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	// A node before its operand, or a node missing, is refused.
	for _, bad := range [][]int{{0}, append(append([]int{}, reversedSources[1:]...), reversedSources[0])} {
		in, ps := feeds()
		if err := Stream(g, in, ps, StreamOptions{Order: bad}); err == nil {
			t.Errorf("order %v accepted", bad)
		}
	}
}
