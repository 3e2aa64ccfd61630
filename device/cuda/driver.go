package cuda

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// result is a CUresult; 0 is CUDA_SUCCESS.
type result int32

// Driver API enums used here (cuda.h).
const (
	attrMultiprocessors    = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrCCMajor            = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrCCMinor            = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	funcMaxThreadsPerBlock = 0  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
	errNotFound            = 500
)

// driver is libcuda's entry points, bound at run time. Handles (contexts,
// modules, functions, events) are opaque C pointers kept as uintptr;
// device memory is a CUdeviceptr (uint64); size_t is uintptr.
type driver struct {
	cuInit                    func(flags uint32) result
	cuDeviceGet               func(dev *int32, ordinal int32) result
	cuDeviceGetName           func(name *byte, n int32, dev int32) result
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) result
	cuDeviceTotalMem          func(bytes *uintptr, dev int32) result
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) result
	cuDevicePrimaryCtxRelease func(dev int32) result
	cuCtxSetCurrent           func(ctx uintptr) result
	cuCtxSynchronize          func() result
	cuMemAlloc                func(p *uint64, n uintptr) result
	cuMemFree                 func(p uint64) result
	cuMemsetD8                func(p uint64, v uint8, n uintptr) result
	cuMemcpyHtoD              func(dst uint64, src unsafe.Pointer, n uintptr) result
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, n uintptr) result
	cuModuleLoadData          func(m *uintptr, image unsafe.Pointer) result
	cuModuleUnload            func(m uintptr) result
	cuModuleGetFunction       func(f *uintptr, m uintptr, name string) result
	cuFuncGetAttribute        func(v *int32, attr int32, f uintptr) result
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params, extra unsafe.Pointer) result
	cuEventCreate             func(e *uintptr, flags uint32) result
	cuEventRecord             func(e, stream uintptr) result
	cuEventElapsedTime        func(ms *float32, start, end uintptr) result
	cuEventDestroy            func(e uintptr) result
	cuGetErrorName            func(r result, s **byte) result
	cuGetErrorString          func(r result, s **byte) result
}

// libName is the driver library New opens; tests point it elsewhere to
// take the no-driver path on a machine that has one.
var libName = "libcuda.so.1"

var (
	driversMu sync.Mutex
	drivers   = map[string]*driver{} // by library name: bind once per process
)

// loadDriver opens lib, binds every entry point and calls cuInit.
func loadDriver(lib string) (*driver, error) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d, ok := drivers[lib]; ok {
		return d, nil
	}
	h, err := dlopen(lib)
	if err != nil {
		return nil, fmt.Errorf("no CUDA driver found: %s: %s", lib, strings.TrimPrefix(err.Error(), lib+": "))
	}
	d := &driver{}
	for _, s := range []struct {
		name string
		fn   any
	}{
		{"cuInit", &d.cuInit},
		{"cuDeviceGet", &d.cuDeviceGet},
		{"cuDeviceGetName", &d.cuDeviceGetName},
		{"cuDeviceGetAttribute", &d.cuDeviceGetAttribute},
		{"cuDeviceTotalMem_v2", &d.cuDeviceTotalMem},
		{"cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease},
		{"cuCtxSetCurrent", &d.cuCtxSetCurrent},
		{"cuCtxSynchronize", &d.cuCtxSynchronize},
		{"cuMemAlloc_v2", &d.cuMemAlloc},
		{"cuMemFree_v2", &d.cuMemFree},
		{"cuMemsetD8_v2", &d.cuMemsetD8},
		{"cuMemcpyHtoD_v2", &d.cuMemcpyHtoD},
		{"cuMemcpyDtoH_v2", &d.cuMemcpyDtoH},
		{"cuModuleLoadData", &d.cuModuleLoadData},
		{"cuModuleUnload", &d.cuModuleUnload},
		{"cuModuleGetFunction", &d.cuModuleGetFunction},
		{"cuFuncGetAttribute", &d.cuFuncGetAttribute},
		{"cuLaunchKernel", &d.cuLaunchKernel},
		{"cuEventCreate", &d.cuEventCreate},
		{"cuEventRecord", &d.cuEventRecord},
		{"cuEventElapsedTime", &d.cuEventElapsedTime},
		{"cuEventDestroy_v2", &d.cuEventDestroy},
		{"cuGetErrorName", &d.cuGetErrorName},
		{"cuGetErrorString", &d.cuGetErrorString},
	} {
		if err := bind(h, s.name, s.fn); err != nil {
			return nil, fmt.Errorf("cuda: %s has no %s (a CUDA 11 or newer driver is needed): %v", lib, s.name, err)
		}
	}
	if err := d.check("cuInit", d.cuInit(0)); err != nil {
		return nil, err
	}
	drivers[lib] = d
	return d, nil
}

// check turns a CUresult into an error naming the call, as
// "cuda: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY: out of memory".
func (d *driver) check(call string, r result) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %s", call, d.describe(r))
}

func (d *driver) describe(r result) string {
	var name, msg *byte
	if d.cuGetErrorName(r, &name) != 0 || name == nil {
		return fmt.Sprintf("CUresult %d", r)
	}
	s := cString(name)
	if d.cuGetErrorString(r, &msg) == 0 && msg != nil {
		s += ": " + cString(msg)
	}
	return s
}

// cString copies a NUL-terminated string out of C memory.
func cString(p *byte) string {
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
