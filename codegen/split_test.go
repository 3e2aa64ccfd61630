package codegen_test

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/internal/kcheck"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/plan"
)

// splitCase is a reduction and whether it is long enough to split (when
// nothing else forbids it).
type splitCase struct {
	name  string
	long  bool
	build redCase
}

func splitCases() []splitCase {
	sum := func(shape, axes []int, keep bool) redCase {
		return func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			ty := ir.T(ir.F32, shape...)
			x := redInput(b, in, name("x"), ty, redRandom(redSeed(shape, 0), 4))
			y := redInput(b, in, name("y"), ty, redRandom(redSeed(shape, 1), 1))
			return []*ir.Value{b.Op(ir.OpReduceSum, ir.Attrs{"axes": axes, "keep": keep}, redPrologue(b, x, y))}
		}
	}
	ce := func(shape []int, target func(i, v int) int) redCase {
		return ceCase(false, ir.F32, shape, -100, target)
	}
	mixed := func(i, v int) int {
		if i%3 == 1 {
			return -100
		}
		return (i*7 + 5) % v
	}
	return []splitCase{
		// The gradient norm's shape: everything to a scalar, with square
		// before and sqrt after (the fused kernel's prologue and epilogue).
		{"norm", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			x := redInput(b, in, name("x"), ir.T(ir.F32, 3, 40000), redRandom(1, 2))
			ss := b.Op(ir.OpReduceSum, ir.Attrs{"axes": []int{0, 1}}, b.Unary(ir.OpSquare, x))
			return []*ir.Value{b.Unary(ir.OpSqrt, ss)}
		}},
		// Two long rows of a max, one holding a NaN, which must win.
		{"max rows", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			r := redRandom(2, 4)
			x := redInput(b, in, name("x"), ir.T(ir.F32, 2, 70001), func(i int) float64 {
				if i == 70001+12345 {
					return math.NaN()
				}
				return r(i)
			})
			return []*ir.Value{b.Op(ir.OpReduceMax, ir.Attrs{"axes": []int{1}}, x)}
		}},
		// A row sum whose result divides its row: the row epilogue reads
		// the long row again, so fused it stays one launch.
		{"row epilogue", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			x := redInput(b, in, name("x"), ir.T(ir.F32, 1, 70000), redRandom(3, 1))
			s := b.Op(ir.OpReduceSum, ir.Attrs{"axes": []int{1}, "keep": true}, b.Unary(ir.OpExp, x))
			return []*ir.Value{b.Op(ir.OpDiv, nil, b.Unary(ir.OpExp, x), b.Op(ir.OpBroadcast, ir.Attrs{"shape": []int{1, 70000}}, s))}
		}},
		// Columns: 40 outputs (two column blocks, the second part full)
		// of 4,000 elements, and interleaved reduced axes.
		{"mean columns", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			x := redInput(b, in, name("x"), ir.T(ir.F32, 4000, 40), redRandom(4, 3))
			return []*ir.Value{b.Op(ir.OpReduceMean, ir.Attrs{"axes": []int{0}}, x)}
		}},
		{"interleaved", true, sum([]int{50, 30, 60}, []int{0, 2}, true)},
		// The loss: long rows (a team per row), short rows (teams of a
		// simdgroup), every target ignored.
		{"loss", true, ce([]int{12, 9000}, mixed)},
		{"loss short rows", true, ce([]int{600, 300}, mixed)},
		{"loss ignored", true, ce([]int{10, 8000}, func(int, int) int { return -100 })},
		// dγ over 300 rows (per-group row ranges that do not divide them),
		// with dx and without it.
		{"rmsnorm_bwd", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			return rmsnormBwdSplitCase(b, name, in, 300, 500, true)
		}},
		{"rmsnorm_bwd dg only", true, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			return rmsnormBwdSplitCase(b, name, in, 200, 400, false)
		}},
		// Not long: few elements per threadgroup, or enough threadgroups.
		{"short sum", false, sum([]int{4, 9000}, []int{0, 1}, false)},
		{"many rows", false, sum([]int{80, 2000}, []int{1}, false)},
		{"short loss", false, ce([]int{2, 9000}, mixed)},
		{"short rmsnorm_bwd", false, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			return rmsnormBwdSplitCase(b, name, in, 4, 600, true)
		}},
	}
}

func rmsnormBwdSplitCase(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor, rows, w int, dx bool) []*ir.Value {
	ty := ir.T(ir.F32, rows, w)
	shape := []int{rows, w}
	x := redInput(b, in, name("x"), ty, redRandom(redSeed(shape, 0), 2))
	y := redInput(b, in, name("y"), ty, redRandom(redSeed(shape, 1), 1))
	gamma := redInput(b, in, name("g"), ir.T(ir.F32, w), redRandom(redSeed(shape, 2), 1.5))
	dy := redInput(b, in, name("dy"), ty, redRandom(redSeed(shape, 3), 1))
	outs := b.Apply(ir.OpRMSNormBwd, ir.Attrs{"eps": 1e-5}, redPrologue(b, x, y), gamma, dy)
	if !dx {
		return outs[1:]
	}
	return outs
}

// TestLongReductionsSplit checks that a long reduction with few outputs runs
// as two launches, the first writing a partials buffer (a scratch value)
// and the second reading it, that a short one stays one launch, that both
// give the reference's results (each launch checked as kcheck checks a
// step, the partials carried from the first to the second), that two runs
// give the same bits, and that the memory plan places the partials. The
// cases share one graph, so that the sim loads one library (see suite).
func TestLongReductionsSplit(t *testing.T) {
	b := ir.NewBuilder("split")
	in := map[string]*ref.Tensor{}
	cases := splitCases()
	of := map[*ir.Value]int{} // output → its case
	for i, c := range cases {
		outs := c.build(b, func(s string) string { return fmt.Sprintf("c%d_%s", i, s) }, in)
		for j, o := range outs {
			b.Output(fmt.Sprintf("c%d_out%d", i, j), o)
			of[o] = i
		}
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	res, err := ref.Eval(g, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Each group's case: the case of the output its anchor leads to.
	caseOf := func(grp *passes.Group) splitCase {
		for v, i := range of {
			if dependsOn(v.Node, grp.Anchor) {
				return cases[i]
			}
		}
		t.Fatalf("no case computes %s %v", grp.Anchor.Op, grp.Anchor.Out())
		return splitCase{}
	}
	anchors := map[ir.Op]bool{ir.OpReduceSum: true, ir.OpReduceMax: true, ir.OpReduceMean: true, ir.OpCrossEntropy: true, ir.OpRMSNormBwd: true}
	p := redCompile(g, func(grp *passes.Group) bool { return anchors[grp.Anchor.Op] }, res.Values)
	if p.err != nil {
		t.Fatalf("%v\n%s", p.err, p.src)
	}
	launches := groupLaunches(p)
	splits, rowEpilogues := 0, 0
	for gi, grp := range p.groups {
		c, ds := caseOf(grp), launches[gi]
		want := 1
		if c.long && len(grp.RowEpilogue) == 0 {
			want = 2
		}
		if c.long && len(grp.RowEpilogue) > 0 {
			rowEpilogues++
		}
		if len(ds) != want {
			t.Errorf("%s fused=%v %s: %d launches, want %d", c.name, p.fused[gi], grp.Anchor.Op, len(ds), want)
			continue
		}
		if want == 1 {
			for _, b := range p.prog.Dispatches[ds[0]].Bindings {
				if p.prog.Scratch[b.Value] {
					t.Errorf("%s fused=%v: one launch binds scratch %v", c.name, p.fused[gi], b.Value)
				}
			}
			continue
		}
		splits++
		first, second := p.prog.Dispatches[ds[0]], p.prog.Dispatches[ds[1]]
		var partials []*ir.Value
		for _, v := range first.Writes {
			if p.prog.Scratch[v] {
				partials = append(partials, v)
			}
		}
		if len(partials) != 1 {
			t.Errorf("%s: %s writes %d scratch values, want 1", c.name, first.Kernel, len(partials))
			continue
		}
		if first.Groups[0] < 4 {
			t.Errorf("%s: %s runs on %d threadgroups", c.name, first.Kernel, first.Groups[0])
		}
		reads := false
		for _, b := range second.Bindings {
			reads = reads || b.Value == partials[0]
		}
		if !reads {
			t.Errorf("%s: %s does not read %s's partials %v", c.name, second.Kernel, first.Kernel, partials[0])
		}
		for _, v := range grp.Outputs {
			if !slices.Contains(first.Writes, v) && !slices.Contains(second.Writes, v) {
				t.Errorf("%s fused=%v: no launch writes %v", c.name, p.fused[gi], v)
			}
		}
	}
	if splits == 0 || len(p.prog.Scratch) != splits || rowEpilogues == 0 {
		t.Errorf("%d groups split, %d partials buffers, %d long with a row epilogue", splits, len(p.prog.Scratch), rowEpilogues)
	}
	if n := p.check(t, func(*passes.Group) bool { return true }); n != len(p.groups) {
		t.Errorf("%d groups checked, want %d", n, len(p.groups))
	}
	// kcheck, as the step checks run it. Its RelErr does not compare NaN
	// results (redErr, in check, does): those are left out here.
	want := maps.Clone(res.Values)
	for _, o := range g.Outputs {
		if slices.ContainsFunc(res.Values[o.Value].Data, math.IsNaN) {
			delete(want, o.Value)
		}
	}
	for _, dev := range devices(t) {
		nanFree := *p.prog
		nanFree.Dispatches = nil
		keep := map[int]bool{}
		for gi, ds := range launches {
			ok := true
			for _, v := range p.groups[gi].Outputs {
				_, in := want[v]
				ok = ok && in
			}
			for _, i := range ds {
				keep[i] = ok
			}
		}
		for i, d := range p.prog.Dispatches {
			if keep[i] {
				nanFree.Dispatches = append(nanFree.Dispatches, d)
			}
		}
		bad, err := kcheck.CheckProgram(dev, &nanFree, want)
		if err != nil {
			t.Fatalf("%s: %v", dev.Name(), err)
		}
		for _, m := range bad {
			t.Errorf("%s: %v", dev.Name(), m)
		}
	}
	a, a2 := runOutputs(t, p, g, in), runOutputs(t, p, g, in)
	for i := range a {
		for k := range a[i].Data {
			if math.Float64bits(a[i].Data[k]) != math.Float64bits(a2[i].Data[k]) {
				t.Fatalf("output %s element %d: %v, then %v", g.Outputs[i].Name, k, a[i].Data[k], a2[i].Data[k])
			}
		}
	}
	// The whole fused step's memory plan places the partials.
	whole, err := codegen.Compile(g, passes.Fuse(g, true))
	if err != nil {
		t.Fatal(err)
	}
	m, err := codegen.PlaceMemory(g, whole, passes.DefaultMemOptions())
	if err != nil {
		t.Fatal(err)
	}
	pl := codegen.BuildPlan(g, whole, m)
	if len(whole.Scratch) == 0 {
		t.Error("the fused step has no partials buffers")
	}
	for v := range whole.Scratch {
		name, ok := m.Buffer[v]
		if !ok {
			t.Fatalf("the memory plan has no buffer for %v", v)
		}
		i := slices.IndexFunc(pl.Buffers, func(pb plan.Buffer) bool { return pb.Name == name })
		if i < 0 {
			t.Errorf("plan.json has no buffer %s", name)
			continue
		}
		if pb := pl.Buffers[i]; pb.Bytes < v.Type.Bytes() || pb.DType != "f32" || pb.Live[0] >= pb.Live[1] {
			t.Errorf("plan buffer %s: %d bytes of %s live %v, want %d of f32 from one launch to a later one", name, pb.Bytes, pb.DType, pb.Live, v.Type.Bytes())
		}
	}
}

// dependsOn reports whether n is a or computed from a.
func dependsOn(n, a *ir.Node) bool {
	if n == a {
		return true
	}
	for _, v := range n.Inputs {
		if dependsOn(v.Node, a) {
			return true
		}
	}
	return false
}

// groupLaunches lists each group's dispatches: a group split in two has
// the one writing the partials, then the one folding them.
func groupLaunches(p *redProgram) [][]int {
	out := make([][]int, len(p.groups))
	gi := 0
	for i, d := range p.prog.Dispatches {
		out[gi] = append(out[gi], i)
		if !writesScratch(p.prog, d) {
			gi++
		}
	}
	return out
}

// runOutputs runs every launch of p in order on the sim from g's inputs,
// each value in its own buffer, and reads g's outputs.
func runOutputs(t *testing.T, p *redProgram, g *ir.Graph, in map[string]*ref.Tensor) []*ref.Tensor {
	t.Helper()
	d := simDevice()
	x, err := kcheck.NewExecutor(d, p.prog, kcheck.SeparateBuffers(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range g.Inputs {
		if err := x.Write(i.Value, in[i.Name]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range p.prog.Dispatches {
		if err := x.Run(i); err != nil {
			t.Fatal(err)
		}
	}
	var outs []*ref.Tensor
	for _, o := range g.Outputs {
		v, err := x.Read(o.Value)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, v)
	}
	return outs
}
