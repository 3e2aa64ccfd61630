package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/safetensors"
)

// This file runs a compiled step from its two artefacts alone, the kernel
// source and plan.json, without the compiler: what `magc compile -o` writes
// and what a generated Go package embeds.

// SourceFile names the kernel source file of a target ("msl", "cuda").
func SourceFile(target string) string {
	if target == "cuda" {
		return "kernels.cu"
	}
	return "kernels.metal"
}

// Load reads and validates dir/plan.json and reads the kernel source of
// target from dir (see SourceFile).
func Load(dir, target string) (*Plan, string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "plan.json"))
	if err != nil {
		return nil, "", err
	}
	plan, err := Parse(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", filepath.Join(dir, "plan.json"), err)
	}
	src, err := os.ReadFile(filepath.Join(dir, SourceFile(target)))
	if err != nil {
		return nil, "", err
	}
	return plan, string(src), nil
}

// Parse decodes plan.json and validates it. The version is read first,
// so a plan of another format version is refused by its version rather than
// by whatever field failed to decode.
func Parse(data []byte) (*Plan, error) {
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("plan is not valid JSON: %w", err)
	}
	if head.Version == nil {
		return nil, fmt.Errorf("plan has no version (want %d)", Version)
	}
	if *head.Version != Version {
		return nil, fmt.Errorf("plan has format version %d, this runtime reads version %d", *head.Version, Version)
	}
	plan := new(Plan)
	if err := json.Unmarshal(data, plan); err != nil {
		return nil, fmt.Errorf("decoding plan: %w", err)
	}
	if err := Validate(plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// planType is a buffer's tensor type, checked against its byte count.
func planType(b *Buffer) (ir.Type, error) {
	dt, ok := ir.ParseDType(b.DType)
	if !ok {
		return ir.Type{}, fmt.Errorf("buffer %q has unknown dtype %q", b.Name, b.DType)
	}
	n := int64(1)
	for _, d := range b.Shape {
		if d < 0 || (d > 0 && n > ir.MaxElems/int64(d)) {
			return ir.Type{}, fmt.Errorf("buffer %q has an invalid shape %v", b.Name, b.Shape)
		}
		n *= int64(d)
	}
	t := ir.Type{DType: dt, Shape: ir.Shape(b.Shape)}
	if t.Bytes() != b.Bytes {
		return ir.Type{}, fmt.Errorf("buffer %q is %d bytes, but %v takes %d", b.Name, b.Bytes, t, t.Bytes())
	}
	return t, nil
}

// Validate checks that a plan is internally consistent: every buffer
// lies inside its segment, every dispatch launches a declared kernel with one
// argument per kernel parameter, every argument and host step names a
// declared buffer. The first problem found is returned.
func Validate(p *Plan) error {
	if p.Version != Version {
		return fmt.Errorf("plan has format version %d, this runtime reads version %d", p.Version, Version)
	}
	for i, s := range p.Segments {
		if s < 0 {
			return fmt.Errorf("segment %d has negative size %d", i, s)
		}
	}
	bufs := map[string]*Buffer{}
	for i := range p.Buffers {
		b := &p.Buffers[i]
		switch {
		case b.Name == "":
			return fmt.Errorf("buffer %d has no name", i)
		case bufs[b.Name] != nil:
			return fmt.Errorf("buffer %q is declared twice", b.Name)
		case b.Segment < 0 || b.Segment >= len(p.Segments):
			return fmt.Errorf("buffer %q is in segment %d, but the plan has %d segments", b.Name, b.Segment, len(p.Segments))
		case b.Offset < 0 || b.Bytes < 0 || b.Offset > p.Segments[b.Segment]-b.Bytes:
			return fmt.Errorf("buffer %q (bytes %d..%d) lies outside segment %d (%d bytes)",
				b.Name, b.Offset, b.Offset+b.Bytes, b.Segment, p.Segments[b.Segment])
		}
		t, err := planType(b)
		if err != nil {
			return err
		}
		if b.Index != nil && (t.DType.IsFloat() || b.Index.Below < 1) {
			return fmt.Errorf("buffer %q (%v) has an index range below %d: only integer buffers index, and at least one row", b.Name, t, b.Index.Below)
		}
		bufs[b.Name] = b
	}
	kernels := map[string]*Kernel{}
	for i := range p.Kernels {
		k := &p.Kernels[i]
		if kernels[k.Name] != nil {
			return fmt.Errorf("kernel %q is declared twice", k.Name)
		}
		kernels[k.Name] = k
	}
	for i, d := range p.Dispatches {
		k := kernels[d.Kernel]
		if k == nil {
			return fmt.Errorf("dispatch %d launches kernel %q, which the plan does not declare", i, d.Kernel)
		}
		for j := range 3 {
			if d.Groups[j] < 0 || d.Threads[j] < 1 {
				return fmt.Errorf("dispatch %d (%s) has a bad grid: %v groups of %v threads", i, d.Kernel, d.Groups, d.Threads)
			}
		}
		if len(d.Args) != len(k.Params) {
			return fmt.Errorf("dispatch %d (%s) binds %d arguments, the kernel takes %d", i, d.Kernel, len(d.Args), len(k.Params))
		}
		for j, a := range d.Args {
			b := bufs[a.Buffer]
			if b == nil {
				return fmt.Errorf("dispatch %d (%s) argument %d (%s) names buffer %q, which the plan does not declare",
					i, d.Kernel, j, k.Params[j], a.Buffer)
			}
			if a.Offset < 0 || a.Offset > b.Bytes {
				return fmt.Errorf("dispatch %d (%s) argument %d (%s) binds byte %d of buffer %q, which has %d bytes",
					i, d.Kernel, j, k.Params[j], a.Offset, a.Buffer, b.Bytes)
			}
		}
	}
	for _, name := range p.Host.Feed {
		if bufs[name] == nil {
			return fmt.Errorf("host feeds input %q, which has no buffer", name)
		}
	}
	for _, out := range slices.Sorted(maps.Keys(p.Host.Read)) {
		if bufs[p.Host.Read[out]] == nil {
			return fmt.Errorf("host reads output %q from buffer %q, which the plan does not declare", out, p.Host.Read[out])
		}
	}
	last := len(p.Dispatches) - 1
	for _, prm := range slices.Sorted(maps.Keys(p.Host.Updates)) {
		name := p.Host.Updates[prm]
		pb, ub := bufs[prm], bufs[name]
		switch {
		case pb == nil:
			return fmt.Errorf("host updates parameter %q, which has no buffer", prm)
		case ub == nil:
			return fmt.Errorf("the update of %q is in buffer %q, which the plan does not declare", prm, name)
		case pb.DType != ub.DType || pb.Bytes != ub.Bytes:
			return fmt.Errorf("the update of %q (%s, %d bytes) does not match it (%s, %d bytes)", prm, ub.DType, ub.Bytes, pb.DType, pb.Bytes)
		case name != prm && ub.Live[1] < last:
			// The host copies the update after the last dispatch: memory
			// freed earlier may hold something else by then.
			return fmt.Errorf("the update of %q (buffer %q) dies at dispatch %d, before the host copies it back", prm, name, ub.Live[1])
		}
	}
	return nil
}

// Runner runs a plan's step on a device: the arena segments are device
// buffers, each dispatch is resolved once to its kernel and arguments, and
// the host reads and writes tensors by name.
type Runner struct {
	Dev      device.Device
	Plan     *Plan
	segments []device.Buffer
	buffers  map[string]*Buffer
	types    map[string]ir.Type
	launches []launch
	copies   [][2]*Buffer // update → parameter, after each step
}

type launch struct {
	kernel          device.Kernel
	groups, threads [3]int
	args            []device.Arg
}

// NewRunner validates plan, allocates its arena on dev, compiles src
// (kernels.metal) and looks up every kernel the plan declares.
func NewRunner(dev device.Device, plan *Plan, src string) (*Runner, error) {
	if err := Validate(plan); err != nil {
		return nil, err
	}
	r := &Runner{Dev: dev, Plan: plan, buffers: map[string]*Buffer{}, types: map[string]ir.Type{}}
	for i := range plan.Buffers {
		b := &plan.Buffers[i]
		r.buffers[b.Name] = b
		r.types[b.Name], _ = planType(b) // validated above
	}
	for _, size := range plan.Segments {
		// Devices may refuse empty buffers; a few bytes cost nothing.
		buf, err := dev.Alloc(max(size, 16))
		if err != nil {
			return nil, fmt.Errorf("allocating a %d-byte arena segment: %w", size, err)
		}
		r.segments = append(r.segments, buf)
	}
	lib, err := dev.Compile(src)
	if err != nil {
		return nil, err
	}
	kernels := map[string]device.Kernel{}
	for _, k := range plan.Kernels {
		if kernels[k.Name], err = lib.Kernel(k.Name); err != nil {
			return nil, fmt.Errorf("plan kernel %q: %w", k.Name, err)
		}
	}
	for _, d := range plan.Dispatches {
		l := launch{kernel: kernels[d.Kernel], groups: d.Groups, threads: d.Threads}
		for _, a := range d.Args {
			b := r.buffers[a.Buffer]
			l.args = append(l.args, device.BufferArg(r.segments[b.Segment], b.Offset+a.Offset))
		}
		r.launches = append(r.launches, l)
	}
	for _, prm := range slices.Sorted(maps.Keys(plan.Host.Updates)) {
		if u := plan.Host.Updates[prm]; u != prm {
			r.copies = append(r.copies, [2]*Buffer{r.buffers[u], r.buffers[prm]})
		}
	}
	return r, nil
}

// Step runs every dispatch in order, waits for them, and copies each
// parameter update that the plan could not place over its parameter back
// into the parameter's buffer, so the next step reads the new values.
func (r *Runner) Step() error {
	for i, l := range r.launches {
		if err := r.Dev.Dispatch(l.kernel, l.groups, l.threads, l.args); err != nil {
			return fmt.Errorf("dispatch %d (%s): %w", i, r.Plan.Dispatches[i].Kernel, err)
		}
	}
	if err := r.Dev.Sync(); err != nil {
		return err
	}
	for _, c := range r.copies {
		data := make([]byte, c[0].Bytes)
		if err := r.Dev.Read(r.segments[c[0].Segment], c[0].Offset, data); err != nil {
			return err
		}
		if err := r.Dev.Write(r.segments[c[1].Segment], c[1].Offset, data); err != nil {
			return err
		}
	}
	return nil
}

// Inputs are the names of the buffers the host feeds before a step.
func (r *Runner) Inputs() []string { return append([]string(nil), r.Plan.Host.Feed...) }

// Outputs are the names of the step's outputs, sorted.
func (r *Runner) Outputs() []string { return slices.Sorted(maps.Keys(r.Plan.Host.Read)) }

// Params are the names of the parameter buffers (weights and optimizer
// state) in plan order.
func (r *Runner) Params() []string {
	var out []string
	for _, b := range r.Plan.Buffers {
		if b.Role.IsParam() {
			out = append(out, b.Name)
		}
	}
	return out
}

// Buffer describes a buffer by name, or by the name of an output (see Read).
func (r *Runner) Buffer(name string) (Buffer, bool) {
	b, err := r.lookup(name)
	if err != nil {
		return Buffer{}, false
	}
	return *b, true
}

// lookup finds a buffer by name; an output name (a key of host.read) names
// the buffer that holds the output, so "loss" reads the loss.
func (r *Runner) lookup(name string) (*Buffer, error) {
	if b, ok := r.Plan.Host.Read[name]; ok {
		name = b
	}
	b := r.buffers[name]
	if b == nil {
		return nil, fmt.Errorf("the plan has no buffer or output %q", name)
	}
	return b, nil
}

// WriteBytes stores raw bytes in a buffer, in the kernels' layout (see
// Encode); it is the way to write nf4 weights.
func (r *Runner) WriteBytes(name string, data []byte) error {
	b, err := r.lookup(name)
	if err != nil {
		return err
	}
	if int64(len(data)) != b.Bytes {
		return fmt.Errorf("%d bytes for %q, which holds %d (%s%v)", len(data), name, b.Bytes, b.DType, b.Shape)
	}
	if b.Index != nil {
		v, err := Decode(r.types[b.Name], data)
		if err != nil {
			return err
		}
		if err := b.Index.Check(name, b.Shape, v); err != nil {
			return err
		}
	}
	return r.Dev.Write(r.segments[b.Segment], b.Offset, data)
}

// ReadBytes copies a buffer's raw bytes.
func (r *Runner) ReadBytes(name string) ([]byte, error) {
	b, err := r.lookup(name)
	if err != nil {
		return nil, err
	}
	data := make([]byte, b.Bytes)
	if err := r.Dev.Read(r.segments[b.Segment], b.Offset, data); err != nil {
		return nil, err
	}
	return data, nil
}

// WriteFloat32 stores values in a buffer, converted to its dtype (an i32
// buffer takes only whole numbers).
func (r *Runner) WriteFloat32(name string, v []float32) error {
	return r.write(name, len(v), func(i int) float64 { return float64(v[i]) })
}

// WriteInt32 stores values in a buffer, converted to its dtype.
func (r *Runner) WriteInt32(name string, v []int32) error {
	return r.write(name, len(v), func(i int) float64 { return float64(v[i]) })
}

func (r *Runner) write(name string, n int, at func(int) float64) error {
	t, err := r.valueType(name, "write")
	if err != nil {
		return err
	}
	if int64(n) != t.Shape.Elems() {
		return fmt.Errorf("%d values for %q, which holds %d (%v)", n, name, t.Shape.Elems(), t)
	}
	v := make([]float64, n)
	for i := range v {
		x := at(i)
		if t.DType == ir.I32 && (x != math.Trunc(x) || math.Abs(x) > math.MaxInt32) {
			return fmt.Errorf("%q is i32, but value %d is %v", name, i, x)
		}
		v[i] = x
	}
	data, err := Encode(t, v)
	if err != nil {
		return err
	}
	return r.WriteBytes(name, data)
}

// ReadFloat32 reads a buffer (or an output) as float32 values.
func (r *Runner) ReadFloat32(name string) ([]float32, error) {
	v, _, err := r.read(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out, nil
}

// ReadInt32 reads an integer buffer (or output) as int32 values.
func (r *Runner) ReadInt32(name string) ([]int32, error) {
	v, t, err := r.read(name)
	if err != nil {
		return nil, err
	}
	if t.DType.IsFloat() {
		return nil, fmt.Errorf("%q is %v, not an integer tensor", name, t)
	}
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out, nil
}

// Scalar reads a one-element buffer or output ("loss").
func (r *Runner) Scalar(name string) (float64, error) {
	v, t, err := r.read(name)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("%q is %v, not a scalar", name, t)
	}
	return v[0], nil
}

// read decodes a buffer's values.
func (r *Runner) read(name string) ([]float64, ir.Type, error) {
	t, err := r.valueType(name, "read")
	if err != nil {
		return nil, t, err
	}
	data, err := r.ReadBytes(name)
	if err != nil {
		return nil, t, err
	}
	v, err := Decode(t, data)
	return v, t, err
}

// valueType is a buffer's type, refusing nf4 buffers, which hold quantised
// codes rather than values (verb says what was tried).
func (r *Runner) valueType(name, verb string) (ir.Type, error) {
	b, err := r.lookup(name)
	if err != nil {
		return ir.Type{}, err
	}
	t := r.types[b.Name]
	if t.DType == ir.NF4 {
		return t, fmt.Errorf("%q holds nf4 codes: %s them with %sBytes", name, verb, strings.ToUpper(verb[:1])+verb[1:])
	}
	return t, nil
}

// storage names the safetensors dtype of each value dtype: device memory
// holds tensors in the same little-endian layouts as safetensors files.
var storage = map[ir.DType]string{ir.F32: "F32", ir.F16: "F16", ir.BF16: "BF16", ir.I32: "I32", ir.U8: "U8"}

// Encode lays values out as the kernels read them: little-endian f32, f16,
// bf16 (rounded to nearest even) or i32. NF4 weights have their own layout
// (package nf4).
func Encode(t ir.Type, v []float64) ([]byte, error) {
	var st safetensors.Tensor
	var err error
	switch t.DType {
	case ir.I32:
		w := make([]int32, len(v))
		for i, x := range v {
			w[i] = int32(x)
		}
		st, err = safetensors.FromInt32([]int(t.Shape), w)
	case ir.F32, ir.F16, ir.BF16:
		w := make([]float32, len(v))
		for i, x := range v {
			w[i] = float32(x)
		}
		st, err = safetensors.FromFloat32(storage[t.DType], []int(t.Shape), w)
	default:
		return nil, fmt.Errorf("cannot encode %v", t)
	}
	return st.Data, err
}

// Decode is the inverse of Encode.
func Decode(t ir.Type, data []byte) ([]float64, error) {
	if int64(len(data)) != t.Bytes() {
		return nil, fmt.Errorf("%d bytes for %v, want %d", len(data), t, t.Bytes())
	}
	name, ok := storage[t.DType]
	if !ok {
		return nil, fmt.Errorf("cannot decode %v", t)
	}
	return safetensors.Tensor{DType: name, Shape: []int(t.Shape), Data: data}.Float64s()
}
