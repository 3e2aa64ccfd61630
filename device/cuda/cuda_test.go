package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/scm-magellano/magc/device"
)

// TestNoDriver takes the path of a machine without CUDA, even on one with it.
func TestNoDriver(t *testing.T) {
	defer func(name string) { libName = name }(libName)
	libName = "libmagc-test-absent.so.1"
	d, err := New()
	want := "no CUDA driver found: libmagc-test-absent.so.1: "
	if err == nil {
		d.Close()
		t.Fatal("New found a driver in a library that does not exist")
	}
	if !strings.HasPrefix(err.Error(), want) || len(err.Error()) == len(want) {
		t.Fatalf("New() error = %q, want %q and a reason", err, want)
	}
}

// TestDefaultLibrary: where the real driver is missing, the message names it.
func TestDefaultLibrary(t *testing.T) {
	if libName != "libcuda.so.1" {
		t.Fatalf("libName = %q", libName)
	}
	d, err := New()
	if err == nil {
		d.Close()
		return
	}
	if msg := err.Error(); strings.HasPrefix(msg, "no CUDA driver found") && !strings.HasPrefix(msg, "no CUDA driver found: libcuda.so.1: ") {
		t.Errorf("New() error = %q, want it to name libcuda.so.1", msg)
	}
	if _, ok := Available(); ok {
		t.Error("Available reports a device that New cannot open")
	}
}

func TestCompileErrorMapping(t *testing.T) {
	src := "extern \"C\" __global__ void k(float* p0) {\n    float a = 1.0f;\n    p0[0] = undefined_thing;\n}\n"
	out := `kernels.cu(3): error: identifier "undefined_thing" is undefined
      p0[0] = undefined_thing;
              ^

kernels.cu(2): warning #177-D: variable "a" was declared but never referenced
/tmp/x/kernels.cu(4): error #29: expected an expression
ptxas error   : Entry function 'k' uses too much shared data (0x10000 bytes, 0xc000 max)

2 errors detected in the compilation of "kernels.cu".
`
	e := newCompileError(src, out)
	want := []device.Diagnostic{
		{Line: 3, Msg: `identifier "undefined_thing" is undefined`, Source: "    p0[0] = undefined_thing;"},
		{Line: 4, Msg: "expected an expression", Source: "}"},
		{Msg: "ptxas error   : Entry function 'k' uses too much shared data (0x10000 bytes, 0xc000 max)"},
	}
	if !reflect.DeepEqual(e.Diagnostics, want) {
		t.Fatalf("diagnostics:\n got %+v\nwant %+v", e.Diagnostics, want)
	}
	msg := e.Error()
	for _, s := range []string{"kernels.cu:3: identifier \"undefined_thing\"", "     3 |     p0[0] = undefined_thing;", "ptxas error"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error text lacks %q:\n%s", s, msg)
		}
	}
	if strings.Contains(msg, "warning") {
		t.Errorf("warnings belong in Output only:\n%s", msg)
	}
	if got := newCompileError(src, "nvcc fell over\n").Error(); !strings.Contains(got, "nvcc fell over") {
		t.Errorf("unparsed output is dropped: %q", got)
	}
}

func TestKernelParams(t *testing.T) {
	got := kernelParams(testSrc + `extern "C" __global__ void none() {}
extern "C" __global__ void __launch_bounds__(128, 2) two(float* p0,
    const float* p1) {}`)
	want := map[string]int{"vadd": 3, "block_sum": 2, "warp_sum": 2, "grid3": 1, "none": 0, "two": 2}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("kernelParams = %v, want %v", got, want)
	}
}

const testN = 1000

// testSrc is the module testDevice runs. The fake driver's C kernels
// compute the same.
const testSrc = `#define N 1000

extern "C" __global__ void __launch_bounds__(256) vadd(float* p0, const float* p1, const float* p2) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) p0[i] = p1[i] + p2[i];
}

// One sum per block of 256, a tree in shared memory.
extern "C" __global__ void __launch_bounds__(256) block_sum(float* p0, const float* p1) {
    __shared__ float s[256];
    unsigned t = threadIdx.x, i = blockIdx.x * 256 + t;
    s[t] = i < N ? p1[i] : 0.0f;
    __syncthreads();
    for (unsigned w = 128; w > 0; w >>= 1) {
        if (t < w) s[t] += s[t + w];
        __syncthreads();
    }
    if (t == 0) p0[blockIdx.x] = s[0];
}

// One sum per warp, by shuffles.
extern "C" __global__ void __launch_bounds__(128) warp_sum(float* p0, const float* p1) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < N ? p1[i] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) p0[i / 32] = v;
}

// Each thread writes its block and thread coordinates: all three grid
// dimensions must arrive.
extern "C" __global__ void __launch_bounds__(64) grid3(float* p0) {
    unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    p0[b * blockDim.x * blockDim.y * blockDim.z + t] =
        1000.0f * (blockIdx.x + 8 * blockIdx.y + 64 * blockIdx.z) + threadIdx.x + 4 * threadIdx.y + 16 * threadIdx.z;
}
`

// faultSrc writes to an address no allocation has.
const faultSrc = `extern "C" __global__ void fault(float* p0) { *(volatile float*)16 = p0[0]; }
`

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesf32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

type notCUDA struct{}

func (notCUDA) Len() int64 { return 1 << 20 }

// testDevice runs the module above on a device from New(opts...), with a
// fresh cache, and checks results, errors, caching, profiling and Close.
func testDevice(t *testing.T, opts ...Option) {
	dir := t.TempDir()
	opts = append(opts, WithCacheDir(dir))
	d, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("%s, %d SMs", d.Name(), d.Multiprocessors())
	if d.Target() != "cuda" || !strings.HasPrefix(d.Name(), "cuda: ") || !strings.HasSuffix(d.Name(), " ("+d.Arch()+")") || !strings.HasPrefix(d.Arch(), "sm_") {
		t.Errorf("Name %q, Arch %q, Target %q", d.Name(), d.Arch(), d.Target())
	}
	runs := nvccRuns.Load()
	lib, err := d.Compile(testSrc)
	if err != nil {
		t.Fatal(err)
	}
	if n := nvccRuns.Load() - runs; n != 1 {
		t.Errorf("a first compile ran nvcc %d times", n)
	}
	kernel := func(name string, maxThreads int) device.Kernel {
		t.Helper()
		k, err := lib.Kernel(name)
		if err != nil {
			t.Fatal(err)
		}
		if k.Name() != name || k.MaxThreads() != maxThreads {
			t.Errorf("kernel %s: Name %q, MaxThreads %d, want %d", name, k.Name(), k.MaxThreads(), maxThreads)
		}
		return k
	}
	vadd, blockSum, warpSum, grid3 := kernel("vadd", 256), kernel("block_sum", 256), kernel("warp_sum", 128), kernel("grid3", 64)
	alloc := func(n int64) device.Buffer {
		t.Helper()
		b, err := d.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	read := func(b device.Buffer) []float32 {
		t.Helper()
		out := make([]byte, b.Len())
		if err := d.Read(b, 0, out); err != nil {
			t.Fatal(err)
		}
		return bytesf32(out)
	}
	dispatch := func(k device.Kernel, groups, threads [3]int, args ...device.Arg) {
		t.Helper()
		if err := d.Dispatch(k, groups, threads, args); err != nil {
			t.Fatal(err)
		}
	}

	x, y := make([]float32, testN), make([]float32, testN)
	for i := range x {
		x[i], y[i] = float32(i%7), float32(3*i)
	}
	// x and y share a buffer, at offsets; the sum lands at an offset of another.
	const xOff, yOff, oOff = 256, 256 + 4*testN + 64, 512
	in := alloc(16 << 10)
	if err := d.Write(in, xOff, f32bytes(x)); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(in, yOff, f32bytes(y)); err != nil {
		t.Fatal(err)
	}

	t.Run("vadd", func(t *testing.T) {
		out := alloc(8 << 10)
		dispatch(vadd, [3]int{4, 1, 1}, [3]int{256, 1, 1}, device.BufferArg(out, oOff), device.BufferArg(in, xOff), device.BufferArg(in, yOff))
		for i, v := range read(out) {
			want := float32(0) // buffers start zeroed; nothing outside the sum is touched
			if j := i - oOff/4; j >= 0 && j < testN {
				want = x[j] + y[j]
			}
			if v != want {
				t.Fatalf("out[%d] = %v, want %v", i, v, want)
			}
		}
	})
	t.Run("reductions", func(t *testing.T) {
		blocks, warps := alloc(4*4+64), alloc(32*4)
		dispatch(blockSum, [3]int{4, 1, 1}, [3]int{256, 1, 1}, device.BufferArg(blocks, 64), device.BufferArg(in, xOff))
		dispatch(warpSum, [3]int{8, 1, 1}, [3]int{128, 1, 1}, device.BufferArg(warps, 0), device.BufferArg(in, xOff))
		sum := func(lo, hi int) (s float32) {
			for i := lo; i < min(hi, testN); i++ {
				s += x[i]
			}
			return s
		}
		for b, v := range read(blocks)[16:] {
			if want := sum(256*b, 256*b+256); v != want {
				t.Errorf("block sum %d = %v, want %v", b, v, want)
			}
		}
		for w, v := range read(warps) {
			if want := sum(32*w, 32*w+32); v != want {
				t.Errorf("warp sum %d = %v, want %v", w, v, want)
			}
		}
	})
	t.Run("grid3", func(t *testing.T) {
		g, th := [3]int{3, 2, 2}, [3]int{4, 2, 2}
		out := alloc(12 * 16 * 4)
		dispatch(grid3, g, th, device.BufferArg(out, 0))
		dispatch(grid3, [3]int{0, 1, 1}, th, device.BufferArg(in, 0)) // an empty grid runs nothing
		got := read(out)
		i := 0
		for bz := range g[2] {
			for by := range g[1] {
				for bx := range g[0] {
					for tz := range th[2] {
						for ty := range th[1] {
							for tx := range th[0] {
								if want := float32(1000*(bx+8*by+64*bz) + tx + 4*ty + 16*tz); got[i] != want {
									t.Fatalf("grid3[%d] = %v, want %v", i, got[i], want)
								}
								i++
							}
						}
					}
				}
			}
		}
		if v := read(in)[0]; v != 0 {
			t.Errorf("the empty grid wrote %v", v)
		}
	})
	t.Run("threads", func(t *testing.T) {
		// Goroutines locked to their own OS threads: each call must make
		// the context current on whichever thread it runs.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for g := range errs {
			wg.Go(func() {
				goruntime.LockOSThread()
				defer goruntime.UnlockOSThread()
				errs[g] = func() error {
					out, err := d.Alloc(4 * testN)
					if err != nil {
						return err
					}
					if err := d.Dispatch(vadd, [3]int{4, 1, 1}, [3]int{256, 1, 1}, []device.Arg{device.BufferArg(out, 0), device.BufferArg(in, xOff), device.BufferArg(in, yOff)}); err != nil {
						return err
					}
					b := make([]byte, 4*testN)
					if err := d.Read(out, 0, b); err != nil {
						return err
					}
					if v := bytesf32(b)[testN-1]; v != x[testN-1]+y[testN-1] {
						return fmt.Errorf("out[%d] = %v", testN-1, v)
					}
					return nil
				}()
			})
		}
		wg.Wait()
		for g, err := range errs {
			if err != nil {
				t.Errorf("goroutine %d: %v", g, err)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		small := alloc(64)
		for _, c := range []struct {
			err  error
			want string
		}{
			{d.Dispatch(vadd, [3]int{1, 1, 1}, [3]int{32, 1, 1}, []device.Arg{device.BufferArg(small, 0)}), "vadd takes 3 arguments, the dispatch has 1"},
			{d.Dispatch(grid3, [3]int{1, 1, 1}, [3]int{32, 1, 1}, []device.Arg{device.BytesArg([]byte{1, 2, 3, 4})}), "constant bytes are not supported"},
			{d.Dispatch(grid3, [3]int{1, 1, 1}, [3]int{32, 1, 1}, []device.Arg{device.BufferArg(small, 68)}), "grid3 argument 0: 0 bytes at offset 68 are outside the 64-byte buffer"},
			{d.Dispatch(grid3, [3]int{1, 1, 1}, [3]int{32, 1, 1}, []device.Arg{device.BufferArg(notCUDA{}, 0)}), "is not a CUDA buffer"},
			{d.Dispatch(grid3, [3]int{1, 1, 1}, [3]int{128, 1, 1}, []device.Arg{device.BufferArg(small, 0)}), "the kernel allows 64"},
			{d.Dispatch(grid3, [3]int{1, 1, 1}, [3]int{0, 1, 1}, []device.Arg{device.BufferArg(small, 0)}), "cannot launch"},
			{d.Write(small, 60, make([]byte, 8)), "Write: 8 bytes at offset 60 are outside the 64-byte buffer"},
			{d.Read(small, -4, make([]byte, 4)), "Read: 4 bytes at offset -4 are outside"},
			{func() error { _, err := lib.Kernel("nope"); return err }(), `no kernel "nope" in the module`},
			{func() error { _, err := d.Alloc(-1); return err }(), "negative size"},
		} {
			if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", c.err, c.want)
			}
		}
		if err := d.Sync(); err != nil {
			t.Errorf("refused dispatches left an error behind: %v", err)
		}
	})
	t.Run("compile error", func(t *testing.T) {
		_, err := d.Compile("extern \"C\" __global__ void k(float* p0) {\n    unsigned i = threadIdx.x;\n    p0[i] = undefined_thing;\n}\n")
		var ce *device.CompileError
		if !errors.As(err, &ce) {
			t.Fatalf("Compile of a broken module: %v, want a *CompileError", err)
		}
		if len(ce.Diagnostics) == 0 || ce.Diagnostics[0].Line != 3 || !strings.Contains(err.Error(), "kernels.cu:3: ") ||
			!strings.Contains(err.Error(), "3 |     p0[i] = undefined_thing;") {
			t.Errorf("compile error does not point at line 3:\n%v", err)
		}
	})
	t.Run("cache", func(t *testing.T) {
		runs := nvccRuns.Load()
		again, err := d.Compile(testSrc)
		if err != nil || again != lib {
			t.Errorf("second Compile: %v, %p, want the first library %p", err, again, lib)
		}
		cubins, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
		if len(cubins) != 1 {
			t.Errorf("cache holds %v, want one cubin", cubins)
		}
		d2, err := New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer d2.Close()
		if _, err := d2.Compile(testSrc); err != nil {
			t.Fatal(err)
		}
		if n := nvccRuns.Load() - runs; n != 0 {
			t.Errorf("compiling a cached module ran nvcc %d times", n)
		}
	})
	t.Run("profile", func(t *testing.T) {
		out := alloc(8 << 10)
		vaddArgs := []device.Arg{device.BufferArg(out, 0), device.BufferArg(in, xOff), device.BufferArg(in, yOff)}
		d.EnableProfile(true)
		for range 3 {
			dispatch(vadd, [3]int{4, 1, 1}, [3]int{256, 1, 1}, vaddArgs...)
		}
		dispatch(blockSum, [3]int{4, 1, 1}, [3]int{256, 1, 1}, device.BufferArg(out, 0), device.BufferArg(in, xOff))
		p := d.Profile()
		d.EnableProfile(false)
		dispatch(vadd, [3]int{4, 1, 1}, [3]int{256, 1, 1}, vaddArgs...)
		t.Logf("profile: %+v", p)
		calls := map[string]int{}
		for _, k := range p {
			calls[k.Name] = k.Calls
			if k.Total <= 0 {
				t.Errorf("%s took %v", k.Name, k.Total)
			}
		}
		if !reflect.DeepEqual(calls, map[string]int{"vadd": 3, "block_sum": 1}) {
			t.Errorf("profiled calls %v", calls)
		}
		if !sort.SliceIsSorted(p, func(i, j int) bool { return p[i].Total > p[j].Total }) {
			t.Errorf("profile not sorted by time: %+v", p)
		}
		if again := d.Profile(); !reflect.DeepEqual(again, p) {
			t.Errorf("a dispatch with profiling off changed the profile: %+v", again)
		}
	})

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		d.Dispatch(vadd, [3]int{4, 1, 1}, [3]int{256, 1, 1}, []device.Arg{device.BufferArg(in, 0), device.BufferArg(in, 0), device.BufferArg(in, 0)}),
		d.Read(in, 0, make([]byte, 4)),
		d.Write(in, 0, make([]byte, 4)),
		d.Sync(),
		func() error { _, err := d.Compile(testSrc); return err }(),
		func() error { _, err := d.Alloc(4); return err }(),
		func() error { _, err := lib.Kernel("vadd"); return err }(),
	} {
		if !errors.Is(err, errClosed) {
			t.Errorf("after Close: %v, want %v", err, errClosed)
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// faultMessage runs a kernel that faults and returns the error that reports
// it: from Dispatch under MAGC_CUDA_SYNC=1, else from the next call (a
// Write, which may not see the fault yet), else from Sync.
func faultMessage(t *testing.T, opts ...Option) string {
	d, err := New(append(opts, WithCacheDir(t.TempDir()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lib, err := d.Compile(faultSrc)
	if err != nil {
		t.Fatal(err)
	}
	k, err := lib.Kernel("fault")
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Alloc(4)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Dispatch(k, [3]int{1, 1, 1}, [3]int{1, 1, 1}, []device.Arg{device.BufferArg(b, 0)})
	if err == nil {
		err = d.Write(b, 0, make([]byte, 4))
	}
	if err == nil {
		err = d.Sync()
	}
	return fmt.Sprint(err)
}

// Fault messages, with and without MAGC_CUDA_SYNC=1.
const (
	wantFaultAsync = "cuda: one of the 1 dispatches since the last sync failed (the last was fault): CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered; rerun with MAGC_CUDA_SYNC=1 to name it"
	wantFaultSync  = "cuda: kernel fault failed: CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered"
)
