package sim_test

import (
	"sync"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
)

// Dispatches from several goroutines at once, on one device, with the same
// library and kernels that use threadgroup memory: threadgroups must not see
// each other's threadgroup variables.
func TestConcurrentDispatch(t *testing.T) {
	d := sim.New(sim.WithCompiler(compilers(t)[0]))
	defer d.Close()
	k := kernel(t, d, "reduce.metal", "tg_scan")
	const nt, groups = 256, 8
	x := make([]uint32, nt*groups)
	for i := range x {
		x[i] = uint32(i % 7)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		in, out := alloc(t, d, u32bytes(x)), alloc(t, d, make([]byte, 4*len(x)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < 5; r++ {
				if err := d.Dispatch(k, [3]int{groups, 1, 1}, [3]int{nt, 1, 1}, []device.Arg{device.BufferArg(out, 0), device.BufferArg(in, 0)}); err != nil {
					t.Error(err)
					return
				}
				buf := make([]byte, out.Len())
				if err := d.Read(out, 0, buf); err != nil {
					t.Error(err)
					return
				}
				got := bytesU32(buf)
				for grp := 0; grp < groups; grp++ {
					var s uint32
					for i := 0; i < nt; i++ {
						s += x[grp*nt+i]
						if got[grp*nt+i] != s {
							t.Errorf("group %d: scan[%d] = %d, want %d", grp, i, got[grp*nt+i], s)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
}
