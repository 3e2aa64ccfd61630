package kcheck

import "github.com/scm-magellano/magc/device"

func cudaAvailable() (device.Device, bool) { return nil, false }
