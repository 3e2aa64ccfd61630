//go:build darwin && cgo

package metal

/*
#cgo CFLAGS: -x objective-c -fno-objc-arc
#cgo LDFLAGS: -framework Metal -framework Foundation
// The Objective-C half of the Metal device, compiled with manual reference
// counting: every object magc keeps is retained here and released through
// magc_release; each command buffer lives inside its own autorelease pool.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#include <stdlib.h>
#include <string.h>

static char *copy_error(NSError *e) {
    const char *s = e ? [[e localizedDescription] UTF8String] : "unknown Metal error";
    return strdup(s);
}

void *magc_device(char **name, uint64_t *working_set, uint64_t *max_buffer) {
    id<MTLDevice> d = MTLCreateSystemDefaultDevice();
    if (!d) return NULL;
    *name = strdup([[d name] UTF8String]);
    *working_set = [d recommendedMaxWorkingSetSize];
    *max_buffer = [d maxBufferLength];
    return (void *)d; // the create rule: already retained
}

void *magc_queue(void *device) {
    return (void *)[(id<MTLDevice>)device newCommandQueue];
}

void *magc_buffer(void *device, uint64_t bytes) {
    return (void *)[(id<MTLDevice>)device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
}

void *magc_contents(void *buffer) { return [(id<MTLBuffer>)buffer contents]; }

void *magc_library(void *device, const char *src, char **err) {
    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];
    NSError *e = nil;
    MTLCompileOptions *opts = [[[MTLCompileOptions alloc] init] autorelease];
    opts.fastMathEnabled = NO; // IEEE semantics: NaN and infinity handling must match the sim and the reference
    id<MTLLibrary> lib = [(id<MTLDevice>)device newLibraryWithSource:[NSString stringWithUTF8String:src] options:opts error:&e];
    if (!lib) *err = copy_error(e);
    [pool drain];
    return (void *)lib;
}

void *magc_pipeline(void *device, void *library, const char *name, int *max_threads, char **err) {
    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];
    id<MTLFunction> fn = [(id<MTLLibrary>)library newFunctionWithName:[NSString stringWithUTF8String:name]];
    id<MTLComputePipelineState> ps = nil;
    if (!fn) {
        *err = strdup("no kernel of that name in the library");
    } else {
        NSError *e = nil;
        ps = [(id<MTLDevice>)device newComputePipelineStateWithFunction:fn error:&e];
        if (!ps) *err = copy_error(e);
        else *max_threads = (int)[ps maxTotalThreadsPerThreadgroup];
        [fn release];
    }
    [pool drain];
    return (void *)ps;
}

// magc_begin opens an autorelease pool and a command buffer with a compute encoder.
void *magc_begin(void *queue, void **pool) {
    *pool = [[NSAutoreleasePool alloc] init];
    id<MTLCommandBuffer> cb = [(id<MTLCommandQueue>)queue commandBuffer];
    return (void *)[cb computeCommandEncoder];
}

void magc_dispatch(void *encoder, void *pipeline, void **buffers, uint64_t *offsets, int n,
                   uint32_t gx, uint32_t gy, uint32_t gz, uint32_t tx, uint32_t ty, uint32_t tz) {
    id<MTLComputeCommandEncoder> enc = (id<MTLComputeCommandEncoder>)encoder;
    [enc setComputePipelineState:(id<MTLComputePipelineState>)pipeline];
    for (int i = 0; i < n; i++) {
        [enc setBuffer:(id<MTLBuffer>)buffers[i] offset:offsets[i] atIndex:i];
    }
    [enc dispatchThreadgroups:MTLSizeMake(gx, gy, gz) threadsPerThreadgroup:MTLSizeMake(tx, ty, tz)];
}

// magc_end commits the encoder's command buffer, waits, and drains the pool.
int magc_end(void *encoder, void *pool, char **err) {
    id<MTLComputeCommandEncoder> enc = (id<MTLComputeCommandEncoder>)encoder;
    id<MTLCommandBuffer> cb = [enc commandBuffer];
    [enc endEncoding];
    [cb commit];
    [cb waitUntilCompleted];
    int ok = [cb status] == MTLCommandBufferStatusCompleted;
    if (!ok) *err = copy_error([cb error]);
    [(NSAutoreleasePool *)pool drain];
    return ok;
}

void magc_release(void *object) { [(id)object release]; }
*/
import "C"

import (
	"crypto/sha256"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"unsafe"

	"github.com/scm-magellano/magc/device"
)

// Device is the system's default Metal GPU.
type Device struct {
	mu                    sync.Mutex
	dev, queue            unsafe.Pointer
	name                  string
	workingSet, maxBuffer int64
	libs                  map[[32]byte]*library
	buffers               []*buffer
	enc, pool             unsafe.Pointer // the open command buffer's encoder and autorelease pool
}

type buffer struct {
	ptr unsafe.Pointer
	n   int64
}

func (b *buffer) Len() int64 { return b.n }

type library struct {
	d   *Device
	lib unsafe.Pointer
	ks  map[string]*kernel
}

type kernel struct {
	name       string
	pipeline   unsafe.Pointer
	maxThreads int
}

func (k *kernel) Name() string    { return k.name }
func (k *kernel) MaxThreads() int { return k.maxThreads }

func cerr(p *C.char) error {
	defer C.free(unsafe.Pointer(p))
	return errors.New(C.GoString(p))
}

// New opens the default Metal device.
func New() (device.Device, error) {
	var name *C.char
	var ws, mb C.uint64_t
	dev := C.magc_device(&name, &ws, &mb)
	if dev == nil {
		return nil, errors.New("metal: no Metal device (MTLCreateSystemDefaultDevice returned nil)")
	}
	defer C.free(unsafe.Pointer(name))
	return &Device{dev: dev, queue: C.magc_queue(dev), name: "metal: " + C.GoString(name),
		workingSet: int64(ws), maxBuffer: int64(mb), libs: map[[32]byte]*library{}}, nil
}

func (d *Device) Name() string { return d.name }

func (d *Device) Target() string { return "msl" }

// Limits are recommendedMaxWorkingSetSize and maxBufferLength.
func (d *Device) Limits() (workingSet, maxBuffer int64) { return d.workingSet, d.maxBuffer }

func (d *Device) Alloc(n int64) (device.Buffer, error) {
	if n > d.maxBuffer {
		return nil, fmt.Errorf("metal: a %d-byte buffer exceeds maxBufferLength (%d): lower --max-buffer", n, d.maxBuffer)
	}
	p := C.magc_buffer(d.dev, C.uint64_t(n))
	if p == nil {
		return nil, fmt.Errorf("metal: cannot allocate %d bytes", n)
	}
	b := &buffer{ptr: p, n: n}
	d.buffers = append(d.buffers, b)
	return b, nil
}

func (d *Device) Compile(src string) (device.Library, error) {
	key := sha256.Sum256([]byte(src))
	if l, ok := d.libs[key]; ok {
		return l, nil
	}
	cs := C.CString(src)
	defer C.free(unsafe.Pointer(cs))
	var msg *C.char
	lib := C.magc_library(d.dev, cs, &msg)
	if lib == nil {
		return nil, fmt.Errorf("metal: compiling kernels.metal: %w", cerr(msg))
	}
	l := &library{d: d, lib: lib, ks: map[string]*kernel{}}
	d.libs[key] = l
	return l, nil
}

func (l *library) Kernel(name string) (device.Kernel, error) {
	if k, ok := l.ks[name]; ok {
		return k, nil
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var max C.int
	var msg *C.char
	p := C.magc_pipeline(l.d.dev, l.lib, cn, &max, &msg)
	if p == nil {
		return nil, fmt.Errorf("metal: kernel %s: %w", name, cerr(msg))
	}
	k := &kernel{name: name, pipeline: p, maxThreads: int(max)}
	l.ks[name] = k
	return k, nil
}

// Dispatch encodes a launch into the open command buffer, opening one (and
// its autorelease pool, on a locked OS thread) if needed.
func (d *Device) Dispatch(rk device.Kernel, groups, threads [3]int, args []device.Arg) error {
	k, ok := rk.(*kernel)
	if !ok {
		return fmt.Errorf("metal: %T is not a Metal kernel", rk)
	}
	if threads[0]*threads[1]*threads[2] > k.maxThreads {
		return fmt.Errorf("metal: %s: %v threads per threadgroup, the pipeline allows %d", k.name, threads, k.maxThreads)
	}
	n := len(args)
	bufs := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	offs := C.malloc(C.size_t(n+1) * 8)
	defer C.free(bufs)
	defer C.free(offs)
	bs := unsafe.Slice((*unsafe.Pointer)(bufs), n+1)
	os := unsafe.Slice((*C.uint64_t)(offs), n+1)
	for i, a := range args {
		b, ok := a.Buffer.(*buffer)
		if !ok || a.Bytes != nil {
			return fmt.Errorf("metal: %s argument %d: only buffer arguments are supported", k.name, i)
		}
		bs[i], os[i] = b.ptr, C.uint64_t(a.Offset)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.enc == nil {
		goruntime.LockOSThread() // the autorelease pool belongs to this thread until Sync
		d.enc = C.magc_begin(d.queue, &d.pool)
	}
	C.magc_dispatch(d.enc, k.pipeline, (*unsafe.Pointer)(bufs), (*C.uint64_t)(offs), C.int(n),
		C.uint32_t(groups[0]), C.uint32_t(groups[1]), C.uint32_t(groups[2]),
		C.uint32_t(threads[0]), C.uint32_t(threads[1]), C.uint32_t(threads[2]))
	return nil
}

// Sync commits the open command buffer and waits for it.
func (d *Device) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.enc == nil {
		return nil
	}
	var msg *C.char
	ok := C.magc_end(d.enc, d.pool, &msg)
	d.enc, d.pool = nil, nil
	goruntime.UnlockOSThread()
	if ok == 0 {
		return fmt.Errorf("metal: command buffer failed: %w", cerr(msg))
	}
	return nil
}

func (d *Device) span(rb device.Buffer, off int64, n int) ([]byte, error) {
	b, ok := rb.(*buffer)
	if !ok || off < 0 || off+int64(n) > b.n {
		return nil, fmt.Errorf("metal: %d bytes at offset %d are outside the buffer", n, off)
	}
	return unsafe.Slice((*byte)(unsafe.Add(C.magc_contents(b.ptr), off)), n), nil
}

func (d *Device) Write(b device.Buffer, off int64, src []byte) error {
	if err := d.Sync(); err != nil {
		return err
	}
	dst, err := d.span(b, off, len(src))
	if err == nil {
		copy(dst, src)
	}
	return err
}

func (d *Device) Read(b device.Buffer, off int64, dst []byte) error {
	if err := d.Sync(); err != nil {
		return err
	}
	src, err := d.span(b, off, len(dst))
	if err == nil {
		copy(dst, src)
	}
	return err
}

func (d *Device) Close() error {
	err := d.Sync()
	for _, l := range d.libs {
		for _, k := range l.ks {
			C.magc_release(k.pipeline)
		}
		C.magc_release(l.lib)
	}
	for _, b := range d.buffers {
		C.magc_release(b.ptr)
	}
	C.magc_release(d.queue)
	C.magc_release(d.dev)
	d.libs, d.buffers = nil, nil
	return err
}
