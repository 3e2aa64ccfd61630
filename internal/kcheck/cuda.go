package kcheck

import (
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/cuda"
)

func cudaAvailable() (device.Device, bool) {
	d, ok := cuda.Available()
	return d, ok
}
