// Package metal is the Metal device: the small cgo runtime that runs magc's
// kernels on an Apple GPU. It implements device.Device with one
// MTLBuffer per arena segment (shared storage), libraries compiled from
// source once (MSL 3.1, safe math) and cached by content hash, and compute
// pipeline states. Dispatches go into command buffers of one queue, one
// compute encoder each, committed every MAGC_METAL_BATCH dispatches
// (default 32) so that no command buffer runs long enough for macOS to
// abort it; Sync waits for them. Each dispatch sits in a debug group
// naming it, and a fault reports the command buffer's range of dispatches
// and the encoder that faulted; MAGC_METAL_SYNC=1 waits after every
// dispatch, so a fault names exactly one. Each Objective-C entry point has
// its own autorelease pool, and every Go method holds the device's mutex,
// so any goroutine on any OS thread may call it.
//
// Everything above the Device interface is shared with the sim device and
// tested on Linux; this package builds only on macOS with cgo. Elsewhere New
// returns an error that says so. On Linux its darwin files are only
// type-checked (TestDarwinFilesTypeCheck), with cgo faked.
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
