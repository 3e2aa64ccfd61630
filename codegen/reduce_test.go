package codegen_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/codegen/msl"
	"github.com/scm-magellano/magc/internal/kcheck"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
)

// redKinds picks the groups of the given kinds.
func redKinds(kinds ...string) func(*passes.Group) bool {
	return func(grp *passes.Group) bool {
		for _, k := range kinds {
			if grp.Kind == k {
				return true
			}
		}
		return false
	}
}

// The sim keeps every kernel library it loads, with fiber stacks for the
// largest threadgroup it ran, for the life of the test process; so that the
// package's tests stay within the process's memory maps, all the hand-built
// cases of this file and route_test.go live in one graph, whose kernels of
// every kind, fused and unfused, are compiled into one library once; each
// test runs the dispatches of its kind.

// redCase adds one application of the kind under test to b: its inputs are
// named through name (unique per case) and their values go into in.
type redCase func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value

// redCases lists the cases of each kind.
var redCases = map[string]func() []redCase{
	"softmax": softmaxCases, "rmsnorm": rmsnormCases, "rmsnorm_bwd": rmsnormBwdCases,
	"cross_entropy":     func() []redCase { return ceBatch(false) },
	"cross_entropy_bwd": func() []redCase { return ceBatch(true) },
	"reduce_sum":        func() []redCase { return reduceCases(ir.OpReduceSum) },
	"reduce_max":        func() []redCase { return reduceCases(ir.OpReduceMax) },
	"reduce_mean":       func() []redCase { return reduceCases(ir.OpReduceMean) },
	"topk":              topkCases, "moe_route": moeRouteCases, "scatter_add": scatterCases,
}

// redProgram is a compiled set of groups with what checking them needs.
type redProgram struct {
	prog   *codegen.Program
	x      *kcheck.Executor
	src    string
	want   map[*ir.Value]*ref.Tensor
	groups []*passes.Group
	fused  []bool // whether group i came from the fused schedule
	cases  map[string]int
	err    error
}

var (
	redOnce  sync.Once
	redSuite *redProgram
)

// redCompile compiles the picked groups of g's unfused and fused schedules
// into one program on the sim.
func redCompile(g *ir.Graph, pick func(*passes.Group) bool, want map[*ir.Value]*ref.Tensor) *redProgram {
	p := &redProgram{want: want}
	merged := &passes.Schedule{Alias: map[*ir.Value]*ir.Value{}}
	for _, fuse := range []bool{false, true} {
		s := passes.Fuse(g, fuse)
		for _, grp := range s.Groups {
			if pick(grp) {
				merged.Groups = append(merged.Groups, grp)
				p.groups = append(p.groups, grp)
				p.fused = append(p.fused, fuse)
			}
		}
		for v, a := range s.Alias {
			merged.Alias[v] = a
		}
	}
	if p.prog, p.err = codegen.Compile(g, merged); p.err != nil {
		return p
	}
	if p.src, p.err = msl.Render(p.prog.Module); p.err != nil {
		return p
	}
	d := simDevice()
	p.x, p.err = kcheck.NewExecutor(d, p.prog, kcheck.SeparateBuffers(d))
	return p
}

// suite builds and compiles every hand-built case once.
func suite(t *testing.T) *redProgram {
	t.Helper()
	redOnce.Do(func() {
		b := ir.NewBuilder("reductions")
		in := map[string]*ref.Tensor{}
		var outs []*ir.Value
		counts := map[string]int{}
		kinds := make([]string, 0, len(redCases))
		for k := range redCases {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, kind := range kinds {
			for i, c := range redCases[kind]() {
				name := func(s string) string { return fmt.Sprintf("%s%d_%s", kind, i, s) }
				outs = append(outs, c(b, name, in)...)
				counts[kind]++
			}
		}
		for i, o := range outs {
			b.Output(fmt.Sprintf("out%d", i), o)
		}
		g, err := b.Finish()
		if err != nil {
			redSuite = &redProgram{err: err}
			return
		}
		res, err := ref.Eval(g, in, nil)
		if err != nil {
			redSuite = &redProgram{err: err}
			return
		}
		redSuite = redCompile(g, func(grp *passes.Group) bool { return redCases[grp.Kind] != nil }, res.Values)
		redSuite.cases = counts
	})
	if redSuite.err != nil {
		t.Fatalf("%v\n%s", redSuite.err, redSuite.src)
	}
	return redSuite
}

// redKind checks the suite's kernels of kind: one unfused and one fused
// per case.
func redKind(t *testing.T, kind string) {
	p := suite(t)
	n := p.check(t, func(grp *passes.Group) bool { return grp.Kind == kind })
	if want := 2 * p.cases[kind]; n != want {
		t.Errorf("%d %s kernels, want %d", n, kind, want)
	}
}

// check runs each picked group's dispatches on the sim with the reference's
// values of their operands and garbage in their outputs, then compares what
// they wrote with the reference: NaN where the reference has NaN, relative
// error within kcheck.Tolerance elsewhere. A group split in two launches
// (the first writes the partials, a scratch value the second reads from the
// same buffer) is checked on what its launches write but the partials. It
// returns the number of groups run.
func (p *redProgram) check(t *testing.T, pick func(*passes.Group) bool) int {
	t.Helper()
	n, gi := 0, 0
	for i, dp := range p.prog.Dispatches {
		grp, fused := p.groups[gi], p.fused[gi]
		if !writesScratch(p.prog, dp) {
			gi++ // the group's last launch
		}
		if !pick(grp) {
			continue
		}
		written := map[*ir.Value]bool{}
		for _, v := range dp.Writes {
			written[v] = true
			junk := redTensor(v.Type, func(int) float64 { return math.NaN() })
			if v.Type.DType == ir.I32 {
				junk = redTensor(v.Type, func(int) float64 { return -7 })
			}
			if err := p.x.Write(v, junk); err != nil {
				t.Fatal(err)
			}
		}
		for _, b := range dp.Bindings {
			if !written[b.Value] && !p.prog.Scratch[b.Value] {
				if err := p.x.Write(b.Value, p.want[b.Value]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := p.x.Run(i); err != nil {
			t.Fatal(err)
		}
		for _, v := range dp.Writes {
			if p.prog.Scratch[v] {
				continue
			}
			got, err := p.x.Read(v)
			if err != nil {
				t.Fatal(err)
			}
			if e := redErr(got, p.want[v]); !(e <= kcheck.Tolerance(v.Type)) {
				t.Errorf("fused=%v dispatch %d (%s, %s): %v %v relative error %.3g", fused, i, dp.Kernel, grp.Root.Op, v, v.Type, e)
			}
		}
		if !writesScratch(p.prog, dp) {
			n++
		}
	}
	if gi != len(p.groups) {
		t.Fatalf("%d dispatches for %d groups", len(p.prog.Dispatches), len(p.groups))
	}
	if t.Failed() && testing.Verbose() {
		t.Log(p.src)
	}
	return n
}

// writesScratch reports whether a launch writes partials that a later one
// folds: the first of a reduction split in two.
func writesScratch(prog *codegen.Program, d codegen.Dispatch) bool {
	for _, v := range d.Writes {
		if prog.Scratch[v] {
			return true
		}
	}
	return false
}

// redErr is kcheck.RelErr where NaNs must match and are left out of the norms.
func redErr(got, want *ref.Tensor) float64 {
	g, w := got.Clone(), want.Clone()
	for i, v := range w.Data {
		if math.IsNaN(v) != math.IsNaN(g.Data[i]) {
			return math.Inf(1)
		}
		if math.IsNaN(v) {
			g.Data[i], w.Data[i] = 0, 0
		}
	}
	return kcheck.RelErr(g, w)
}

// redInput declares an input filled from f.
func redInput(b *ir.Builder, in map[string]*ref.Tensor, name string, ty ir.Type, f func(int) float64) *ir.Value {
	in[name] = redTensor(ty, f)
	return b.Input(name, ty)
}

// redTensor fills a tensor of type ty from f (f32-representable values).
func redTensor(ty ir.Type, f func(i int) float64) *ref.Tensor {
	x := ref.New(ty)
	for i := range x.Data {
		v := f(i)
		if ty.DType == ir.F32 {
			v = float64(float32(v))
		}
		x.Data[i] = ref.Convert(ty.DType, v)
	}
	return x
}

// redRandom is uniform in [−scale, scale), seeded by the test's shape.
func redRandom(seed uint64, scale float64) func(int) float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	return func(int) float64 { return (2*r.Float64() - 1) * scale }
}

// redPrologue is an element-wise chain in front of an anchor, so that fused
// runs compute it inline.
func redPrologue(b *ir.Builder, x, y *ir.Value) *ir.Value {
	return b.Add(b.Scale(x, 0.5), b.Unary(ir.OpNeg, y))
}

// Row widths cover each team size: a thread (≤ 16), a simdgroup (≤ 512) and
// a threadgroup (rows longer than it included), with sizes that are not
// multiples of 32 and row counts that leave threadgroups part full.
var redRowShapes = [][]int{{3}, {5, 7}, {9, 16}, {2, 3, 40}, {11, 77}, {4, 300}, {2, 600}, {1, 9000}}

// redSeed seeds a case's data by its shape.
func redSeed(shape []int, k uint64) uint64 { return uint64(ir.Shape(shape).Elems())*16 + k }

func TestSoftmaxKernel(t *testing.T)    { redKind(t, "softmax") }
func TestRMSNormKernel(t *testing.T)    { redKind(t, "rmsnorm") }
func TestRMSNormBwdKernel(t *testing.T) { redKind(t, "rmsnorm_bwd") }

func softmaxCases() []redCase {
	var cases []redCase
	for _, shape := range redRowShapes {
		cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			ty := ir.T(ir.F32, shape...)
			w := shape[len(shape)-1]
			xr, yr := redRandom(redSeed(shape, 0), 40), redRandom(redSeed(shape, 1), 3)
			// Row 0 holds huge logits (exp overflows unless the max is
			// subtracted; eighths keep the prologue exact in f32), row 1
			// has −inf entries.
			x := redInput(b, in, name("x"), ty, func(i int) float64 {
				switch {
				case i < w:
					return 5000 + math.Round(xr(i)*8)/8
				case i < 2*w && i%3 == 0:
					return math.Inf(-1)
				}
				return xr(i)
			})
			y := redInput(b, in, name("y"), ty, func(i int) float64 {
				if i < w {
					return math.Round(yr(i)*8) / 8
				}
				return yr(i)
			})
			return []*ir.Value{b.Op(ir.OpSoftmax, nil, redPrologue(b, x, y))}
		})
	}
	// f16 storage (no prologue: fused, it would skip the reference's
	// rounding of the intermediate to f16).
	cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
		return []*ir.Value{b.Op(ir.OpSoftmax, nil, redInput(b, in, name("x"), ir.T(ir.F16, 6, 50), redRandom(9, 6)))}
	})
	return cases
}

func rmsnormCases() []redCase {
	var cases []redCase
	for _, shape := range redRowShapes {
		cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			ty, gt := ir.T(ir.F32, shape...), ir.T(ir.F32, shape[len(shape)-1])
			x := redInput(b, in, name("x"), ty, redRandom(redSeed(shape, 0), 2))
			y := redInput(b, in, name("y"), ty, redRandom(redSeed(shape, 1), 1))
			gamma := redInput(b, in, name("g"), gt, redRandom(redSeed(shape, 2), 1.5))
			return []*ir.Value{b.Op(ir.OpRMSNorm, ir.Attrs{"eps": 1e-5}, redPrologue(b, x, y), gamma)}
		})
	}
	cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
		x := redInput(b, in, name("x"), ir.T(ir.F16, 5, 70), redRandom(10, 3))
		gamma := redInput(b, in, name("g"), ir.T(ir.F16, 70), redRandom(11, 2))
		return []*ir.Value{b.Op(ir.OpRMSNorm, ir.Attrs{"eps": 1e-5}, x, gamma)}
	})
	return cases
}

// rmsnorm_bwd with dγ (one threadgroup over all rows) and without it
// (frozen γ, as in QLoRA: rows in parallel).
func rmsnormBwdCases() []redCase {
	var cases []redCase
	for _, shape := range redRowShapes {
		for _, both := range []bool{true, false} {
			cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
				ty, gt := ir.T(ir.F32, shape...), ir.T(ir.F32, shape[len(shape)-1])
				x := redInput(b, in, name("x"), ty, redRandom(redSeed(shape, 0), 2))
				y := redInput(b, in, name("y"), ty, redRandom(redSeed(shape, 1), 1))
				gamma := redInput(b, in, name("g"), gt, redRandom(redSeed(shape, 2), 1.5))
				dy := redInput(b, in, name("dy"), ty, redRandom(redSeed(shape, 3), 1))
				outs := b.Apply(ir.OpRMSNormBwd, ir.Attrs{"eps": 1e-5}, redPrologue(b, x, y), gamma, dy)
				if !both {
					outs = outs[:1]
				}
				return outs
			})
		}
	}
	cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
		x := redInput(b, in, name("x"), ir.T(ir.F16, 4, 40), redRandom(12, 3))
		gamma := redInput(b, in, name("g"), ir.T(ir.F16, 40), redRandom(13, 2))
		dy := redInput(b, in, name("dy"), ir.T(ir.F16, 4, 40), redRandom(14, 1))
		return b.Apply(ir.OpRMSNormBwd, ir.Attrs{"eps": 1e-5}, x, gamma, dy)
	})
	return cases
}

// ceCases are logits shapes, ignore_index and targets: ignored rows, all
// ignored, an ignore_index inside the vocabulary, each team size.
func ceCases() []struct {
	shape  []int
	ignore int
	target func(i, v int) int
} {
	mixed := func(i, v int) int {
		if i%4 == 1 {
			return -100
		}
		return (i*5 + 2) % v
	}
	return []struct {
		shape  []int
		ignore int
		target func(i, v int) int
	}{
		{[]int{6, 5}, -100, mixed},
		{[]int{4, 8, 16}, -100, mixed},
		{[]int{37, 40}, -100, mixed},
		{[]int{3, 700}, -100, mixed},
		{[]int{2, 9000}, -100, func(i, v int) int { return v - 1 - i }},
		{[]int{9, 20}, -100, func(int, int) int { return -100 }},
		{[]int{3, 7, 33}, 3, func(i, v int) int { return i % 5 }},
		{[]int{1, 1}, -100, func(int, int) int { return 0 }},
	}
}

// ceCase builds cross_entropy (bwd false) or its backward, over a prologue
// for f32 logits.
func ceCase(bwd bool, d ir.DType, shape []int, ignore int, target func(i, v int) int) redCase {
	return func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
		zt := ir.T(d, shape...)
		v := shape[len(shape)-1]
		z := redInput(b, in, name("z"), zt, redRandom(redSeed(shape, 0), 8))
		if d == ir.F32 {
			z = redPrologue(b, z, redInput(b, in, name("w"), zt, redRandom(redSeed(shape, 1), 2)))
		}
		y := redInput(b, in, name("y"), ir.T(ir.I32, shape[:len(shape)-1]...), func(i int) float64 { return float64(target(i, v)) })
		a := ir.Attrs{"ignore_index": ignore}
		if !bwd {
			return []*ir.Value{b.Op(ir.OpCrossEntropy, a, z, y)}
		}
		dl := redInput(b, in, name("dl"), ir.T(ir.F32), func(int) float64 { return 0.75 })
		return []*ir.Value{b.Op(ir.OpCrossEntropyBwd, a, z, y, dl)}
	}
}

func ceBatch(bwd bool) []redCase {
	var cases []redCase
	for _, c := range ceCases() {
		cases = append(cases, ceCase(bwd, ir.F32, c.shape, c.ignore, c.target))
	}
	c := ceCases()[2]
	return append(cases, ceCase(bwd, ir.F16, c.shape, c.ignore, c.target))
}

func TestCrossEntropyKernel(t *testing.T)    { redKind(t, "cross_entropy") }
func TestCrossEntropyBwdKernel(t *testing.T) { redKind(t, "cross_entropy_bwd") }

func TestReduceKernels(t *testing.T) {
	for _, kind := range []string{"reduce_sum", "reduce_max", "reduce_mean"} {
		t.Run(kind, func(t *testing.T) { redKind(t, kind) })
	}
}

func reduceCases(op ir.Op) []redCase {
	shapes := []struct {
		shape, axes []int
		keep        bool
	}{
		{[]int{5, 7}, []int{1}, false},       // trailing, a thread per row
		{[]int{128, 4}, []int{1}, true},      // the router's row sums
		{[]int{5, 3, 11}, []int{1, 2}, true}, // two trailing axes, a simdgroup per row
		{[]int{7, 300}, []int{1}, false},     // rows longer than the threadgroup
		{[]int{4, 9000}, []int{0, 1}, false}, // everything, one threadgroup
		{[]int{4}, []int{0}, false},
		{[]int{}, []int{}, false},               // a scalar
		{[]int{6, 5}, []int{}, false},           // no axes
		{[]int{6, 5}, []int{0}, true},           // leading axis, one thread per output
		{[]int{4, 6, 5}, []int{0, 2}, false},    // non-trailing mix
		{[]int{3, 40, 70}, []int{0, 1}, false},  // bias-gradient shape, 8 parts per output
		{[]int{2, 50, 3, 4}, []int{1, 3}, true}, // interleaved
	}
	var cases []redCase
	for _, c := range shapes {
		cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			ty := ir.T(ir.F32, c.shape...)
			x := redInput(b, in, name("x"), ty, redRandom(redSeed(c.shape, 0), 4))
			y := redInput(b, in, name("y"), ty, redRandom(redSeed(c.shape, 1), 1))
			return []*ir.Value{b.Op(op, ir.Attrs{"axes": c.axes, "keep": c.keep}, redPrologue(b, x, y))}
		})
	}
	for _, axes := range [][]int{{1}, {0}} {
		cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			x := redInput(b, in, name("x"), ir.T(ir.F16, 40, 6), redRandom(15, 3))
			return []*ir.Value{b.Op(op, ir.Attrs{"axes": axes}, x)}
		})
	}
	if op == ir.OpReduceMax {
		// A NaN anywhere among a max's elements gives NaN, as in the
		// reference (Metal's max alone drops it).
		for _, c := range []struct{ shape, axes []int }{{[]int{4, 40}, []int{1}}, {[]int{3, 700}, []int{1}}, {[]int{5, 3}, []int{1}}, {[]int{70, 6}, []int{0}}} {
			cases = append(cases, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
				ty := ir.T(ir.F32, c.shape...)
				n, r := int(ty.Shape.Elems()), redRandom(redSeed(c.shape, 2), 4)
				x := redInput(b, in, name("x"), ty, func(i int) float64 {
					if i == 1 || i == n/2 {
						return math.NaN()
					}
					return r(i)
				})
				return []*ir.Value{b.Op(op, ir.Attrs{"axes": c.axes}, x)}
			})
		}
	}
	return cases
}

// The tiny model's kernels of these kinds (and the routing kinds of
// route.go), in both training modes, fused and unfused, against the
// reference: one library per mode.
func TestReductionKernelsTinyModel(t *testing.T) {
	kinds := []string{"softmax", "rmsnorm", "rmsnorm_bwd", "cross_entropy", "cross_entropy_bwd",
		"reduce_sum", "reduce_mean", "topk", "moe_route", "scatter_add"}
	pick := redKinds(append(kinds, "reduce_max")...)
	for _, mode := range []string{"full", "qlora"} {
		g := loadModel(t, "tiny", &passes.Config{Mode: mode, Train: true}, nil)
		p := redCompile(g, pick, reference(t, g, nil))
		if p.err != nil {
			t.Fatalf("%s: %v\n%s", mode, p.err, p.src)
		}
		seen := map[string]bool{}
		for i, grp := range p.groups {
			seen[fmt.Sprint(grp.Kind, p.fused[i])] = true
		}
		for _, k := range kinds {
			for _, fuse := range []bool{false, true} {
				if k == "softmax" && fuse {
					continue // the router's softmax runs in the top-k kernel
				}
				if !seen[fmt.Sprint(k, fuse)] {
					t.Errorf("%s fused=%v: no %s kernel in the tiny model", mode, fuse, k)
				}
			}
		}
		p.check(t, pick)
	}
}
