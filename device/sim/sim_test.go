package sim_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
)

func TestAxpy(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n, padded = 1000, 1024
		x, y := make([]float32, padded), make([]float32, padded)
		for i := range x {
			x[i], y[i] = float32(i), float32(2*i+1)
		}
		bx, by := alloc(t, d, f32bytes(x)), alloc(t, d, f32bytes(y))
		k := kernel(t, d, "elementwise.metal", "axpy")
		// 8 groups of 128 threads: the grid overhangs n by 24 threads.
		dispatch(t, d, k, [3]int{8, 1, 1}, [3]int{128, 1, 1},
			device.BufferArg(by, 0), device.BufferArg(bx, 0),
			device.BytesArg(f32bytes([]float32{0.5})), device.BytesArg(u32bytes([]uint32{n})))
		got := bytesF32(read(t, d, by))
		for i := range got {
			want := y[i]
			if i < n {
				want = 0.5*x[i] + y[i]
			}
			if got[i] != want {
				t.Fatalf("y[%d] = %v, want %v", i, got[i], want)
			}
		}
	})
}

func TestHalfAffine(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n = 300
		r := rand.New(rand.NewPCG(1, 2))
		xs := make([]uint16, n)
		for i := range xs {
			xs[i] = f16Bits(float32(r.NormFloat64() * 10))
		}
		// struct Params { uint n; float scale; half bias; } is 12 bytes.
		params := make([]byte, 12)
		copy(params, u32bytes([]uint32{n, math.Float32bits(1.7)}))
		copy(params[8:], u16bytes([]uint16{f16Bits(0.25)}))
		out := alloc(t, d, make([]byte, 2*n))
		k := kernel(t, d, "elementwise.metal", "half_affine")
		dispatch(t, d, k, [3]int{3, 1, 1}, [3]int{128, 1, 1},
			device.BufferArg(out, 0), device.BufferArg(alloc(t, d, u16bytes(xs)), 0), device.BytesArg(params))
		got := bytesU16(read(t, d, out))
		for i := range got {
			v := f16Float(f16Bits(f16Float(xs[i]) * 1.7))
			want := f16Bits(v + 0.25) // half + half rounds the float sum
			if got[i] != want {
				t.Fatalf("out[%d] = %#04x, want %#04x", i, got[i], want)
			}
		}
	})
}

func TestHalfVectors(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n = 40
		a, b := make([]uint16, 4*n), make([]uint16, 4*n)
		for i := range a {
			a[i], b[i] = f16Bits(float32(i)*0.25-3), f16Bits(float32(i%7)-2.5)
		}
		out4, out2, outf := alloc(t, d, make([]byte, 8*n)), alloc(t, d, make([]byte, 4*n)), alloc(t, d, make([]byte, 16*n))
		k := kernel(t, d, "elementwise.metal", "half_vectors")
		dispatch(t, d, k, [3]int{1, 1, 1}, [3]int{n, 1, 1}, device.BufferArg(out4, 0),
			device.BufferArg(alloc(t, d, u16bytes(a)), 0), device.BufferArg(alloc(t, d, u16bytes(b)), 0),
			device.BufferArg(out2, 0), device.BufferArg(outf, 0))
		g4, g2, gf := bytesU16(read(t, d, out4)), bytesU16(read(t, d, out2)), bytesF32(read(t, d, outf))
		h := func(f float32) float32 { return f16Float(f16Bits(f)) }
		for i := 0; i < n; i++ {
			var s [4]float32
			for c := 0; c < 4; c++ {
				s[c] = h(h(f16Float(a[4*i+c])*f16Float(b[4*i+c])) + 1)
				if g4[4*i+c] != f16Bits(s[c]) {
					t.Fatalf("out4[%d].%d = %v, want %v", i, c, f16Float(g4[4*i+c]), s[c])
				}
				if gf[4*i+c] != s[c]*2 {
					t.Fatalf("outf[%d].%d = %v, want %v", i, c, gf[4*i+c], s[c]*2)
				}
			}
			want := [2]float32{h(s[0] - f16Float(a[4*i+1])), h(s[3] - 0.5)}
			if f16Float(g2[2*i]) != want[0] || f16Float(g2[2*i+1]) != want[1] {
				t.Fatalf("out2[%d] = %v %v, want %v", i, f16Float(g2[2*i]), f16Float(g2[2*i+1]), want)
			}
		}
	})
}

func TestConversions(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n = 65536
		hs := make([]uint16, n)
		fs := make([]float32, n)
		r := rand.New(rand.NewPCG(3, 4))
		for i := range hs {
			hs[i] = uint16(i)
			switch i % 4 {
			case 0: // halfway and near-halfway cases between halves
				fs[i] = f16Float(uint16(i)&0x7bff) + float32(math.Ldexp(1, -11))*f16Float(uint16(i)&0x7bff)
			case 1:
				fs[i] = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-25)))
			case 2:
				fs[i] = math.Float32frombits(r.Uint32())
			default:
				fs[i] = float32(i) * 1.5
			}
		}
		fs[0], fs[4], fs[8] = 65519.99, 65520, float32(math.Ldexp(1, -25))
		h2f, f2h, f2bf := alloc(t, d, make([]byte, 4*n)), alloc(t, d, make([]byte, 2*n)), alloc(t, d, make([]byte, 2*n))
		k := kernel(t, d, "elementwise.metal", "convert")
		dispatch(t, d, k, [3]int{n / 256, 1, 1}, [3]int{256, 1, 1}, device.BufferArg(h2f, 0),
			device.BufferArg(alloc(t, d, u16bytes(hs)), 0), device.BufferArg(f2h, 0), device.BufferArg(f2bf, 0),
			device.BufferArg(alloc(t, d, f32bytes(fs)), 0))
		gf, gh, gb := bytesF32(read(t, d, h2f)), bytesU16(read(t, d, f2h)), bytesU16(read(t, d, f2bf))
		for i := 0; i < n; i++ {
			if want := f16Float(hs[i]); gf[i] != want && !(want != want && gf[i] != gf[i]) {
				t.Fatalf("float(half %#04x) = %v, want %v", hs[i], gf[i], want)
			}
			if want := f16Bits(fs[i]); gh[i] != want {
				t.Fatalf("half(%v) = %#04x, want %#04x", fs[i], gh[i], want)
			}
			if fs[i] == fs[i] {
				b := math.Float32bits(fs[i])
				want := uint16((b + 0x7fff + (b>>16)&1) >> 16)
				if gb[i] != want {
					t.Fatalf("bfloat(%v) = %#04x, want %#04x", fs[i], gb[i], want)
				}
			}
		}
	})
}

func TestPositions(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		groups, threads := [3]int{3, 2, 2}, [3]int{8, 4, 2}
		gx, gy, gz := groups[0]*threads[0], groups[1]*threads[1], groups[2]*threads[2]
		out := alloc(t, d, make([]byte, 16*gx*gy*gz))
		k := kernel(t, d, "elementwise.metal", "positions")
		dispatch(t, d, k, groups, threads, device.BufferArg(out, 0))
		got := bytesU32(read(t, d, out))
		for z := 0; z < gz; z++ {
			for y := 0; y < gy; y++ {
				for x := 0; x < gx; x++ {
					i := (z*gy+y)*gx + x
					tx, ty, tz := x%threads[0], y%threads[1], z%threads[2]
					lin := tx + threads[0]*(ty+threads[1]*tz)
					want := [4]uint32{
						uint32(x + 1000*tx + 100000*ty),
						uint32(x/threads[0] + 10*(y/threads[1]) + 100*(z/threads[2]) + 1000*groups[0] + 10000*groups[1] + 100000*groups[2]),
						uint32(lin + 10000*threads[0]),
						uint32(lin%32 + 100*(lin/32)),
					}
					if g := [4]uint32(got[4*i : 4*i+4]); g != want {
						t.Fatalf("thread (%d,%d,%d): got %v, want %v", x, y, z, g, want)
					}
				}
			}
		}
	})
}

func TestMath(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		xs := []float32{-3.5, -1, -0.25, 0, 0.5, 1, 2.75, 10}
		out := alloc(t, d, make([]byte, 64*len(xs)))
		k := kernel(t, d, "elementwise.metal", "math_funcs")
		dispatch(t, d, k, [3]int{1, 1, 1}, [3]int{len(xs), 1, 1}, device.BufferArg(out, 0), device.BufferArg(alloc(t, d, f32bytes(xs)), 0))
		got := bytesF32(read(t, d, out))
		for i, x32 := range xs {
			x := float64(x32)
			sel := -1.0
			if x > 0 {
				sel = 1
			}
			nan, inf := 0.0, 0.0
			if x == 0 {
				nan, inf = 1, 1
			}
			want := []float64{
				math.Exp(x), math.Exp2(x), math.Log(math.Abs(x) + 1), math.Sqrt(math.Abs(x)),
				1 / math.Sqrt(math.Abs(x)+1), math.Tanh(x), x*2 + 1, math.Pow(math.Abs(x), 1.5),
				math.Max(x, 0), math.Min(x, 0), math.Max(-1, math.Min(x, 1)), math.Floor(x) + math.Ceil(x),
				sel, nan, inf, x*x + 1 + 4 + 9 + math.Abs(x) + 2 + 1,
			}
			for j, w := range want {
				if g := got[16*i+j]; !close32(g, float32(w), 1e-5) {
					t.Errorf("x=%v: output %d = %v, want %v", x, j, g, w)
				}
			}
		}
	})
}

func TestThreadgroupReduction(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		k := kernel(t, d, "reduce.metal", "tg_sum")
		if !k.(*sim.Kernel).UsesFibers() {
			t.Fatal("tg_sum uses barriers but does not run as fibers")
		}
		for _, nt := range []int{256, 1024} {
			const n = 3000
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(i%17) - 8
			}
			groups := (n + nt - 1) / nt
			out := alloc(t, d, make([]byte, 4*groups))
			dispatch(t, d, k, [3]int{groups, 1, 1}, [3]int{nt, 1, 1}, device.BufferArg(out, 0),
				device.BufferArg(alloc(t, d, f32bytes(x)), 0), device.BytesArg(u32bytes([]uint32{n})))
			got := bytesF32(read(t, d, out))
			for g := 0; g < groups; g++ {
				var want float32
				for i := g * nt; i < min(n, (g+1)*nt); i++ {
					want += x[i]
				}
				if got[g] != want {
					t.Fatalf("%d threads: group %d sum = %v, want %v", nt, g, got[g], want)
				}
			}
		}
	})
}

func TestThreadgroupScan(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const nt, groups = 512, 3
		x := make([]uint32, nt*groups)
		for i := range x {
			x[i] = uint32(i*7919) % 100
		}
		out := alloc(t, d, make([]byte, 4*len(x)))
		k := kernel(t, d, "reduce.metal", "tg_scan")
		dispatch(t, d, k, [3]int{groups, 1, 1}, [3]int{nt, 1, 1}, device.BufferArg(out, 0), device.BufferArg(alloc(t, d, u32bytes(x)), 0))
		got := bytesU32(read(t, d, out))
		for g := 0; g < groups; g++ {
			var s uint32
			for i := 0; i < nt; i++ {
				s += x[g*nt+i]
				if got[g*nt+i] != s {
					t.Fatalf("group %d: scan[%d] = %d, want %d", g, i, got[g*nt+i], s)
				}
			}
		}
	})
}

func TestSimdFunctions(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const nt, groups = 96, 2
		x := make([]float32, nt*groups)
		for i := range x {
			x[i] = float32((i*37)%101) - 50
		}
		out := alloc(t, d, make([]byte, 48*len(x)))
		k := kernel(t, d, "reduce.metal", "simd_ops")
		dispatch(t, d, k, [3]int{groups, 1, 1}, [3]int{nt, 1, 1}, device.BufferArg(out, 0), device.BufferArg(alloc(t, d, f32bytes(x)), 0))
		got := bytesF32(read(t, d, out))
		for i := range x {
			base := i - i%32
			sg := x[base : base+32]
			lane := i % 32
			var sum, mx, mn, excl float32 = 0, sg[0], sg[0], 0
			for j, v := range sg {
				sum += v
				mx, mn = max(mx, v), min(mn, v)
				if j < lane {
					excl += v
				}
			}
			shuffle := func(src int, ok bool) float32 {
				if !ok {
					return x[i]
				}
				return sg[src]
			}
			g0 := i - i%nt
			var total float32
			for s := 0; s < nt/32; s++ {
				var part float32
				for _, v := range x[g0+32*s : g0+32*s+32] {
					part += v
				}
				total += part
			}
			want := []float32{
				sum, mx, mn,
				shuffle(lane+3, lane+3 < 32), shuffle(lane-5, lane >= 5), shuffle(lane^7, true),
				sg[9], sg[(lane*7)%32], excl, excl + x[i], 496, total,
			}
			for j, w := range want {
				if g := got[12*i+j]; !close32(g, w, 1e-6) {
					t.Fatalf("thread %d: output %d = %v, want %v", i, j, g, w)
				}
			}
		}
	})
}

func TestSimdPartialGroups(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n = 80 // the third simdgroup has 16 live lanes
		x := make([]float32, 4*96)
		for i := range x {
			x[i] = float32(i % 13)
		}
		out := alloc(t, d, make([]byte, 16*3))
		k := kernel(t, d, "reduce.metal", "simd_partial")
		dispatch(t, d, k, [3]int{1, 1, 1}, [3]int{96, 1, 1}, device.BufferArg(out, 0),
			device.BufferArg(alloc(t, d, f32bytes(x)), 0), device.BytesArg(u32bytes([]uint32{n})))
		got := bytesF32(read(t, d, out))
		for s := 0; s < 3; s++ {
			for c := 0; c < 4; c++ {
				var want float32
				for i := 32 * s; i < min(n, 32*s+32); i++ {
					want += x[4*i+c]
				}
				if got[4*s+c] != want {
					t.Fatalf("simdgroup %d component %d: %v, want %v", s, c, got[4*s+c], want)
				}
			}
		}
	})
}

func matmulRef(a, b []float32, m, n, k int) []float32 {
	c := make([]float32, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += float64(a[i*k+p]) * float64(b[p*n+j])
			}
			c[i*n+j] = float32(s)
		}
	}
	return c
}

func randMatrix(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.IntN(17)-8) / 4
	}
	return v
}

func TestMatmulTiled(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const m, n, kk = 50, 70, 33 // not multiples of the tiles
		r := rand.New(rand.NewPCG(5, 6))
		a, b := randMatrix(r, m*kk), randMatrix(r, kk*n)
		want := matmulRef(a, b, m, n, kk)
		for _, v := range []struct {
			name       string
			block, tpg int
		}{{"matmul_tiled", 16, 16}, {"matmul_tiled32", 32, 32}, {"matmul_blocked", 64, 16}} {
			c := alloc(t, d, make([]byte, 4*m*n))
			k := kernel(t, d, "matmul.metal", v.name)
			dispatch(t, d, k, [3]int{(n + v.block - 1) / v.block, (m + v.block - 1) / v.block, 1}, [3]int{v.tpg, v.tpg, 1},
				device.BufferArg(c, 0), device.BufferArg(alloc(t, d, f32bytes(a)), 0), device.BufferArg(alloc(t, d, f32bytes(b)), 0),
				device.BytesArg(u32bytes([]uint32{m, n, kk})))
			got := bytesF32(read(t, d, c))
			for i := range want {
				if got[i] != want[i] { // the inputs are exact in float
					t.Fatalf("%s: C[%d][%d] = %v, want %v", v.name, i/n, i%n, got[i], want[i])
				}
			}
		}
	})
}

func TestMatmulSimdgroup(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const m, n, kk = 32, 24, 16
		r := rand.New(rand.NewPCG(7, 8))
		a, b := randMatrix(r, m*kk), randMatrix(r, kk*n)
		at := make([]float32, kk*m)
		for i := 0; i < m; i++ {
			for p := 0; p < kk; p++ {
				at[p*m+i] = a[i*kk+p]
			}
		}
		bh := make([]uint16, len(b))
		for i, v := range b {
			bh[i] = f16Bits(v)
		}
		c := alloc(t, d, make([]byte, 4*m*n))
		k := kernel(t, d, "matmul.metal", "matmul_simdgroup")
		dispatch(t, d, k, [3]int{(n + 15) / 16, (m + 15) / 16, 1}, [3]int{128, 1, 1}, device.BufferArg(c, 0),
			device.BufferArg(alloc(t, d, f32bytes(at)), 0), device.BufferArg(alloc(t, d, u16bytes(bh)), 0),
			device.BytesArg(u32bytes([]uint32{m, n, kk})))
		got, want := bytesF32(read(t, d, c)), matmulRef(a, b, m, n, kk)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("C[%d][%d] = %v, want %v", i/n, i%n, got[i], want[i])
			}
		}
	})
}

// compileErr compiles src and returns its error, failing if there is none.
func compileErr(t *testing.T, d *sim.Device, src string) error {
	t.Helper()
	_, err := d.Compile(src)
	if err == nil {
		t.Fatal("Compile succeeded, want an error")
	}
	return err
}

func TestUnsupportedFeatures(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		cases := []struct{ src, want string }{
			{`#include <metal_stdlib>
using namespace metal;
kernel void k(texture2d<float, access::read> t [[texture(0)]], uint i [[thread_position_in_grid]]) {}
`, "kernels.metal:3: magc sim: [[texture(n)]] (textures) is not supported"},
			{`#include <metal_stdlib>
using namespace metal;
kernel void k(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) {
    float v = x[i];
    x[i] = quad_sum(v);
}
`, "kernels.metal:5:"},
			{`#include <metal_stdlib>
using namespace metal;
kernel void k(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) {
    constexpr sampler s(filter::linear);
}
`, "magc sim: sampler is not supported"},
			{`using namespace metal;
kernel void k(device float* x [[buffer(0)]], float4 p [[stage_in]]) {}
`, "magc sim: [[stage_in]] is not supported"},
		}
		for _, c := range cases {
			err := compileErr(t, d, c.src)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\ndoes not contain %q", err, c.want)
			}
		}
		// The quad_sum error names the feature at the user's line.
		var ce *device.CompileError
		if err := compileErr(t, d, cases[1].src); !errors.As(err, &ce) || ce.Diagnostics[0].Line != 5 ||
			!strings.Contains(ce.Diagnostics[0].Msg, "magc sim: quad-group function quad_sum is not supported") {
			t.Errorf("quad_sum: got %v", err)
		}
	})
}

func TestThreadgroupMemoryLimit(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		ok := `#include <metal_stdlib>
using namespace metal;
kernel void k(device float* x [[buffer(0)]], uint i [[thread_position_in_threadgroup]]) {
    threadgroup float a[4096];
    threadgroup float b[4096];
    a[i] = b[i];
}
`
		if _, err := d.Compile(ok); err != nil {
			t.Fatalf("exactly 32 KiB: %v", err)
		}
		over := strings.Replace(ok, "b[4096];", "b[4096];\n    threadgroup half c[2];", 1)
		err := compileErr(t, d, over)
		want := "kernels.metal:6: "
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "kernel k declares 32772 bytes of threadgroup memory") {
			t.Errorf("got %v\nwant %q and the size", err, want)
		}
	})
}

func TestCompileErrorLine(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		src := `#include <metal_stdlib>
using namespace metal;

kernel void k(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) {
    float v = x[i]
    x[i] = v * 2.0f;
}
`
		err := compileErr(t, d, src)
		var ce *device.CompileError
		if !errors.As(err, &ce) || len(ce.Diagnostics) == 0 {
			t.Fatalf("got %v, want a *CompileError", err)
		}
		// gcc places a missing ';' at line 5, clang at the next token.
		if l := ce.Diagnostics[0].Line; l != 5 && l != 6 {
			t.Errorf("error at line %d, want 5 or 6:\n%v", l, err)
		}
		if !strings.Contains(err.Error(), "kernels.metal:") {
			t.Errorf("error does not name kernels.metal: %v", err)
		}
	})
}

func TestDispatchChecks(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		k := kernel(t, d, "elementwise.metal", "axpy")
		buf, small := alloc(t, d, make([]byte, 64)), alloc(t, d, make([]byte, 6))
		one := device.BytesArg(u32bytes([]uint32{1}))
		args := []device.Arg{device.BufferArg(buf, 0), device.BufferArg(buf, 0), one, one}
		cases := []struct {
			groups, threads [3]int
			args            []device.Arg
			want            string
		}{
			{[3]int{1, 1, 1}, [3]int{1025, 1, 1}, args, "threads per threadgroup [1025 1 1], more than 1024"},
			{[3]int{1, 1, 1}, [3]int{32, 32, 2}, args, "threads per threadgroup [32 32 2], more than 1024"},
			{[3]int{1, 1, 1}, [3]int{0, 1, 1}, args, "bad shape"},
			{[3]int{1, 1, 1}, [3]int{1, 1, 1}, args[:3], "got 3 arguments, the kernel takes 4"},
			{[3]int{1, 1, 1}, [3]int{1, 1, 1}, []device.Arg{args[0], device.BufferArg(buf, 2), one, one}, "not a multiple of the 4-byte alignment"},
			{[3]int{1, 1, 1}, [3]int{1, 1, 1}, []device.Arg{args[0], args[1], device.BytesArg([]byte{1}), one}, "needs 4 bytes, got 1"},
			{[3]int{1, 1, 1}, [3]int{1, 1, 1}, []device.Arg{args[0], args[1], device.BufferArg(small, 4), one}, "needs 4 bytes, the buffer has 2"},
			{[3]int{1, 1, 1}, [3]int{1, 1, 1}, []device.Arg{{}, args[1], one, one}, "argument 0 (device float* y) is not bound"},
		}
		for _, c := range cases {
			err := d.Dispatch(k, c.groups, c.threads, c.args)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Dispatch(%v, %v): got %v, want %q", c.groups, c.threads, err, c.want)
			}
		}
		if err := d.Dispatch(k, [3]int{0, 1, 1}, [3]int{1, 1, 1}, args); err != nil {
			t.Errorf("an empty grid: %v", err)
		}
		lib, _ := d.Compile(readTestdata(t, "elementwise.metal"))
		if _, err := lib.Kernel("nope"); err == nil || !strings.Contains(err.Error(), "axpy") {
			t.Errorf("Kernel(nope): %v", err)
		}
	})
}

func TestMaxThreadsAttribute(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		lib, err := d.Compile(`#include <metal_stdlib>
using namespace metal;
[[max_total_threads_per_threadgroup(64)]]
kernel void k(device uint* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i] = i; }
`)
		if err != nil {
			t.Fatal(err)
		}
		k, err := lib.Kernel("k")
		if err != nil {
			t.Fatal(err)
		}
		if k.MaxThreads() != 64 {
			t.Errorf("MaxThreads = %d, want 64", k.MaxThreads())
		}
		buf := alloc(t, d, make([]byte, 4*192))
		if err := d.Dispatch(k, [3]int{1, 1, 1}, [3]int{128, 1, 1}, []device.Arg{device.BufferArg(buf, 0)}); err == nil {
			t.Error("128 threads dispatched on a kernel limited to 64")
		}
	})
}

func TestDeadlockIsAnError(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		lib, err := d.Compile(`#include <metal_stdlib>
using namespace metal;
kernel void k(device uint* x [[buffer(0)]], uint i [[thread_position_in_threadgroup]]) {
    if (i == 0) threadgroup_barrier(mem_flags::mem_threadgroup);
    else simdgroup_barrier(mem_flags::mem_none);
    x[i] = i;
}
`)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := lib.Kernel("k")
		// One simdgroup, so that no thread returns while the others wait
		// (that is an error of its own).
		buf := alloc(t, d, make([]byte, 4*32))
		err = d.Dispatch(k, [3]int{4, 1, 1}, [3]int{32, 1, 1}, []device.Arg{device.BufferArg(buf, 0)})
		if err == nil || !strings.Contains(err.Error(), "deadlocked") {
			t.Errorf("got %v, want a deadlock error", err)
		}
	})
}

// TestNarrowingIsExplicit: float (or an integer, for bfloat) converts to
// half and bfloat only when written out, as Metal requires for bfloat; the
// sim refuses the implicit form for half too, so magc's kernels convert in
// the open.
func TestNarrowingIsExplicit(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		kernelWith := func(body string) string {
			return `#include <metal_stdlib>
using namespace metal;
kernel void k(device half* h [[buffer(0)]], device bfloat* b [[buffer(1)]], device const float* x [[buffer(2)]],
              uint i [[thread_position_in_grid]]) {
    ` + body + `
}
`
		}
		for _, body := range []string{
			"b[i] = x[i];",
			"bfloat v = x[i]; b[i] = v;",
			"b[i] = 1.0f;",
			"b[i] = 1;",
			"h[i] = x[i];",
			"half v = 0.5f; h[i] = v;",
			"h[i] = x[i] * 2.0;",
		} {
			if _, err := d.Compile(kernelWith(body)); err == nil {
				t.Errorf("%s: compiled, want an error", body)
			}
		}
		ok := "b[i] = bfloat(x[i]); h[i] = half(x[i]) + half(0.5f); h[i] += 1; float f = h[i] * float(b[i]); b[i] = bfloat(f); h[i] = 2;"
		if _, err := d.Compile(kernelWith(ok)); err != nil {
			t.Errorf("explicit conversions refused: %v", err)
		}
	})
}

// TestMatrixNeedsWholeSimdgroup: simdgroup matrix functions called by a
// partial simdgroup, by lanes of which some returned, by lanes on different
// paths or with different arguments fail the dispatch; the same kernel
// with every lane together runs.
func TestMatrixNeedsWholeSimdgroup(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		lib, err := d.Compile(`#include <metal_stdlib>
using namespace metal;
kernel void k(device float* x [[buffer(0)]], constant uint& mode [[buffer(1)]],
              uint lane [[thread_index_in_simdgroup]]) {
    simdgroup_float8x8 a;
    if (mode == 1 && lane >= 16) return;
    if (mode == 2 && lane < 16) {
        simdgroup_load(a, x, 8);
    } else {
        simdgroup_load(a, x + (mode == 3 ? lane % 2 : 0), 8);
    }
    simdgroup_multiply_accumulate(a, a, a, a);
    simdgroup_store(a, x + 64, 8);
    if (mode == 4 && lane < 16) simdgroup_store(a, x + 64, 8);
    float s = simd_sum(x[lane]);
    simdgroup_store(a, x + 64 + (mode == 5 ? lane % 2 : 0), 8);
    if (mode == 6) threadgroup_barrier(mem_flags::mem_none); if (mode == 7 && lane == 3) return;
    simdgroup_load(a, x + (mode == 6 && lane == 7 ? 8 : 0), 8);
    x[128 + lane] = s;
}
`)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := lib.Kernel("k")
		for _, c := range []struct {
			mode, threads int
			want          string // "" for success
		}{
			{0, 32, ""},
			{0, 64, ""},
			{0, 48, "simdgroup 1: simdgroup_load at kernels.metal:10: only 16 of 32 lanes are live in the simdgroup"},
			{1, 32, "simdgroup_load at kernels.metal:10: only 16 of 32 lanes took part"},
			{2, 32, "(lanes diverged)"},
			{3, 32, "simdgroup_load at kernels.metal:10: lane "},
			// Checked lazily: a divergence after the first call is
			// named by the span it falls in; a simd-group function
			// or a barrier starts a new span.
			{4, 32, "simdgroup_load at kernels.metal:10: from here to simdgroup_store at kernels.metal:14 lane 0 made 4 simdgroup matrix calls and lane 16 made 3"},
			{5, 32, "simdgroup_store at kernels.metal:16: lane 1 made another call"},
			{6, 64, "simdgroup_load at kernels.metal:18: lane 7 made another call"},
			{7, 32, "simdgroup_store at kernels.metal:16: from here to simdgroup_load at kernels.metal:18 lane 0 made 2 simdgroup matrix calls and lane 3 made 1"},
			{6, 64 + 16, "simdgroup 2: simdgroup_load at kernels.metal:10: only 16 of 32 lanes are live"},
		} {
			buf := alloc(t, d, make([]byte, 4*192))
			err := d.Dispatch(k, [3]int{1, 1, 1}, [3]int{c.threads, 1, 1},
				[]device.Arg{device.BufferArg(buf, 0), device.BytesArg(u32bytes([]uint32{uint32(c.mode)}))})
			switch {
			case c.want == "" && err != nil:
				t.Errorf("mode %d, %d threads: %v", c.mode, c.threads, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("mode %d, %d threads: got %v, want an error with %q", c.mode, c.threads, err, c.want)
			}
		}
	})
}
