//go:build !cgo

package sim

import "unsafe"

// Without cgo there is no dlopen: the sim device builds (so magc builds
// everywhere) but refuses to compile kernels or allocate memory.

const haveCgo = false

type loadedLib struct{ path string }

func dlopen(string) (*loadedLib, error)             { return nil, errNoCgo }
func (*loadedLib) sym(string) unsafe.Pointer        { return nil }
func readParamInfo(unsafe.Pointer, int) []paramInfo { return nil }
func cAlloc(int64) (ptr, base unsafe.Pointer)       { return nil, nil }
func cFree(unsafe.Pointer)                          {}

type paramInfo struct {
	size, align int64
	kind, index int32
}

// The values of magc_sim_launch.h.
const (
	paramAttr    = 0
	paramPointer = 1
	paramRef     = 2
	paramValue   = 3
	maxArgs      = 31
)

type launch struct{}

func newLaunch(groups, threads [3]int) *launch { return nil }
func (*launch) setArg(int, unsafe.Pointer)     {}
func (*launch) run(unsafe.Pointer, int) error  { return errNoCgo }
func (*launch) free()                          {}
