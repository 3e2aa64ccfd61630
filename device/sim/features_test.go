package sim_test

import (
	"strings"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
)

var weights = [4]float32{0.5, 1, 2, 4}

func TestAtomics(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const n = 4096
		x := make([]uint32, n)
		for i := range x {
			x[i] = uint32(i*i) % 1000
		}
		bins, total := alloc(t, d, make([]byte, 64)), alloc(t, d, make([]byte, 4))
		k := kernel(t, d, "features.metal", "histogram")
		dispatch(t, d, k, [3]int{n / 64, 1, 1}, [3]int{64, 1, 1}, device.BufferArg(bins, 0),
			device.BufferArg(alloc(t, d, u32bytes(x)), 0), device.BufferArg(total, 0))
		var want [16]uint32
		var sum float32
		for i, v := range x {
			want[v%16]++
			sum += weights[i%4] // every partial sum is exact
		}
		if got := [16]uint32(bytesU32(read(t, d, bins))); got != want {
			t.Errorf("bins = %v, want %v", got, want)
		}
		if got := bytesF32(read(t, d, total))[0]; got != sum {
			t.Errorf("total = %v, want %v", got, sum)
		}

		const nt = 128
		out := alloc(t, d, make([]byte, 8*n/nt))
		k = kernel(t, d, "features.metal", "tg_atomics")
		dispatch(t, d, k, [3]int{n / nt, 1, 1}, [3]int{nt, 1, 1}, device.BufferArg(out, 0), device.BufferArg(alloc(t, d, u32bytes(x)), 0))
		got := bytesU32(read(t, d, out))
		for g := 0; g < n/nt; g++ {
			var count, biggest uint32
			for _, v := range x[g*nt : (g+1)*nt] {
				if v%3 == 0 {
					count++
				}
				biggest = max(biggest, v)
			}
			if got[2*g] != count || got[2*g+1] != biggest {
				t.Fatalf("group %d: count, max = %d, %d; want %d, %d", g, got[2*g], got[2*g+1], count, biggest)
			}
		}
	})
}

// TestBarrierAfterReturn: a barrier reached after some threads of the
// threadgroup returned fails the dispatch, naming the kernel and the
// threadgroup; with every thread present the kernel runs.
func TestBarrierAfterReturn(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		const nt = 256
		k := kernel(t, d, "features.metal", "early_exit")
		run := func(n int) (device.Buffer, error) {
			out := alloc(t, d, make([]byte, 4*3*nt))
			err := d.Dispatch(k, [3]int{3, 1, 1}, [3]int{nt, 1, 1}, []device.Arg{device.BufferArg(out, 0), device.BytesArg(u32bytes([]uint32{uint32(n)}))})
			return out, err
		}
		out, err := run(3 * nt)
		if err != nil {
			t.Fatal(err)
		}
		got := bytesF32(read(t, d, out))
		for i := 0; i < 3*nt; i++ {
			g := i / nt
			var want float32
			for j := g * nt; j < (g+1)*nt; j++ {
				want += float32(j)
			}
			if got[i] != want {
				t.Fatalf("out[%d] = %v, want %v", i, got[i], want)
			}
		}
		_, err = run(600) // the last threadgroup has 88 live threads
		if err == nil || !strings.Contains(err.Error(), "kernel early_exit, threadgroup (2,0,0): a threadgroup_barrier is reached after") {
			t.Errorf("got %v, want a barrier-after-return error", err)
		}
	})
}

func TestNamespacedKernelAndConstants(t *testing.T) {
	forEachCompiler(t, func(t *testing.T, d *sim.Device) {
		out := alloc(t, d, make([]byte, 4*10))
		k := kernel(t, d, "features.metal", "fill")
		dispatch(t, d, k, [3]int{1, 1, 1}, [3]int{10, 1, 1}, device.BufferArg(out, 0))
		for i, v := range bytesF32(read(t, d, out)) {
			if want := weights[i%4] + float32(i); v != want {
				t.Errorf("out[%d] = %v, want %v", i, v, want)
			}
		}
	})
}

func TestBuffers(t *testing.T) {
	d := sim.New()
	b, err := d.Alloc(10)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(b, 8, []byte{1, 2, 3}); err == nil {
		t.Error("Write past the end succeeded")
	}
	if err := d.Read(b, -1, make([]byte, 1)); err == nil {
		t.Error("Read at a negative offset succeeded")
	}
	if err := d.Write(b, 7, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if err := d.Read(b, 0, got); err != nil || got[7] != 1 || got[9] != 3 || got[0] != 0 {
		t.Errorf("Read = %v, %v", got, err)
	}
	other := sim.New()
	if err := other.Write(b, 0, []byte{1}); err == nil {
		t.Error("a buffer of another device was accepted")
	}
	if _, err := d.Alloc(-1); err == nil {
		t.Error("Alloc(-1) succeeded")
	}
	if d.Name() != "sim" || d.Sync() != nil {
		t.Error("Name or Sync")
	}
	d.Close()
	if err := d.Write(b, 0, []byte{1}); err == nil {
		t.Error("Write after Close succeeded")
	}
	if _, err := d.Compile("kernel void k() {}"); err == nil {
		t.Error("Compile after Close succeeded")
	}
}
