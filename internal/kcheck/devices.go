package kcheck

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/metal"
	"github.com/scm-magellano/magc/device/sim"
)

var (
	devOnce sync.Once
	devs    []device.Device
	devErr  error
)

// Devices are where kernel checks run: the sim, and every GPU present (Metal
// on a Mac, CUDA where a driver is found). MAGC_DEVICES (say "cuda", or
// "sim,cuda") names the devices to use instead; one named but absent is an
// error, so a GPU run cannot pass by checking nothing.
func Devices() ([]device.Device, error) {
	devOnce.Do(func() {
		want := strings.Split(os.Getenv("MAGC_DEVICES"), ",")
		if want[0] == "" {
			want = nil
		}
		use := func(name string) bool { return want == nil || slices.Contains(want, name) }
		if use("sim") {
			devs = append(devs, sim.New())
		}
		for _, d := range []struct {
			name string
			open func() (device.Device, bool)
		}{
			{"metal", func() (device.Device, bool) { d, ok := metal.Available(); return d, ok }},
			{"cuda", cudaAvailable},
		} {
			if !use(d.name) {
				continue
			}
			if dev, ok := d.open(); ok {
				devs = append(devs, dev)
			} else if want != nil {
				devErr = fmt.Errorf("MAGC_DEVICES names %s, which is not available here", d.name)
			}
		}
	})
	return devs, devErr
}
