package codegen_test

import (
	"strings"

	"fmt"
	"github.com/scm-magellano/magc/codegen/msl"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/internal/kcheck"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
)

func mmKind(kinds ...string) func(*passes.Group) bool {
	return func(grp *passes.Group) bool {
		for _, k := range kinds {
			if grp.Kind == k {
				return true
			}
		}
		return false
	}
}

var mmKinds = mmKind("matmul", "grouped_matmul", "grouped_matmul_wgrad")

// mmParam declares a weight drawn from N(0, 1) (NF4 weights are frozen).
func mmParam(b *ir.Builder, name string, d ir.DType, shape ...int) *ir.Value {
	p := ir.Param{Name: name, Role: ir.Trainable, Init: ir.Init{Kind: "normal", Args: map[string]float64{"mean": 0, "std": 1}}}
	if d == ir.NF4 {
		p.Role = ir.FrozenNF4
	}
	return b.Param(p, ir.Type{DType: d, Shape: shape})
}

// mmFinish names each value an output and verifies the graph.
func mmFinish(t testing.TB, b *ir.Builder, outs ...*ir.Value) *ir.Graph {
	t.Helper()
	for i, v := range outs {
		b.Output(fmt.Sprint("out", i), v)
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mmCheck(t *testing.T, g *ir.Graph, inputs map[string]*ref.Tensor, n int) {
	t.Helper()
	for _, fuse := range []bool{false, true} {
		if got := checkOnSimWith(t, g, passes.Fuse(g, fuse), mmKinds, inputs); got != n {
			t.Errorf("fuse=%v: %d contraction kernels, want %d", fuse, got, n)
		}
	}
}

// Every case is one kernel of one graph, so the sim builds a single library.
func TestMatmulKernel(t *testing.T) {
	type tc struct {
		batchA, batchB []int
		m, k, n        int
		dtype          ir.DType
	}
	cases := []tc{
		{m: 5, k: 7, n: 9},
		{m: 33, k: 17, n: 65},
		{m: 64, k: 64, n: 64},  // exact 64×64 tiles: no guards
		{m: 70, k: 100, n: 40}, // 64×32 tiles, K tail
		{m: 1, k: 3, n: 1},
		{m: 32, k: 32, n: 96}, // exact 32×64 tiles
		{m: 19, k: 40, n: 23, dtype: ir.F16},
		{batchA: []int{2, 3}, batchB: []int{2, 3}, m: 9, k: 13, n: 11},
		{batchA: []int{3}, m: 17, k: 8, n: 6}, // rhs shared by the batch
	}
	b := ir.NewBuilder("mm")
	var outs []*ir.Value
	for i, c := range cases {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			ta, tb := tr[0], tr[1]
			d := c.dtype
			if d == 0 {
				d = ir.F32
			}
			as := append(append([]int(nil), c.batchA...), c.m, c.k)
			if ta {
				as = append(append([]int(nil), c.batchA...), c.k, c.m)
			}
			bs := append(append([]int(nil), c.batchB...), c.k, c.n)
			if tb {
				bs = append(append([]int(nil), c.batchB...), c.n, c.k)
			}
			id := fmt.Sprintf("%d_%v_%v", i, ta, tb)
			outs = append(outs, b.Matmul(mmParam(b, "a"+id, d, as...), mmParam(b, "b"+id, d, bs...), ta, tb))
		}
	}
	mmCheck(t, mmFinish(t, b, outs...), nil, len(outs))
}

// Producers fused into the staging: index maps (transpose, slice, reshape)
// and the QLoRA base weight, an NF4 tensor dequantised as it is staged. The
// unfused kernels are plain matmuls, tested above.
func TestMatmulFusedPrologues(t *testing.T) {
	b := ir.NewBuilder("mm")
	a := b.Op(ir.OpTranspose, ir.Attrs{"perm": []int{1, 0}}, mmParam(b, "a", ir.F32, 21, 35)) // (35, 21)
	w := b.Slice(mmParam(b, "w", ir.F32, 3, 40, 21), 1, 5, 30)                                // (3, 25, 21)
	w = b.Reshape(b.Slice(w, 0, 1, 2), 25, 21)
	outs := []*ir.Value{b.Matmul(a, w, false, true)}
	for i, shape := range [][3]int{{20, 96, 33}, {64, 64, 64}, {3, 70, 5}} {
		m, k, n := shape[0], shape[1], shape[2]
		x := mmParam(b, fmt.Sprint("x", i), ir.F32, 2, m, k)
		w := b.Op(ir.OpDequant, nil, mmParam(b, fmt.Sprint("q", i), ir.NF4, n, k))
		outs = append(outs, b.Matmul(x, w, false, true))
	}
	g := mmFinish(t, b, outs...)
	s := passes.Fuse(g, true)
	for i, grp := range s.Groups {
		want := 2 // dequant, matmul
		if i == 0 {
			want = 5 // transpose; slice, slice, reshape; matmul
		}
		if grp.Kind != "matmul" || len(grp.Nodes) != want {
			t.Errorf("group %d: %s of %d nodes, want the matmul and its %d producers", i, grp.Kind, len(grp.Nodes), want-1)
		}
	}
	if n := checkOnSimWith(t, g, s, mmKinds, nil); n != len(outs) {
		t.Errorf("%d kernels, want %d", n, len(outs))
	}
}

// mmOffsets declares an i32 input of expert offsets and sets its value.
func mmOffsets(t *testing.T, b *ir.Builder, inputs map[string]*ref.Tensor, name string, off []int) *ir.Value {
	t.Helper()
	o, err := ref.FromInts([]int{len(off)}, off)
	if err != nil {
		t.Fatal(err)
	}
	inputs[name] = o
	return b.Input(name, o.Type)
}

// Expert row ranges: uneven, an empty expert, rows outside every expert,
// an expert spanning several row tiles, all rows in one expert.
var mmExpertRanges = []struct {
	rows int
	off  []int
}{
	{40, []int{0, 13, 13, 30, 40}},
	{40, []int{3, 10, 10, 25, 33}},
	{100, []int{0, 70, 70, 71, 100}},
	{37, []int{0, 0, 37, 37, 37}},
	{12, []int{5, 5, 5, 5, 5}},
}

func TestGroupedMatmulKernel(t *testing.T) {
	b := ir.NewBuilder("gmm")
	inputs := map[string]*ref.Tensor{}
	var outs []*ir.Value
	for i, r := range mmExpertRanges {
		for _, kn := range [][2]int{{17, 33}, {64, 64}, {8, 100}} {
			for _, tb := range []bool{false, true} {
				k, n := kn[0], kn[1]
				e := len(r.off) - 1
				ws := []int{e, k, n}
				if tb {
					ws = []int{e, n, k}
				}
				id := fmt.Sprintf("%d_%d_%v", i, k, tb)
				off := mmOffsets(t, b, inputs, "offsets"+id, r.off)
				outs = append(outs, b.Op(ir.OpGroupedMM, ir.Attrs{"tb": tb}, mmParam(b, "x"+id, ir.F32, r.rows, k), mmParam(b, "w"+id, ir.F32, ws...), off))
			}
		}
	}
	mmCheck(t, mmFinish(t, b, outs...), inputs, len(outs))
}

func TestGroupedMatmulWgradKernel(t *testing.T) {
	b := ir.NewBuilder("wgrad")
	inputs := map[string]*ref.Tensor{}
	var outs []*ir.Value
	for i, r := range mmExpertRanges {
		for _, nk := range [][2]int{{9, 33}, {64, 64}, {70, 20}} {
			n, k := nk[0], nk[1]
			id := fmt.Sprintf("%d_%d", i, n)
			off := mmOffsets(t, b, inputs, "offsets"+id, r.off)
			outs = append(outs, b.Op(ir.OpGroupedMMW, nil, mmParam(b, "dy"+id, ir.F32, r.rows, n), mmParam(b, "x"+id, ir.F32, r.rows, k), off))
		}
	}
	mmCheck(t, mmFinish(t, b, outs...), inputs, len(outs))
}

// The tiny model's mmKinds (qlora mode fuses NF4 dequant into the
// base-weight matmuls and the experts), fused and unfused.
func TestContractionKernelsTinyModel(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		g := loadModel(t, "tiny", &passes.Config{Mode: mode}, nil)
		for _, fuse := range []bool{false, true} {
			s := passes.Fuse(g, fuse)
			kinds := map[string]int{}
			var dequant bool
			for _, grp := range s.Groups {
				kinds[grp.Kind]++
				for _, n := range grp.Nodes {
					dequant = dequant || (mmKinds(grp) && n.Op == ir.OpDequant)
				}
			}
			if kinds["matmul"] == 0 || kinds["grouped_matmul"] == 0 {
				t.Errorf("%s fuse=%v: kernels %v, want matmul and grouped_matmul", mode, fuse, kinds)
			}
			if want := mode == "qlora" && fuse; dequant != want {
				t.Errorf("%s fuse=%v: NF4 dequant fused into a contraction: %v, want %v", mode, fuse, dequant, want)
			}
			// One library per schedule keeps the sim's C++ builds few.
			checkOnSim(t, g, s, mmKinds)
		}
	}
}

// BenchmarkMatmulSim times a 256×256×256 f32 matmul kernel on the sim (for
// information: the sim runs every simdgroup lane's 8×8 product on the CPU).
func BenchmarkMatmulSim(b *testing.B) {
	const n = 256
	bld := ir.NewBuilder("bench")
	out := bld.Matmul(mmParam(bld, "a", ir.F32, n, n), mmParam(bld, "b", ir.F32, n, n), false, true)
	g := mmFinish(b, bld, out)
	prog, err := codegen.Compile(g, passes.Fuse(g, true))
	if err != nil {
		b.Fatal(err)
	}
	d := simDevice()
	x, err := kcheck.NewExecutor(d, prog, kcheck.SeparateBuffers(d))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := x.Run(0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// The LoRA sum x·Wᵀ + s·(x·A)·B is one kernel: both contractions run into
// one accumulator (their K loops one after the other), with the scale
// applied while staging and the epilogue after.
func TestMatmulLoRASum(t *testing.T) {
	b := ir.NewBuilder("mm")
	x := mmParam(b, "x", ir.F32, 2, 37, 64)
	w := b.Op(ir.OpDequant, nil, mmParam(b, "w", ir.NF4, 48, 64))
	low := b.Matmul(b.Matmul(x, mmParam(b, "a", ir.F32, 64, 8), false, false), mmParam(b, "b", ir.F32, 8, 48), false, false)
	y := b.Unary(ir.OpSiLU, b.Add(b.Matmul(x, w, false, true), b.Scale(low, 0.5)))
	g := mmFinish(t, b, y)
	s := passes.Fuse(g, true)
	var sums int
	for _, grp := range s.Groups {
		if len(grp.Terms) == 2 {
			sums++
			if grp.Terms[0].Scale*grp.Terms[1].Scale != 0.5 || grp.Sum == nil || grp.Root.Op != ir.OpSiLU {
				t.Errorf("sum group: terms %v, sum %v, root %s", grp.Terms, grp.Sum, grp.Root.Op)
			}
		}
	}
	if sums != 1 || len(s.Groups) != 2 {
		t.Fatalf("%d groups, %d sums: want x·A, then one kernel for the rest", len(s.Groups), sums)
	}
	if n := checkOnSimWith(t, g, s, mmKinds, nil); n != 2 {
		t.Errorf("%d kernels, want 2", n)
	}
}

// Kernels that dequantise read the NF4 code table from a threadgroup copy
// (a per-thread nibble indexes it, and divergent reads of a constant array
// serialise): the constant table is read only by the copy, and the copy's
// barrier comes first, before any thread may return (the element-wise
// kernel of 70×63 elements returns past its last one). Unfused, the
// dequant is an element-wise kernel; fused, the matmul stages it.
func TestNF4CodeTableStaged(t *testing.T) {
	b := ir.NewBuilder("nf4")
	q := b.Op(ir.OpDequant, nil, mmParam(b, "q", ir.NF4, 70, 63))
	x := mmParam(b, "x", ir.F32, 5, 63)
	g := mmFinish(t, b, b.Matmul(x, q, false, true), b.Unary(ir.OpExp, q))
	for _, fuse := range []bool{false, true} {
		nf4CodeStaged(t, compileAndCheck(t, g, passes.Fuse(g, fuse), nil))
	}
}

func nf4CodeStaged(t *testing.T, prog *codegen.Program) {
	t.Helper()
	staged := 0
	for _, k := range prog.Module.Kernels {
		src, err := msl.RenderKernel(k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(src, "nf4_code[") {
			continue
		}
		staged++
		for _, line := range strings.Split(src, "\n") {
			if strings.Contains(line, "NF4_CODE[") && !strings.Contains(line, "nf4_code[lc") {
				t.Errorf("%s reads the constant code table outside the copy: %s", k.Name, strings.TrimSpace(line))
			}
		}
		bar, ret := strings.Index(src, "threadgroup_barrier"), strings.Index(src, "return;")
		if bar < 0 || (ret >= 0 && ret < bar) {
			t.Errorf("%s: the copy's barrier does not come before every return", k.Name)
		}
	}
	if staged == 0 {
		t.Errorf("no kernel stages the code table")
	}
}

// tiles reports whether a kernel multiplies simdgroup matrix tiles.
func tiles(body []kir.Stmt) bool {
	for _, s := range body {
		switch s := s.(type) {
		case kir.Tile:
			return true
		case kir.For:
			if tiles(s.Body) {
				return true
			}
		case kir.If:
			if tiles(s.Then) || tiles(s.Else) {
				return true
			}
		}
	}
	return false
}

// TestMatrixVector: with at most 8 rows (a decode step) a contraction whose
// rhs is contiguous along the inner axis runs as matrix-vector products,
// here with QLoRA's fused sum x·dequant(W) + s·(x·A)·B and an epilogue,
// and agrees with the reference; 9 rows go back to tiles.
func TestMatrixVector(t *testing.T) {
	for _, rows := range []int{1, 3, 8, 9} {
		src := fmt.Sprintf(`
const T = %d
const D = 40
input x: f32[T, D]
param w1: f32[72, D] = kaiming_uniform(a = sqrt(5)) lora
param w2: f32[D, 72] = kaiming_uniform(a = sqrt(5)) lora
output y = silu(linear(silu(linear(x, w1)), w2))
`, rows)
		g, err := lang.Build("mv.graph", []byte(src), lang.Options{})
		if err != nil {
			t.Fatal(err)
		}
		g = model(t, g, &passes.Config{Mode: "qlora"})
		s := passes.Fuse(g, true)
		prog := compileAndCheck(t, g, s, nil)
		n := 0
		for _, k := range prog.Module.Kernels {
			if !strings.Contains(k.Doc, "matmul") {
				continue
			}
			n++
			if got, want := tiles(k.Body), rows > 8; got != want {
				t.Errorf("%d rows: kernel %s multiplies tiles: %v, want %v", rows, k.Name, got, want)
			}
		}
		if n < 2 {
			t.Errorf("%d rows: %d matmul kernels, want the two projections at least", rows, n)
		}
	}
}
