// Package cuda is the CUDA device: it runs magc's kernels (kernels.cu,
// rendered by codegen/cuda) on an NVIDIA GPU behind device.Device.
//
// The driver library, libcuda.so.1, is loaded at run time through purego,
// without cgo, so magc builds, vets and tests on machines without CUDA;
// there New reports that no driver was found. Modules are compiled to cubin
// by nvcc for the GPU present and cached on disk by content hash. Buffers
// are plain zeroed device allocations (no managed memory). Launches go to
// the default stream and are asynchronous: Sync waits and reports faults,
// and MAGC_CUDA_SYNC=1 syncs after every dispatch so a fault names its
// kernel. Every driver call runs under the device's mutex on a locked OS
// thread with the device's (primary) context current, since CUDA contexts
// are per thread.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/scm-magellano/magc/device"
)

// Option configures New.
type Option func(*config)

type config struct {
	cacheDir, nvcc string
}

// WithCacheDir sets where compiled modules are kept. The default is
// os.UserCacheDir()/magc/cuda.
func WithCacheDir(dir string) Option { return func(c *config) { c.cacheDir = dir } }

// WithNVCC sets the nvcc to compile with: a path, or a name on $PATH. The
// default is $CUDA_HOME/bin/nvcc, else nvcc on $PATH, else
// /usr/local/cuda/bin/nvcc.
func WithNVCC(path string) Option { return func(c *config) { c.nvcc = path } }

func (c *config) dir() string {
	if c.cacheDir != "" {
		return c.cacheDir
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "magc", "cuda")
}

// Device is the first CUDA GPU (CUDA_VISIBLE_DEVICES picks it). It is safe
// for concurrent use.
type Device struct {
	drv        *driver
	dev        int32
	name, arch string
	sms        int
	totalMem   int64
	cfg        config
	syncEach   bool // MAGC_CUDA_SYNC=1

	mu     sync.Mutex // guards all below; held around every driver call
	ctx    uintptr
	closed bool
	bufs   []*buffer
	libs   map[string]*library // by cubin key

	// cuLaunchKernel takes an array of pointers to the argument values;
	// both live in Go memory pinned for as long as the device.
	params    []uint64
	paramPtrs []unsafe.Pointer
	pinner    goruntime.Pinner

	unsynced   int    // dispatches since the last Sync
	lastKernel string // the latest of them

	profiling bool
	marks     []mark    // timed dispatches not yet synced
	events    []uintptr // idle events, reused
	times     map[string]*device.KernelTime
}

var _ device.Device = (*Device)(nil)

var errClosed = errors.New("cuda: device is closed")

type buffer struct {
	dev *Device
	ptr uint64
	n   int64
}

func (b *buffer) Len() int64 { return b.n }

type library struct {
	dev     *Device
	mod     uintptr
	params  map[string]int // parameter count of each kernel, from the source
	kernels map[string]*kernel
}

type kernel struct {
	lib        *library
	fn         uintptr
	name       string
	maxThreads int
	params     int // -1 when the source's signature was not recognised
}

func (k *kernel) Name() string    { return k.name }
func (k *kernel) MaxThreads() int { return k.maxThreads }

// mark is one timed dispatch: events recorded around its launch.
type mark struct {
	name       string
	start, end uintptr
}

// New opens the first CUDA device and retains its primary context.
// Without a driver the error is "no CUDA driver found: libcuda.so.1: ...".
func New(opts ...Option) (*Device, error) {
	drv, err := loadDriver(libName)
	if err != nil {
		return nil, err
	}
	d := &Device{drv: drv, libs: map[string]*library{}, times: map[string]*device.KernelTime{},
		syncEach: os.Getenv("MAGC_CUDA_SYNC") == "1"}
	for _, o := range opts {
		o(&d.cfg)
	}
	if err := drv.check("cuDeviceGet", drv.cuDeviceGet(&d.dev, 0)); err != nil {
		return nil, err
	}
	var name [256]byte
	if err := drv.check("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return nil, err
	}
	var major, minor, sms int32
	for _, a := range []struct {
		attr int32
		v    *int32
	}{{attrCCMajor, &major}, {attrCCMinor, &minor}, {attrMultiprocessors, &sms}} {
		if err := drv.check("cuDeviceGetAttribute", drv.cuDeviceGetAttribute(a.v, a.attr, d.dev)); err != nil {
			return nil, err
		}
	}
	var total uintptr
	if err := drv.check("cuDeviceTotalMem", drv.cuDeviceTotalMem(&total, d.dev)); err != nil {
		return nil, err
	}
	d.arch = fmt.Sprintf("sm_%d%d", major, minor)
	d.name = fmt.Sprintf("cuda: %s (%s)", cString(&name[0]), d.arch)
	d.sms, d.totalMem = int(sms), int64(total)
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return nil, err
	}
	return d, nil
}

// Available opens the CUDA device once per process when this machine has
// one, so tests can run the kernel-versus-reference checks on it; elsewhere
// it reports false. The shared device is never closed.
func Available() (*Device, bool) {
	once.Do(func() { shared, sharedErr = New() })
	return shared, sharedErr == nil
}

var (
	once      sync.Once
	shared    *Device
	sharedErr error
)

// Name is like "cuda: NVIDIA H100 80GB HBM3 (sm_90)".
func (d *Device) Name() string { return d.name }

// Target is the kernel language the device compiles: CUDA C++.
func (d *Device) Target() string { return "cuda" }

// Arch is the GPU's compute capability as nvcc names it ("sm_90").
func (d *Device) Arch() string { return d.arch }

// Multiprocessors is the number of SMs.
func (d *Device) Multiprocessors() int { return d.sms }

// Limits reports the GPU's memory as both the working set and the largest
// buffer (device.Limiter), so a plan that cannot fit is refused up front.
func (d *Device) Limits() (workingSet, maxBuffer int64) { return d.totalMem, d.totalMem }

// lock takes the device, pins the goroutine to its OS thread and makes the
// context current there. Pair it with unlock.
func (d *Device) lock() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errClosed
	}
	goruntime.LockOSThread()
	if err := d.drv.check("cuCtxSetCurrent", d.drv.cuCtxSetCurrent(d.ctx)); err != nil {
		d.unlock()
		return err
	}
	return nil
}

func (d *Device) unlock() {
	goruntime.UnlockOSThread()
	d.mu.Unlock()
}

// Alloc returns a zeroed device allocation of n bytes.
func (d *Device) Alloc(n int64) (device.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cuda: Alloc(%d): negative size", n)
	}
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.unlock()
	var p uint64
	if err := d.drv.check("cuMemAlloc", d.drv.cuMemAlloc(&p, uintptr(max(n, 1)))); err != nil {
		return nil, d.blame(fmt.Errorf("%w (allocating %d bytes)", err, n))
	}
	if err := d.drv.check("cuMemsetD8", d.drv.cuMemsetD8(p, 0, uintptr(n))); err != nil {
		d.drv.cuMemFree(p)
		return nil, err
	}
	b := &buffer{dev: d, ptr: p, n: n}
	d.bufs = append(d.bufs, b)
	return b, nil
}

// span returns the device address of n bytes at off in rb.
func (d *Device) span(rb device.Buffer, off, n int64) (uint64, error) {
	b, ok := rb.(*buffer)
	switch {
	case !ok || b == nil:
		return 0, fmt.Errorf("%T is not a CUDA buffer", rb)
	case b.dev != d:
		return 0, errors.New("the buffer belongs to another device")
	case off < 0 || off > b.n || n > b.n-off:
		return 0, fmt.Errorf("%d bytes at offset %d are outside the %d-byte buffer", n, off, b.n)
	}
	return b.ptr + uint64(off), nil
}

// Write copies src into b at offset. It is ordered after earlier dispatches.
func (d *Device) Write(b device.Buffer, offset int64, src []byte) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.unlock()
	p, err := d.span(b, offset, int64(len(src)))
	if err != nil {
		return fmt.Errorf("cuda: Write: %v", err)
	}
	if len(src) == 0 {
		return nil
	}
	return d.blame(d.drv.check("cuMemcpyHtoD", d.drv.cuMemcpyHtoD(p, unsafe.Pointer(&src[0]), uintptr(len(src)))))
}

// Read waits for every dispatch so far, then copies from b at offset.
func (d *Device) Read(b device.Buffer, offset int64, dst []byte) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.unlock()
	p, err := d.span(b, offset, int64(len(dst)))
	if err != nil {
		return fmt.Errorf("cuda: Read: %v", err)
	}
	if err := d.syncLocked(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	return d.drv.check("cuMemcpyDtoH", d.drv.cuMemcpyDtoH(unsafe.Pointer(&dst[0]), p, uintptr(len(dst))))
}

// Compile builds a module from CUDA C++ with nvcc for this GPU, or takes it
// from the cache, and loads it.
func (d *Device) Compile(src string) (device.Library, error) {
	c, err := findNVCC(d.cfg.nvcc)
	if err != nil {
		return nil, err
	}
	key := c.key(src, d.arch)
	d.mu.Lock()
	l, closed := d.libs[key], d.closed
	d.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if l != nil {
		return l, nil
	}
	// nvcc runs without the lock: dispatches may go on meanwhile.
	bin, err := c.cubin(src, d.arch, d.cfg.dir(), key)
	if err != nil {
		return nil, err
	}
	if len(bin) == 0 {
		return nil, errors.New("cuda: nvcc produced an empty cubin")
	}
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.unlock()
	if l := d.libs[key]; l != nil {
		return l, nil
	}
	var mod uintptr
	if err := d.drv.check("cuModuleLoadData", d.drv.cuModuleLoadData(&mod, unsafe.Pointer(&bin[0]))); err != nil {
		return nil, err
	}
	l = &library{dev: d, mod: mod, params: kernelParams(src), kernels: map[string]*kernel{}}
	d.libs[key] = l
	return l, nil
}

// Kernel looks up an extern "C" kernel of the module.
func (l *library) Kernel(name string) (device.Kernel, error) {
	d := l.dev
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.unlock()
	if k := l.kernels[name]; k != nil {
		return k, nil
	}
	var fn uintptr
	if r := d.drv.cuModuleGetFunction(&fn, l.mod, name); r == errNotFound {
		return nil, fmt.Errorf("cuda: no kernel %q in the module", name)
	} else if err := d.drv.check("cuModuleGetFunction("+name+")", r); err != nil {
		return nil, err
	}
	var mt int32
	if err := d.drv.check("cuFuncGetAttribute", d.drv.cuFuncGetAttribute(&mt, funcMaxThreadsPerBlock, fn)); err != nil {
		return nil, err
	}
	params, ok := l.params[name]
	if !ok {
		params = -1
	}
	k := &kernel{lib: l, fn: fn, name: name, maxThreads: int(mt), params: params}
	l.kernels[name] = k
	return k, nil
}

// Dispatch launches k over groups blocks of threads threads. Arguments are
// buffers at byte offsets, passed as device pointers in order. The launch
// is asynchronous: a fault shows at the next Sync or Read.
func (d *Device) Dispatch(rk device.Kernel, groups, threads [3]int, args []device.Arg) error {
	k, ok := rk.(*kernel)
	if !ok || k == nil {
		return fmt.Errorf("cuda: %T is not a CUDA kernel", rk)
	}
	if k.lib.dev != d {
		return fmt.Errorf("cuda: kernel %s belongs to another device", k.name)
	}
	for i := range 3 {
		if threads[i] < 1 || groups[i] < 0 || groups[i] > math.MaxInt32 {
			return fmt.Errorf("cuda: %s: cannot launch %v groups of %v threads", k.name, groups, threads)
		}
	}
	if n := threads[0] * threads[1] * threads[2]; n > k.maxThreads {
		return fmt.Errorf("cuda: %s: %v threads per block, the kernel allows %d", k.name, threads, k.maxThreads)
	}
	if k.params >= 0 && len(args) != k.params {
		return fmt.Errorf("cuda: %s takes %d arguments, the dispatch has %d", k.name, k.params, len(args))
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.unlock()
	if groups[0]*groups[1]*groups[2] == 0 {
		return nil // an empty grid: nothing to run
	}
	if len(args) > len(d.params) {
		d.growParams(len(args))
	}
	for i, a := range args {
		if a.Bytes != nil {
			return fmt.Errorf("cuda: %s argument %d: constant bytes are not supported, only buffers", k.name, i)
		}
		p, err := d.span(a.Buffer, a.Offset, 0)
		if err != nil {
			return fmt.Errorf("cuda: %s argument %d: %v", k.name, i, err)
		}
		d.params[i] = p
	}
	var params unsafe.Pointer
	if len(args) > 0 {
		params = unsafe.Pointer(&d.paramPtrs[0])
	}
	var m mark
	if d.profiling {
		var err error
		if m, err = d.record(k.name); err != nil {
			return err
		}
	}
	r := d.drv.cuLaunchKernel(k.fn, uint32(groups[0]), uint32(groups[1]), uint32(groups[2]),
		uint32(threads[0]), uint32(threads[1]), uint32(threads[2]), 0, 0, params, nil)
	if r != 0 {
		if m.start != 0 {
			d.events = append(d.events, m.start, m.end)
		}
		return d.blame(fmt.Errorf("cuda: launching %s (%v groups of %v threads): %s", k.name, groups, threads, d.drv.describe(r)))
	}
	if m.end != 0 {
		if err := d.drv.check("cuEventRecord", d.drv.cuEventRecord(m.end, 0)); err != nil {
			d.events = append(d.events, m.start, m.end)
			return err
		}
		d.marks = append(d.marks, m)
	}
	d.unsynced++
	d.lastKernel = k.name
	if d.syncEach {
		return d.syncLocked()
	}
	return nil
}

// growParams makes room for n kernel arguments, re-pinning the arrays.
func (d *Device) growParams(n int) {
	d.pinner.Unpin()
	n = max(n, 2*len(d.params), 16)
	d.params = make([]uint64, n)
	d.paramPtrs = make([]unsafe.Pointer, n)
	for i := range d.params {
		d.paramPtrs[i] = unsafe.Pointer(&d.params[i])
	}
	d.pinner.Pin(&d.params[0])
	d.pinner.Pin(&d.paramPtrs[0])
}

// Sync waits for every dispatch so far and reports the first fault.
func (d *Device) Sync() error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.unlock()
	return d.syncLocked()
}

func (d *Device) syncLocked() error {
	r := d.drv.cuCtxSynchronize()
	n, last := d.unsynced, d.lastKernel
	d.unsynced = 0
	terr := d.harvest(r == 0)
	switch {
	case r == 0:
		return terr
	case n == 0:
		return fmt.Errorf("cuda: cuCtxSynchronize: %s", d.drv.describe(r))
	case d.syncEach:
		return fmt.Errorf("cuda: kernel %s failed: %s", last, d.drv.describe(r))
	}
	return fmt.Errorf("cuda: one of the %d dispatches since the last sync failed (the last was %s): %s; rerun with MAGC_CUDA_SYNC=1 to name it",
		n, last, d.drv.describe(r))
}

// blame returns the fault of an earlier dispatch, if one failed, in place
// of err: CUDA errors are sticky, so after an asynchronous fault the next
// call fails with the fault's error and would be blamed for it.
func (d *Device) blame(err error) error {
	if err == nil || d.unsynced == 0 {
		return err
	}
	if serr := d.syncLocked(); serr != nil {
		return serr
	}
	return err
}

// EnableProfile turns per-kernel timing on (starting a fresh profile) or
// off (keeping the totals so far). While on, each dispatch records an event
// before and after its launch.
func (d *Device) EnableProfile(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.profiling = on
	if on {
		d.harvest(false)
		d.times = map[string]*device.KernelTime{}
	}
}

// Profile waits for the dispatches so far and returns the GPU time of each
// kernel, the most expensive first.
func (d *Device) Profile() []device.KernelTime {
	if d.lock() == nil {
		d.syncLocked() // a fault here surfaces again at the next Sync: CUDA errors are sticky
		d.unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]device.KernelTime, 0, len(d.times))
	for _, t := range d.times {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// record takes two events and records the first on the default stream.
func (d *Device) record(name string) (mark, error) {
	m := mark{name: name}
	for _, e := range []*uintptr{&m.start, &m.end} {
		if n := len(d.events); n > 0 {
			*e, d.events = d.events[n-1], d.events[:n-1]
		} else if err := d.drv.check("cuEventCreate", d.drv.cuEventCreate(e, 0)); err != nil {
			if m.start != 0 {
				d.events = append(d.events, m.start)
			}
			return mark{}, err
		}
	}
	if err := d.drv.check("cuEventRecord", d.drv.cuEventRecord(m.start, 0)); err != nil {
		d.events = append(d.events, m.start, m.end)
		return mark{}, err
	}
	return m, nil
}

// harvest adds the synced marks' times to the profile (when ok) and returns
// their events for reuse.
func (d *Device) harvest(ok bool) error {
	var err error
	for _, m := range d.marks {
		var ms float32
		if ok && err == nil {
			err = d.drv.check("cuEventElapsedTime", d.drv.cuEventElapsedTime(&ms, m.start, m.end))
		}
		if ok && err == nil {
			t := d.times[m.name]
			if t == nil {
				t = &device.KernelTime{Name: m.name}
				d.times[m.name] = t
			}
			t.Calls++
			t.Total += time.Duration(float64(ms) * float64(time.Millisecond))
		}
		d.events = append(d.events, m.start, m.end)
	}
	d.marks = d.marks[:0]
	return err
}

// Close waits for the GPU, then frees the buffers, modules and events and
// releases the context. The device and its buffers are unusable after.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	goruntime.LockOSThread()
	defer d.unlock() // after closed is set: unlock does not look at it
	d.closed = true
	var err error
	keep := func(e error) {
		if err == nil {
			err = e
		}
	}
	keep(d.drv.check("cuCtxSetCurrent", d.drv.cuCtxSetCurrent(d.ctx)))
	keep(d.syncLocked())
	for _, b := range d.bufs {
		keep(d.drv.check("cuMemFree", d.drv.cuMemFree(b.ptr)))
	}
	for _, l := range d.libs {
		keep(d.drv.check("cuModuleUnload", d.drv.cuModuleUnload(l.mod)))
	}
	for _, e := range d.events {
		keep(d.drv.check("cuEventDestroy", d.drv.cuEventDestroy(e)))
	}
	keep(d.drv.check("cuDevicePrimaryCtxRelease", d.drv.cuDevicePrimaryCtxRelease(d.dev)))
	d.pinner.Unpin()
	d.bufs, d.libs, d.events, d.params, d.paramPtrs = nil, nil, nil, nil, nil
	return err
}
