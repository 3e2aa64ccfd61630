// Package device is the seam between everything magc shares (plan
// execution, training, checkpoints) and the back ends that run kernels: the
// sim (device/sim, the emitted MSL compiled for the CPU), Metal
// (device/metal, darwin only) and CUDA (device/cuda, NVIDIA GPUs). It
// imports nothing of magc.
package device

import "time"

// Device runs compiled kernels over buffers of device memory.
type Device interface {
	// Name identifies the device in messages and reports ("sim", "metal: Apple M4").
	Name() string
	// Target is the kernel language Compile takes: "msl" or "cuda".
	Target() string
	// Alloc returns a zeroed buffer of the given size; the arena segments are buffers.
	Alloc(bytes int64) (Buffer, error)
	// Compile builds a library from source in the Target language. Implementations cache by content
	// hash, so compiling the same source twice is cheap. Errors carry the
	// compiler's diagnostics mapped back to lines of src.
	Compile(src string) (Library, error)
	// Dispatch runs a kernel over groups threadgroups of threads threads each.
	// Kernels bounds-check themselves: the grid may overhang the data.
	Dispatch(k Kernel, groups, threads [3]int, args []Arg) error
	// Write and Read copy between host memory and a buffer at a byte offset.
	Write(b Buffer, offset int64, src []byte) error
	Read(b Buffer, offset int64, dst []byte) error
	// Sync waits until every dispatch issued so far has finished.
	Sync() error
	// Close releases all buffers and libraries.
	Close() error
}

// Buffer is device memory owned by a Device.
type Buffer interface {
	Len() int64
}

// Library is compiled kernel source.
type Library interface {
	// Kernel looks up a kernel function by name.
	Kernel(name string) (Kernel, error)
}

// Kernel is a compiled kernel function, ready to dispatch (a pipeline state in Metal).
type Kernel interface {
	Name() string
	// MaxThreads is the most threads per threadgroup the kernel can be launched with.
	MaxThreads() int
}

// Arg binds one [[buffer(i)]] argument of a kernel, in index order: either a
// buffer at a byte offset, or small constant bytes (Metal's setBytes).
type Arg struct {
	Buffer Buffer
	Offset int64
	Bytes  []byte
}

// BufferArg binds buf at offset.
func BufferArg(buf Buffer, offset int64) Arg { return Arg{Buffer: buf, Offset: offset} }

// BytesArg binds constant data.
func BytesArg(b []byte) Arg { return Arg{Bytes: b} }

// Limiter is a device with memory limits (Metal's recommendedMaxWorkingSetSize
// and maxBufferLength).
type Limiter interface {
	Limits() (workingSet, maxBuffer int64)
}

// Profiler is a device that can time each dispatch (CUDA, with events).
type Profiler interface {
	// EnableProfile turns timing on (and clears what was gathered) or off.
	EnableProfile(on bool)
	// Profile is the time spent in each kernel since timing was turned on,
	// longest first.
	Profile() []KernelTime
}

// KernelTime is the device time of one kernel's dispatches.
type KernelTime struct {
	Name  string
	Calls int
	Total time.Duration
}
