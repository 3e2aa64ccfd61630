//go:build cgo

package sim

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include "shim/magc_sim_launch.h"

// dlerror's text is per OS thread: read it in the same C call.
static void* sim_dlopen(const char* path, char* err, size_t n) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char* e = dlerror();
		strncpy(err, e ? e : "dlopen failed", n - 1);
		err[n - 1] = 0;
	}
	return h;
}

static void* sim_dlsym(void* h, const char* name) { return dlsym(h, name); }

static int sim_run(void* fn, magc_launch* L) { return ((int (*)(magc_launch*))fn)(L); }
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// loadedLib is a dlopen'ed kernel library. Libraries stay loaded for the
// life of the process: they are shared by every Device through the build
// cache, and a dlclose could pull code from under a running dispatch.
type loadedLib struct {
	path   string
	handle unsafe.Pointer
	mu     sync.Mutex
	syms   map[string]unsafe.Pointer
}

func dlopen(path string) (*loadedLib, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var errbuf [512]C.char
	h := C.sim_dlopen(cpath, &errbuf[0], C.size_t(len(errbuf)))
	if h == nil {
		return nil, fmt.Errorf("sim: loading %s: %s", path, C.GoString(&errbuf[0]))
	}
	return &loadedLib{path: path, handle: h, syms: map[string]unsafe.Pointer{}}, nil
}

func (l *loadedLib) sym(name string) unsafe.Pointer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.syms[name]; ok {
		return p
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	p := C.sim_dlsym(l.handle, cname)
	l.syms[name] = p
	return p
}

// paramInfo is magc_param_info.
type paramInfo struct {
	size, align int64
	kind, index int32
}

const (
	paramAttr    = C.MAGC_PARAM_ATTR
	paramPointer = C.MAGC_PARAM_POINTER
	paramRef     = C.MAGC_PARAM_REF
	paramValue   = C.MAGC_PARAM_VALUE
	maxArgs      = C.MAGC_SIM_MAX_ARGS
)

func readParamInfo(p unsafe.Pointer, n int) []paramInfo {
	infos := unsafe.Slice((*C.magc_param_info)(p), n)
	out := make([]paramInfo, n)
	for i, in := range infos {
		out[i] = paramInfo{int64(in.size), int64(in.align), int32(in.kind), int32(in.index)}
	}
	return out
}

// cAlloc returns zeroed C memory of n bytes aligned to 64, and the pointer
// to free.
const haveCgo = true

func cAlloc(n int64) (ptr, base unsafe.Pointer) {
	base = C.calloc(1, C.size_t(n+64))
	if base == nil {
		return nil, nil
	}
	ptr = unsafe.Pointer((uintptr(base) + 63) &^ 63)
	return ptr, base
}

func cFree(base unsafe.Pointer) { C.free(base) }

// launch runs one dispatch: every worker goroutine calls the kernel's entry
// point, and the entry points share out the threadgroups.
type launch struct {
	c *C.magc_launch
}

func newLaunch(groups, threads [3]int) *launch {
	c := (*C.magc_launch)(C.calloc(1, C.size_t(unsafe.Sizeof(C.magc_launch{}))))
	if c == nil {
		return nil
	}
	total := uint64(1)
	for i := 0; i < 3; i++ {
		c.groups[i] = C.uint32_t(groups[i])
		c.threads[i] = C.uint32_t(threads[i])
		total *= uint64(groups[i])
	}
	c.total = C.uint64_t(total)
	return &launch{c: c}
}

func (l *launch) setArg(i int, p unsafe.Pointer) { l.c.args[i] = p }

func (l *launch) run(fn unsafe.Pointer, workers int) error {
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			C.sim_run(fn, l.c)
		}()
	}
	C.sim_run(fn, l.c) // this goroutine is a worker too
	wg.Wait()
	if l.c.failed != 0 {
		return fmt.Errorf("%s", C.GoString(&l.c.msg[0]))
	}
	return nil
}

func (l *launch) free() { C.free(unsafe.Pointer(l.c)) }
