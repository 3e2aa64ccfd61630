package sim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/scm-magellano/magc/device"
)

// Option configures a Device.
type Option func(*config)

type config struct {
	cxx     []string // compiler command: $CXX, else "c++"
	extra   []string
	cache   string
	workers int
}

// WithCompiler sets the C++ compiler command (it may carry arguments, as
// "ccache g++"). The default is $CXX, else c++; g++ and clang++ both work.
func WithCompiler(cxx string) Option {
	return func(c *config) {
		if f := strings.Fields(cxx); len(f) > 0 {
			c.cxx = f
		}
	}
}

// WithFlags adds flags to the compiler command line (after the defaults,
// so "-O3" overrides -O2).
func WithFlags(flags ...string) Option {
	return func(c *config) { c.extra = append(c.extra, flags...) }
}

// WithCacheDir sets where built libraries are kept. The default is
// os.UserCacheDir()/magc/sim.
func WithCacheDir(dir string) Option { return func(c *config) { c.cache = dir } }

// WithWorkers sets how many OS threads run threadgroups in parallel. The
// default is GOMAXPROCS, at most the number of CPUs.
func WithWorkers(n int) Option { return func(c *config) { c.workers = n } }

func (c *config) flags() []string { return append(append([]string{}, defaultFlags...), c.extra...) }

func (c *config) cacheDir() (string, error) {
	dir := c.cache
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "magc", "sim")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("sim: cache directory: %v", err)
	}
	return dir, nil
}

// Device is the sim device. It is safe for concurrent use.
type Device struct {
	cfg config

	mu       sync.Mutex // guards closed and bufs
	closed   bool
	bufs     map[*buffer]struct{}
	inflight sync.WaitGroup // operations using buffers; Close waits for them
}

var _ device.Device = (*Device)(nil)

// New returns a sim device.
func New(opts ...Option) *Device {
	d := &Device{bufs: map[*buffer]struct{}{}}
	d.cfg.cxx = []string{"c++"}
	if f := strings.Fields(os.Getenv("CXX")); len(f) > 0 {
		d.cfg.cxx = f
	}
	for _, o := range opts {
		o(&d.cfg)
	}
	return d
}

var errClosed = errors.New("sim: device is closed")

// begin marks the start of an operation that uses buffers; end it with
// d.inflight.Done().
func (d *Device) begin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	d.inflight.Add(1)
	return nil
}

// Name is "sim".
func (d *Device) Name() string { return "sim" }

// Target is "msl": the sim runs the Metal source magc emits.
func (d *Device) Target() string { return "msl" }

type buffer struct {
	dev  *Device
	ptr  unsafe.Pointer // 64-byte aligned C memory: safe to hand to C
	base unsafe.Pointer
	n    int64
}

func (b *buffer) Len() int64 { return b.n }

func (b *buffer) bytes() []byte { return unsafe.Slice((*byte)(b.ptr), b.n) }

// errNoCgo is what a sim built without cgo says: it builds (so magc builds
// everywhere) but cannot run kernels.
var errNoCgo = errors.New("sim: the sim device needs cgo (CGO_ENABLED=1 and a C++ compiler)")

// Alloc returns a zeroed buffer in C memory, aligned to 64 bytes.
func (d *Device) Alloc(n int64) (device.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("sim: Alloc(%d): negative size", n)
	}
	ptr, base := cAlloc(n)
	if ptr == nil && !haveCgo {
		return nil, errNoCgo
	}
	if ptr == nil {
		return nil, fmt.Errorf("sim: Alloc(%d): out of memory", n)
	}
	b := &buffer{dev: d, ptr: ptr, base: base, n: n}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		cFree(base)
		return nil, errClosed
	}
	d.bufs[b] = struct{}{}
	return b, nil
}

// own returns b as this device's live buffer.
func (d *Device) own(b device.Buffer) (*buffer, error) {
	sb, ok := b.(*buffer)
	if !ok || sb == nil {
		return nil, fmt.Errorf("sim: %T is not a sim buffer", b)
	}
	if sb.dev != d {
		return nil, errors.New("sim: buffer belongs to another device")
	}
	d.mu.Lock()
	_, live := d.bufs[sb]
	d.mu.Unlock()
	if !live {
		return nil, errors.New("sim: buffer was released")
	}
	return sb, nil
}

func (d *Device) span(b device.Buffer, offset int64, n int, op string) ([]byte, error) {
	sb, err := d.own(b)
	if err != nil {
		return nil, err
	}
	if offset < 0 || offset > sb.n || int64(n) > sb.n-offset {
		return nil, fmt.Errorf("sim: %s of %d bytes at offset %d is outside the %d-byte buffer", op, n, offset, sb.n)
	}
	return sb.bytes()[offset : offset+int64(n)], nil
}

// Write copies src into b at offset.
func (d *Device) Write(b device.Buffer, offset int64, src []byte) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.inflight.Done()
	dst, err := d.span(b, offset, len(src), "Write")
	if err != nil {
		return err
	}
	copy(dst, src)
	return nil
}

// Read copies from b at offset into dst.
func (d *Device) Read(b device.Buffer, offset int64, dst []byte) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.inflight.Done()
	src, err := d.span(b, offset, len(dst), "Read")
	if err != nil {
		return err
	}
	copy(dst, src)
	return nil
}

// Sync returns at once: dispatches are synchronous.
func (d *Device) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	return nil
}

// Close waits for running operations, then releases the device's buffers.
// Compiled libraries stay loaded: they are shared by every device of the
// process.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.inflight.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for b := range d.bufs {
		cFree(b.base)
	}
	d.bufs = nil
	return nil
}

// Library is a compiled MSL source.
type Library struct {
	dev  *Device
	lib  *loadedLib
	prog *program
}

// Compile builds MSL source. Libraries are cached by content in memory and
// on disk, so compiling the same source again is cheap. A *CompileError
// carries the compiler's diagnostics at lines of src.
func (d *Device) Compile(src string) (device.Library, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	prog, err := parseProgram(src)
	if err != nil {
		return nil, err
	}
	lib, err := compileLibrary(&d.cfg, prog, prog.translationUnit())
	if err != nil {
		return nil, err
	}
	return &Library{dev: d, lib: lib, prog: prog}, nil
}

// Kernel is a kernel function of a Library.
type Kernel struct {
	info   *kernelInfo
	run    unsafe.Pointer
	params []paramInfo
}

// Kernel looks up a kernel function by name.
func (l *Library) Kernel(name string) (device.Kernel, error) {
	var names []string
	for _, k := range l.prog.kernels {
		if k.name != name {
			names = append(names, k.name)
			continue
		}
		run := l.lib.sym("magc_run_" + name)
		params := l.lib.sym("magc_params_" + name)
		if run == nil || params == nil {
			return nil, fmt.Errorf("sim: kernel %s is missing from its compiled library %s", name, l.lib.path)
		}
		return &Kernel{info: k, run: run, params: readParamInfo(params, len(k.params))}, nil
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("sim: no kernel %q: the library has no kernels", name)
	}
	return nil, fmt.Errorf("sim: no kernel %q in the library (it has %s)", name, strings.Join(names, ", "))
}

// Name is the kernel function's name.
func (k *Kernel) Name() string { return k.info.name }

// MaxThreads is 1024, or the kernel's [[max_total_threads_per_threadgroup]].
func (k *Kernel) MaxThreads() int { return k.info.maxThreads }

// UsesFibers reports whether the kernel runs one fiber per thread (it
// calls barriers or simd-group functions) rather than a plain loop.
func (k *Kernel) UsesFibers() bool { return k.info.fibers }

// Dispatch runs k over groups threadgroups of threads threads each, and
// returns when it has finished. args bind [[buffer(i)]] to args[i].
func (d *Device) Dispatch(rk device.Kernel, groups, threads [3]int, args []device.Arg) error {
	k, ok := rk.(*Kernel)
	if !ok || k == nil {
		return fmt.Errorf("sim: %T is not a sim kernel", rk)
	}
	name := k.info.name
	for i := 0; i < 3; i++ {
		if threads[i] < 1 || groups[i] < 0 || groups[i] > math.MaxUint32 || threads[i] > math.MaxUint32 {
			return fmt.Errorf("sim: dispatch of %s: bad shape %v threadgroups of %v threads", name, groups, threads)
		}
	}
	perGroup := 1 // stops growing past the limit, so it cannot overflow
	for _, t := range threads {
		perGroup = min(perGroup*t, maxThreadsPerThreadgroup+1)
	}
	if perGroup > k.info.maxThreads {
		limit := fmt.Sprintf("more than %d (the most a threadgroup can have)", maxThreadsPerThreadgroup)
		if k.info.maxThreads < maxThreadsPerThreadgroup {
			limit = fmt.Sprintf("more than the kernel's [[max_total_threads_per_threadgroup(%d)]]", k.info.maxThreads)
		}
		return fmt.Errorf("sim: dispatch of %s: threads per threadgroup %v, %s", name, threads, limit)
	}
	total := uint64(1) // at most 2^40: enough for any real grid, no overflow
	for _, g := range groups {
		if g > 0 && total > (1<<40)/uint64(g) {
			return fmt.Errorf("sim: dispatch of %s: %v threadgroups are too many", name, groups)
		}
		total *= uint64(g)
	}
	if len(args) != k.info.nbuf {
		return fmt.Errorf("sim: dispatch of %s: got %d arguments, the kernel takes %d (%s)", name, len(args), k.info.nbuf, k.signature())
	}
	if err := d.begin(); err != nil {
		return err
	}
	defer d.inflight.Done()
	if total == 0 {
		return nil
	}
	l := newLaunch(groups, threads)
	if l == nil {
		return fmt.Errorf("sim: dispatch of %s: out of memory", name)
	}
	defer l.free()
	var bytesBase []unsafe.Pointer
	defer func() {
		for _, p := range bytesBase {
			cFree(p)
		}
	}()
	for i, prm := range k.info.params {
		if prm.attr != "buffer" {
			continue
		}
		info := k.params[i]
		a := args[prm.index]
		where := func() string {
			return fmt.Sprintf("dispatch of %s: argument %d (%s %s)", name, prm.index, prm.typ, prm.name)
		}
		switch {
		case a.Buffer != nil && a.Bytes != nil:
			return fmt.Errorf("sim: %s: set either Buffer or Bytes, not both", where())
		case a.Buffer != nil:
			b, err := d.own(a.Buffer)
			if err != nil {
				return fmt.Errorf("sim: %s: %v", where(), err)
			}
			if a.Offset < 0 || a.Offset > b.n {
				return fmt.Errorf("sim: %s: offset %d is outside the %d-byte buffer", where(), a.Offset, b.n)
			}
			if info.align > 1 && a.Offset%info.align != 0 {
				return fmt.Errorf("sim: %s: offset %d is not a multiple of the %d-byte alignment", where(), a.Offset, info.align)
			}
			if info.kind != paramPointer && b.n-a.Offset < info.size {
				return fmt.Errorf("sim: %s: needs %d bytes, the buffer has %d after offset %d", where(), info.size, b.n-a.Offset, a.Offset)
			}
			l.setArg(prm.index, unsafe.Add(b.ptr, a.Offset))
		case a.Bytes != nil:
			if info.kind != paramPointer && int64(len(a.Bytes)) < info.size {
				return fmt.Errorf("sim: %s: needs %d bytes, got %d", where(), info.size, len(a.Bytes))
			}
			p, base := cAlloc(int64(len(a.Bytes)))
			if p == nil {
				return fmt.Errorf("sim: %s: out of memory", where())
			}
			bytesBase = append(bytesBase, base)
			copy(unsafe.Slice((*byte)(p), len(a.Bytes)), a.Bytes)
			l.setArg(prm.index, p)
		default:
			return fmt.Errorf("sim: %s is not bound (set Buffer or Bytes)", where())
		}
	}
	workers := d.cfg.workers
	if workers <= 0 {
		workers = min(goruntime.GOMAXPROCS(0), goruntime.NumCPU())
	}
	workers = int(min(uint64(workers), total))
	if err := l.run(k.run, workers); err != nil {
		return fmt.Errorf("sim: dispatch of %s: %v", name, err)
	}
	return nil
}

func (k *Kernel) signature() string {
	var parts []string
	for _, p := range k.info.params {
		if p.attr == "buffer" {
			parts = append(parts, fmt.Sprintf("[[buffer(%d)]] %s %s", p.index, p.typ, p.name))
		}
	}
	if len(parts) == 0 {
		return "no buffers"
	}
	return strings.Join(parts, ", ")
}
