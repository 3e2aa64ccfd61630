package main

import (
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/cuda"
)

// openCUDA starts the CUDA device (an error saying so where no driver is found).
func openCUDA() (device.Device, error) { return cuda.New() }
