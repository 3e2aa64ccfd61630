//go:build darwin && cgo

package metal

/*
#cgo CFLAGS: -x objective-c -fno-objc-arc
#cgo LDFLAGS: -framework Metal -framework Foundation -framework CoreGraphics
// The Objective-C half of the Metal device, compiled with manual reference
// counting. Every object the Go side holds is retained here and released
// through magc_release (or magc_wait, for command buffers). Each entry
// point drains its own @autoreleasepool, so no pool outlives a call and
// any OS thread may make the next one.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#include <stdlib.h>
#include <string.h>

static char *copy_string(NSString *s) { return strdup(s ? [s UTF8String] : "unknown Metal error"); }

static char *copy_error(NSError *e) { return copy_string(e ? [e localizedDescription] : nil); }

// magc_device opens the default device; a command-line tool gets none
// from MTLCreateSystemDefaultDevice unless CoreGraphics is linked (it is),
// and MTLCopyAllDevices is the fallback.
void *magc_device(char **name, uint64_t *working_set, uint64_t *max_buffer) {
    @autoreleasepool {
        id<MTLDevice> d = MTLCreateSystemDefaultDevice(); // the create rule: retained
        if (!d) {
            NSArray<id<MTLDevice>> *all = MTLCopyAllDevices();
            if ([all count] > 0) d = [[all objectAtIndex:0] retain];
            [all release];
        }
        if (!d) return NULL;
        *name = strdup([[d name] UTF8String]);
        *working_set = [d recommendedMaxWorkingSetSize];
        *max_buffer = [d maxBufferLength];
        return (void *)d;
    }
}

void *magc_queue(void *device) {
    @autoreleasepool {
        return (void *)[(id<MTLDevice>)device newCommandQueue];
    }
}

void *magc_buffer(void *device, uint64_t bytes) {
    @autoreleasepool {
        return (void *)[(id<MTLDevice>)device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
    }
}

void *magc_contents(void *buffer) { return [(id<MTLBuffer>)buffer contents]; }

// magc_library compiles MSL 3.1 (bfloat; macOS 14) with IEEE semantics:
// NaN and infinity handling must match the sim and the reference.
void *magc_library(void *device, const char *src, char **err) {
    @autoreleasepool {
        MTLCompileOptions *opts = [[[MTLCompileOptions alloc] init] autorelease];
#if __MAC_OS_X_VERSION_MAX_ALLOWED >= 140000
        if (@available(macOS 14.0, *)) {
            opts.languageVersion = MTLLanguageVersion3_1;
        } else {
            *err = strdup("magc's kernels are Metal Shading Language 3.1: macOS 14 or later is needed");
            return NULL;
        }
#else
        *err = strdup("magc's kernels are Metal Shading Language 3.1: build with the macOS 14 SDK (Xcode 15) or later");
        return NULL;
#endif
#if __MAC_OS_X_VERSION_MAX_ALLOWED >= 150000
        if (@available(macOS 15.0, *)) {
            opts.mathMode = MTLMathModeSafe;
            opts.mathFloatingPointFunctions = MTLMathFloatingPointFunctionsPrecise;
        } else {
            opts.fastMathEnabled = NO; // deprecated since macOS 15, the only switch before it
        }
#else
        opts.fastMathEnabled = NO;
#endif
        NSError *e = nil;
        id<MTLLibrary> lib = [(id<MTLDevice>)device newLibraryWithSource:[NSString stringWithUTF8String:src]
                                                                 options:opts
                                                                   error:&e];
        if (!lib) *err = copy_error(e);
        return (void *)lib;
    }
}

void *magc_pipeline(void *device, void *library, const char *name, int *max_threads, char **err) {
    @autoreleasepool {
        id<MTLFunction> fn = [(id<MTLLibrary>)library newFunctionWithName:[NSString stringWithUTF8String:name]];
        if (!fn) {
            *err = strdup("no kernel of that name in the library");
            return NULL;
        }
        NSError *e = nil;
        id<MTLComputePipelineState> ps = [(id<MTLDevice>)device newComputePipelineStateWithFunction:fn error:&e];
        if (!ps) *err = copy_error(e);
        else *max_threads = (int)[ps maxTotalThreadsPerThreadgroup];
        [fn release];
        return (void *)ps;
    }
}

// magc_open returns a retained command buffer that reports which encoder
// faulted, and (in *encoder) its retained compute encoder, labelled.
void *magc_open(void *queue, const char *label, void **encoder) {
    @autoreleasepool {
        id<MTLCommandBuffer> cb = nil;
        if (@available(macOS 11.0, *)) {
            MTLCommandBufferDescriptor *desc = [[[MTLCommandBufferDescriptor alloc] init] autorelease];
            desc.errorOptions = MTLCommandBufferErrorOptionEncoderExecutionStatus;
            cb = [(id<MTLCommandQueue>)queue commandBufferWithDescriptor:desc];
        } else {
            cb = [(id<MTLCommandQueue>)queue commandBuffer];
        }
        if (!cb) return NULL;
        id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoder];
        if (!enc) return NULL;
        NSString *l = [NSString stringWithUTF8String:label];
        cb.label = l;
        enc.label = l;
        *encoder = (void *)[enc retain];
        return (void *)[cb retain];
    }
}

// magc_encode adds one dispatch, inside a debug group that names it (a
// GPU capture and a fault report show it).
void magc_encode(void *encoder, void *pipeline, void **buffers, uint64_t *offsets, int n,
                 uint32_t gx, uint32_t gy, uint32_t gz, uint32_t tx, uint32_t ty, uint32_t tz, const char *label) {
    @autoreleasepool {
        id<MTLComputeCommandEncoder> enc = (id<MTLComputeCommandEncoder>)encoder;
        [enc pushDebugGroup:[NSString stringWithUTF8String:label]];
        [enc setComputePipelineState:(id<MTLComputePipelineState>)pipeline];
        for (int i = 0; i < n; i++) {
            [enc setBuffer:(id<MTLBuffer>)buffers[i] offset:offsets[i] atIndex:i];
        }
        [enc dispatchThreadgroups:MTLSizeMake(gx, gy, gz) threadsPerThreadgroup:MTLSizeMake(tx, ty, tz)];
        [enc popDebugGroup];
    }
}

// magc_commit ends the encoder (releasing it) and commits its command
// buffer; the Go side keeps the buffer until magc_wait.
void magc_commit(void *cmdbuf, void *encoder) {
    @autoreleasepool {
        [(id<MTLComputeCommandEncoder>)encoder endEncoding];
        [(id)encoder release];
        [(id<MTLCommandBuffer>)cmdbuf commit];
    }
}

// magc_wait waits for a committed command buffer and releases it. On a
// fault it describes the error and the encoders that faulted, with their
// debug groups.
int magc_wait(void *cmdbuf, char **err) {
    @autoreleasepool {
        id<MTLCommandBuffer> cb = (id<MTLCommandBuffer>)cmdbuf;
        [cb waitUntilCompleted];
        int ok = [cb status] == MTLCommandBufferStatusCompleted;
        if (!ok) {
            NSError *e = [cb error];
            NSMutableString *msg = [NSMutableString stringWithString:(e ? [e localizedDescription] : @"status not completed")];
            if (@available(macOS 11.0, *)) {
                NSArray *infos = e ? [[e userInfo] objectForKey:MTLCommandBufferEncoderInfoErrorKey] : nil;
                for (id<MTLCommandBufferEncoderInfo> info in infos) {
                    if ([info errorState] != MTLCommandEncoderErrorStateFaulted) continue;
                    [msg appendFormat:@"; encoder \"%@\" faulted", [info label]];
                    if ([[info debugSignposts] count] > 0)
                        [msg appendFormat:@" in %@", [[info debugSignposts] componentsJoinedByString:@" > "]];
                }
            }
            *err = copy_string(msg);
        }
        [cb release];
        return ok;
    }
}

void magc_release(void *object) {
    @autoreleasepool {
        [(id)object release];
    }
}
*/
import "C"

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"github.com/scm-magellano/magc/device"
)

// defaultBatch is how many dispatches go in one command buffer. macOS
// aborts a command buffer that runs for seconds on a Mac with a display
// (ImpactingInteractivity), and a whole scm3b step (703 dispatches) at a
// real batch size would; MLX commits every few tens of ops too.
const defaultBatch = 32

// Device is the system's default Metal GPU. Every method holds mu; the
// Objective-C calls keep nothing thread-bound between them.
type Device struct {
	mu                    sync.Mutex
	dev, queue            unsafe.Pointer
	name                  string
	workingSet, maxBuffer int64
	libs                  map[[32]byte]*library
	buffers               map[*buffer]struct{}
	closed                bool

	batch    int  // dispatches per command buffer (MAGC_METAL_BATCH)
	syncEach bool // MAGC_METAL_SYNC=1: wait after every dispatch, so a fault names it

	cb, enc    unsafe.Pointer // the open command buffer and its encoder, retained
	open       dispatches     // the dispatches encoded into cb
	committed  []inflight     // committed since the last Sync, oldest first
	dispatched int            // dispatches since the last Sync
}

// dispatches is a run of dispatches, counted from the last Sync (so in a
// plan's step they are the plan's dispatch indices).
type dispatches struct {
	first, n int
	last     string // the last one's kernel
}

type inflight struct {
	cb unsafe.Pointer
	dispatches
}

type buffer struct {
	d   *Device
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
	lib        *library
	name       string
	pipeline   unsafe.Pointer
	maxThreads int
}

func (k *kernel) Name() string    { return k.name }
func (k *kernel) MaxThreads() int { return k.maxThreads }

var errClosed = errors.New("metal: the device is closed")

func cerr(p *C.char) error {
	defer C.free(unsafe.Pointer(p))
	return errors.New(C.GoString(p))
}

// New opens the default Metal device. MAGC_METAL_BATCH sets the dispatches
// per command buffer; MAGC_METAL_SYNC=1 commits and waits after each one.
func New() (device.Device, error) {
	batch := defaultBatch
	if s := os.Getenv("MAGC_METAL_BATCH"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("metal: MAGC_METAL_BATCH=%q: want a positive number of dispatches", s)
		}
		batch = n
	}
	var name *C.char
	var ws, mb C.uint64_t
	dev := C.magc_device(&name, &ws, &mb)
	if dev == nil {
		return nil, errors.New("metal: no Metal device (MTLCreateSystemDefaultDevice and MTLCopyAllDevices found none)")
	}
	defer C.free(unsafe.Pointer(name))
	q := C.magc_queue(dev)
	if q == nil {
		C.magc_release(dev)
		return nil, errors.New("metal: cannot create a command queue")
	}
	return &Device{dev: dev, queue: q, name: "metal: " + C.GoString(name),
		workingSet: int64(ws), maxBuffer: int64(mb), libs: map[[32]byte]*library{}, buffers: map[*buffer]struct{}{},
		batch: batch, syncEach: os.Getenv("MAGC_METAL_SYNC") == "1"}, nil
}

func (d *Device) Name() string { return d.name }

func (d *Device) Target() string { return "msl" }

// Limits are recommendedMaxWorkingSetSize and maxBufferLength.
func (d *Device) Limits() (workingSet, maxBuffer int64) { return d.workingSet, d.maxBuffer }

func (d *Device) Alloc(n int64) (device.Buffer, error) {
	if n < 0 || n > d.maxBuffer {
		return nil, fmt.Errorf("metal: a %d-byte buffer is outside 0 to this GPU's maxBufferLength (%d); arena segments are planned below it, so this is a bug: please report it", n, d.maxBuffer)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
	p := C.magc_buffer(d.dev, C.uint64_t(max(n, 1)))
	if p == nil {
		return nil, fmt.Errorf("metal: cannot allocate %d bytes", n)
	}
	b := &buffer{d: d, ptr: p, n: n}
	d.buffers[b] = struct{}{}
	return b, nil
}

// Free releases a buffer before Close. Command buffers in flight retain
// what they use, so it need not wait for them.
func (d *Device) Free(rb device.Buffer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := rb.(*buffer)
	if !ok || b.d != d {
		return fmt.Errorf("metal: %T is not a buffer of this device", rb)
	}
	if _, live := d.buffers[b]; !live {
		return errors.New("metal: the buffer was freed already")
	}
	delete(d.buffers, b)
	C.magc_release(b.ptr)
	return nil
}

func (d *Device) Compile(src string) (device.Library, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
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
	d := l.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
	if k, ok := l.ks[name]; ok {
		return k, nil
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var maxT C.int
	var msg *C.char
	p := C.magc_pipeline(d.dev, l.lib, cn, &maxT, &msg)
	if p == nil {
		return nil, fmt.Errorf("metal: kernel %s: %w", name, cerr(msg))
	}
	k := &kernel{lib: l, name: name, pipeline: p, maxThreads: int(maxT)}
	l.ks[name] = k
	return k, nil
}

// Dispatch encodes a launch into the open command buffer, opening one if
// needed, and commits it (without waiting) once it holds batch dispatches.
// Command buffers of one queue run in commit order, each seeing the
// writes of those before it; only Sync waits.
func (d *Device) Dispatch(rk device.Kernel, groups, threads [3]int, args []device.Arg) error {
	k, ok := rk.(*kernel)
	if !ok || k == nil {
		return fmt.Errorf("metal: %T is not a Metal kernel", rk)
	}
	if k.lib.d != d {
		return fmt.Errorf("metal: kernel %s belongs to another device", k.name)
	}
	for i := range 3 {
		if threads[i] < 1 || groups[i] < 0 || groups[i] > 1<<31-1 {
			return fmt.Errorf("metal: %s: cannot launch %v threadgroups of %v threads", k.name, groups, threads)
		}
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
	ofs := unsafe.Slice((*C.uint64_t)(offs), n+1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	for i, a := range args {
		b, ok := a.Buffer.(*buffer)
		if !ok || a.Bytes != nil {
			return fmt.Errorf("metal: %s argument %d: only buffer arguments are supported", k.name, i)
		}
		if _, live := d.buffers[b]; !live || a.Offset < 0 || a.Offset > b.n {
			return fmt.Errorf("metal: %s argument %d: not a live buffer of this device, or offset %d outside it", k.name, i, a.Offset)
		}
		bs[i], ofs[i] = b.ptr, C.uint64_t(a.Offset)
	}
	if groups[0]*groups[1]*groups[2] == 0 {
		return nil // an empty grid: nothing to run
	}
	idx := d.dispatched
	if d.cb == nil {
		label := C.CString(fmt.Sprintf("magc dispatches from %d", idx))
		d.cb = C.magc_open(d.queue, label, &d.enc)
		C.free(unsafe.Pointer(label))
		if d.cb == nil {
			return fmt.Errorf("metal: %s: cannot create a command buffer", k.name)
		}
		d.open = dispatches{first: idx}
	}
	label := C.CString(fmt.Sprintf("dispatch %d: %s", idx, k.name))
	defer C.free(unsafe.Pointer(label))
	C.magc_encode(d.enc, k.pipeline, (*unsafe.Pointer)(bufs), (*C.uint64_t)(offs), C.int(n),
		C.uint32_t(groups[0]), C.uint32_t(groups[1]), C.uint32_t(groups[2]),
		C.uint32_t(threads[0]), C.uint32_t(threads[1]), C.uint32_t(threads[2]), label)
	d.dispatched++
	d.open.n++
	d.open.last = k.name
	switch {
	case d.syncEach:
		return d.syncLocked()
	case d.open.n >= d.batch:
		d.commitLocked()
	}
	return nil
}

// commitLocked commits the open command buffer, if any.
func (d *Device) commitLocked() {
	if d.cb == nil {
		return
	}
	C.magc_commit(d.cb, d.enc)
	d.committed = append(d.committed, inflight{cb: d.cb, dispatches: d.open})
	d.cb, d.enc, d.open = nil, nil, dispatches{}
}

// Sync commits the open command buffer and waits for every one committed
// since the last Sync (in order: after the first wait the rest are mostly
// done), reporting the first that failed.
func (d *Device) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncLocked()
}

func (d *Device) syncLocked() error {
	d.commitLocked()
	var first error
	for _, f := range d.committed {
		var msg *C.char
		if C.magc_wait(f.cb, &msg) != 0 || first != nil {
			if msg != nil {
				C.free(unsafe.Pointer(msg))
			}
			continue
		}
		err := cerr(msg)
		switch {
		case f.n == 1:
			first = fmt.Errorf("metal: dispatch %d (%s) failed: %w", f.first, f.last, err)
		default:
			first = fmt.Errorf("metal: the command buffer of dispatches %d to %d since the last sync (the last was %s) failed: %w; "+
				"rerun with MAGC_METAL_SYNC=1 to name the dispatch", f.first, f.first+f.n-1, f.last, err)
		}
	}
	d.committed, d.dispatched = d.committed[:0], 0
	return first
}

func (d *Device) span(rb device.Buffer, off int64, n int) ([]byte, error) {
	b, ok := rb.(*buffer)
	if !ok || b.d != d {
		return nil, fmt.Errorf("metal: %T is not a buffer of this device", rb)
	}
	if _, live := d.buffers[b]; !live {
		return nil, errors.New("metal: the buffer was freed")
	}
	if off < 0 || off+int64(n) > b.n {
		return nil, fmt.Errorf("metal: %d bytes at offset %d are outside the %d-byte buffer", n, off, b.n)
	}
	if n == 0 {
		return nil, nil
	}
	return unsafe.Slice((*byte)(unsafe.Add(C.magc_contents(b.ptr), off)), n), nil
}

// Write waits for the dispatches so far (shared memory: the GPU may be
// reading it), then copies.
func (d *Device) Write(b device.Buffer, off int64, src []byte) error {
	return d.access(b, off, len(src), func(m []byte) { copy(m, src) })
}

// Read waits for the dispatches so far, then copies.
func (d *Device) Read(b device.Buffer, off int64, dst []byte) error {
	return d.access(b, off, len(dst), func(m []byte) { copy(dst, m) })
}

// access hands fn the n bytes of b at off once the GPU is done with them.
func (d *Device) access(b device.Buffer, off int64, n int, fn func([]byte)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if err := d.syncLocked(); err != nil {
		return err
	}
	m, err := d.span(b, off, n)
	if err == nil {
		fn(m)
	}
	return err
}

func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.syncLocked()
	for _, l := range d.libs {
		for _, k := range l.ks {
			C.magc_release(k.pipeline)
		}
		C.magc_release(l.lib)
	}
	for b := range d.buffers {
		C.magc_release(b.ptr)
	}
	C.magc_release(d.queue)
	C.magc_release(d.dev)
	d.libs, d.buffers = nil, nil
	return err
}
