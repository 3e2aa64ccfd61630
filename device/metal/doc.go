// Package metal is the Metal device: the small cgo runtime that runs magc's
// kernels on an Apple GPU. It implements device.Device with one
// MTLBuffer per arena segment (shared storage), libraries compiled from
// source once and cached by content hash, compute pipeline states, and one
// command buffer per Sync with a compute encoder, each inside an autorelease
// pool on a locked OS thread.
//
// Everything above the Device interface is shared with the sim device and
// tested on Linux; this package builds only on macOS with cgo. Elsewhere New
// returns an error that says so.
package metal

import (
	"sync"

	"github.com/scm-magellano/magc/device"
)

// Available opens the Metal device once per process when this machine has
// one, so tests can run the kernel-versus-reference checks on it as well as
// on the sim; elsewhere it reports false.
func Available() (device.Device, bool) {
	once.Do(func() { shared, sharedErr = New() })
	return shared, sharedErr == nil
}

var (
	once      sync.Once
	shared    device.Device
	sharedErr error
)
