package sim_test

import (
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
)

// Benchmarks use the first compiler found ($CXX, else g++ or clang++).
// Compiling happens before the timer starts.
func benchDevice(b *testing.B) *sim.Device {
	d := sim.New(sim.WithCompiler(compilers(b)[0]))
	b.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkMatmulTiled512 is a 512x512x512 fp32 matmul with tiles in
// threadgroup memory and two barriers per tile step:
//
//	tile16   16x16 tiles, one output per thread (256 fibers per threadgroup)
//	tile32   32x32 tiles, one output per thread (1024 fibers)
//	blocked  64x64 tiles, 4x4 outputs per thread (256 fibers)
func BenchmarkMatmulTiled512(b *testing.B) {
	for _, v := range []struct {
		name, kernel string
		block, tpg   int
	}{{"tile16", "matmul_tiled", 16, 16}, {"tile32", "matmul_tiled32", 32, 32}, {"blocked", "matmul_blocked", 64, 16}} {
		b.Run(v.name, func(b *testing.B) {
			const n = 512
			d := benchDevice(b)
			k := kernel(b, d, "matmul.metal", v.kernel)
			r := rand.New(rand.NewPCG(1, 1))
			A, B := alloc(b, d, f32bytes(randMatrix(r, n*n))), alloc(b, d, f32bytes(randMatrix(r, n*n)))
			C := alloc(b, d, make([]byte, 4*n*n))
			dims := device.BytesArg(u32bytes([]uint32{n, n, n}))
			b.ResetTimer()
			for b.Loop() {
				dispatch(b, d, k, [3]int{n / v.block, n / v.block, 1}, [3]int{v.tpg, v.tpg, 1},
					device.BufferArg(C, 0), device.BufferArg(A, 0), device.BufferArg(B, 0), dims)
			}
			b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkReduceBarriers is a threadgroup-memory tree reduction of 4M
// floats: 256-thread threadgroups, nine barriers each.
func BenchmarkReduceBarriers(b *testing.B) {
	const n, nt = 1 << 22, 256
	d := benchDevice(b)
	k := kernel(b, d, "reduce.metal", "tg_sum")
	x := alloc(b, d, make([]byte, 4*n))
	out := alloc(b, d, make([]byte, 4*n/nt))
	b.ResetTimer()
	for b.Loop() {
		dispatch(b, d, k, [3]int{n / nt, 1, 1}, [3]int{nt, 1, 1},
			device.BufferArg(out, 0), device.BufferArg(x, 0), device.BytesArg(u32bytes([]uint32{n})))
	}
	b.ReportMetric(n*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
}

// BenchmarkAxpy is the barrier-free elementwise y = a*x + y over 4M floats.
func BenchmarkAxpy(b *testing.B) {
	const n, nt = 1 << 22, 256
	d := benchDevice(b)
	k := kernel(b, d, "elementwise.metal", "axpy")
	x, y := alloc(b, d, make([]byte, 4*n)), alloc(b, d, make([]byte, 4*n))
	b.ResetTimer()
	for b.Loop() {
		dispatch(b, d, k, [3]int{n / nt, 1, 1}, [3]int{nt, 1, 1}, device.BufferArg(y, 0), device.BufferArg(x, 0),
			device.BytesArg(f32bytes([]float32{0.5})), device.BytesArg(u32bytes([]uint32{n})))
	}
	b.ReportMetric(n*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
}

// BenchmarkDispatchOverhead is a dispatch of one threadgroup of 32 threads
// that does almost nothing: the fixed cost of Dispatch.
func BenchmarkDispatchOverhead(b *testing.B) {
	d := benchDevice(b)
	k := kernel(b, d, "elementwise.metal", "axpy")
	x, y := alloc(b, d, make([]byte, 128)), alloc(b, d, make([]byte, 128))
	args := []device.Arg{device.BufferArg(y, 0), device.BufferArg(x, 0),
		device.BytesArg(f32bytes([]float32{0.5})), device.BytesArg(u32bytes([]uint32{32}))}
	b.ResetTimer()
	for b.Loop() {
		if err := d.Dispatch(k, [3]int{1, 1, 1}, [3]int{32, 1, 1}, args); err != nil {
			b.Fatal(err)
		}
	}
}
