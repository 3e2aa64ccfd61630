package main

import (
	"fmt"

	"github.com/scm-magellano/magc/device"
)

// openCUDA starts the CUDA device.
func openCUDA() (device.Device, error) {
	return nil, fmt.Errorf("the CUDA device is not built yet")
}
