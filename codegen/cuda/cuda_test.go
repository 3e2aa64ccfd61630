package cuda

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen/kir"
)

// everyOp is a module whose one kernel uses every construct of the kernel
// IR, most of which no golden uses (simd min, shuffle down, broadcast, tanh...).
func everyOp() *kir.Module {
	f, i := kir.F, kir.I
	var body []kir.Stmt
	decl := func(name string, t kir.Type, e kir.Expr) kir.Expr {
		body = append(body, kir.Decl{Name: name, Type: t, Init: e})
		return kir.V(name)
	}
	th := decl("th", kir.I32, kir.Thread(0))
	decl("lo", kir.I32, kir.Add(kir.Local(1), kir.Group(2)))
	ln := decl("ln", kir.I32, kir.Builtin{Kind: "lane"})
	sg := decl("sg", kir.I32, kir.Builtin{Kind: "simdgroup"})
	body = append(body,
		kir.Shared{Name: "sh", Type: kir.F32, Len: 128},
		kir.Array{Name: "arr", Type: kir.F32, Len: 2},
		kir.Decl{Name: "x", Type: kir.F32, Init: kir.At("p1", th), Mutable: true},
		kir.Assign{LHS: kir.V("x"), Op: "max=", RHS: f(math.Inf(-1))},
		kir.Assign{LHS: kir.V("x"), Op: "min=", RHS: f(math.Inf(1))},
		kir.Assign{LHS: kir.V("x"), Op: "*=", RHS: kir.At("T", kir.Convert{Type: kir.I32, X: kir.At("p3", ln)})},
		kir.Set(kir.At("arr", i(0)), kir.Select{Cond: kir.Fn("isnan", kir.V("x")), A: f(math.NaN()), B: kir.Neg{X: kir.V("x")}}),
		kir.Set(kir.At("arr", i(1)), kir.Select{Cond: kir.Fn("isfinite", kir.V("x")), A: f(1), B: f(0)}),
		kir.Loop("k", i(0), i(4), i(1), kir.Set(kir.At("sh", kir.Add(kir.Mul(sg, i(32)), kir.V("k"))), kir.At("arr", i(0)))),
		kir.Barrier{},
		kir.If{Cond: kir.Not{X: kir.Op("==", kir.Mod(ln, i(2)), i(0))}, Then: []kir.Stmt{kir.Comment{Text: "odd lanes"}},
			Else: []kir.Stmt{kir.If{Cond: kir.Lit{Type: kir.Bool, V: 1}, Then: []kir.Stmt{kir.Assign{LHS: kir.V("x"), Op: "+=", RHS: f(1)}},
				Else: []kir.Stmt{kir.Return{}}}}},
	)
	// Each step a variable of its own, so the expressions stay small.
	n := 0
	step := func(e kir.Expr) kir.Expr {
		n++
		return decl("y"+strconv.Itoa(n), kir.F32, e)
	}
	y := kir.V("x")
	for _, fn := range []string{"exp", "log", "sqrt", "rsqrt", "abs", "tanh", "floor"} {
		y = step(kir.Fn(fn, y))
	}
	y = step(kir.Fn("fma", kir.Fn("pow", y, f(2)), y, y))
	for _, op := range []string{"sum", "max", "min", "prefix_sum"} {
		y = step(kir.Add(y, kir.Simd{Op: op, X: y}))
		y = step(kir.Add(y, kir.Convert{Type: kir.F32, X: kir.Simd{Op: op, X: kir.Convert{Type: kir.I32, X: y}}}))
	}
	for _, op := range []string{"shuffle_down", "shuffle_xor", "broadcast"} {
		y = step(kir.Add(y, kir.Simd{Op: op, X: y, Arg: i(3)}))
	}
	u := kir.Convert{Type: kir.U32, X: y}
	body = append(body,
		kir.Set(kir.At("p0", th), kir.Add(y, kir.Convert{Type: kir.F32, X: kir.Op(">>", u, kir.U(1))})),
		kir.Tile{Name: "ta", Type: kir.F32}, kir.Tile{Name: "tb", Type: kir.F32}, kir.Tile{Name: "tc", Type: kir.F32},
		kir.TileLoad{Tile: "ta", Src: "p1", Off: i(8), Stride: i(16)},
		kir.TileLoad{Tile: "tb", Src: "sh", Off: i(0), Stride: i(8), Transpose: true},
		kir.TileMMA{D: "tc", A: "ta", B: "tb", C: "tc"},
		kir.TileStore{Tile: "tc", Dst: "sh", Off: i(64), Stride: i(8)},
		kir.TileStore{Tile: "tc", Dst: "p0", Off: i(0), Stride: i(8)},
	)
	k := &kir.Kernel{Name: "every_op", Doc: "every construct\nof the kernel IR", Threads: [3]int{32, 2, 1}, Groups: [3]int{4, 1, 1},
		Params: []kir.Param{{Name: "p0", Elem: kir.F32}, {Name: "p1", Elem: kir.F32, ReadOnly: true}, {Name: "p2", Elem: kir.I32}, {Name: "p3", Elem: kir.U8, ReadOnly: true}},
		Body:   body}
	return &kir.Module{Tables: []kir.Table{{Name: "T", Type: kir.F32, Values: []float64{0.5, -1}}, {Name: "UNUSED", Type: kir.F16, Values: []float64{1}}}, Kernels: []*kir.Kernel{k}}
}

func TestRender(t *testing.T) {
	src, err := Render(everyOp())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"// every construct\n// of the kernel IR\n// block 32×2×1, grid 4×1×1 blocks\n",
		"extern \"C\" __global__ void __launch_bounds__(64) every_op(\n        float* p0,\n        const float* p1,\n        int* p2,\n        const uchar* p3) {\n",
		"__constant__ float T[2] = {0.5f, -1.0f};",
		"const int th = int(blockIdx.x * blockDim.x + threadIdx.x);",
		"const int lo = (int(threadIdx.y) + int(blockIdx.z));",
		"const int ln = magc_lane();",
		"const int sg = magc_simdgroup();",
		"__shared__ float sh[128];",
		"x = max(x, (-__int_as_float(0x7f800000)));",
		"__syncthreads();",
		"} else if (true) {",
		"__int_as_float(0x7fc00000)",
		"magc_simd_shuffle_xor(",
		"magc_tile ta = {};",
		"magc_tile_load_t(tb, sh + 0, 8);",
		"magc_tile_mma(tc, ta, tb, tc);",
		"magc_tile_store(tc, p0 + 0, 8);",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("no %q in\n%s", want, src)
		}
	}
	if strings.Contains(src, "UNUSED") || strings.Contains(src, "cuda_fp16") || strings.Contains(src, "__restrict__") {
		t.Errorf("an f32 module emits a table no kernel reads, includes cuda_fp16.h or restricts pointers:\n%s", src)
	}
	half := &kir.Module{Kernels: []*kir.Kernel{{Name: "h", Threads: [3]int{1, 1, 1}, Params: []kir.Param{{Name: "p0", Elem: kir.F16}},
		Body: []kir.Stmt{kir.Set(kir.At("p0", kir.I(0)), kir.Lit{Type: kir.F16, V: 1})}}}}
	src, err = Render(half)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(src, "#include <cuda_fp16.h>\n") || strings.Contains(src, "cuda_bf16") || !strings.Contains(src, "p0[0] = __half(1.0f);") {
		t.Errorf("an f16 module:\n%s", src)
	}
}

// TestEveryOpToPTX compiles the every-op module to PTX with clang, against
// the prelude standing in for nvcc's headers.
func TestEveryOpToPTX(t *testing.T) {
	clang, err := exec.LookPath("clang++")
	if err != nil {
		t.Skip("clang++ is not installed")
	}
	src, err := Render(everyOp())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cu := filepath.Join(dir, "every_op.cu")
	if err := os.WriteFile(cu, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(clang, "-x", "cuda", "-nocudainc", "-nocudalib", "--cuda-device-only", "--cuda-gpu-arch=sm_80",
		"-Xclang", "-target-feature", "-Xclang", "+ptx70", "-Werror", "-Wno-parentheses-equality",
		"-include", "testdata/clang_prelude.h", "-S", "-o", filepath.Join(dir, "every_op.ptx"), cu).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, src)
	}
	ptx, err := os.ReadFile(filepath.Join(dir, "every_op.ptx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".visible .entry every_op(", "shfl.sync.bfly", "shfl.sync.up", "shfl.sync.down", "shfl.sync.idx", "bar.sync"} {
		if !strings.Contains(string(ptx), want) {
			t.Errorf("PTX has no %q", want)
		}
	}
}

// TestWarpHelpersOnHost runs the prelude's collectives and tile ops with 32
// host threads as the lanes of one warp (testdata/host_warp.cpp), checking
// their results, the MMA's bit for bit.
func TestWarpHelpersOnHost(t *testing.T) {
	clang, err := exec.LookPath("clang++")
	if err != nil {
		t.Skip("clang++ is not installed")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prelude.cuh"), []byte(Dialect.Prelude(&kir.Module{})), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "host_warp")
	out, err := exec.Command(clang, "-std=c++20", "-O1", "-pthread", "-ffp-contract=off", "-I", dir, "-o", bin, "testdata/host_warp.cpp").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := exec.Command(bin).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
