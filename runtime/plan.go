package runtime

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// This file runs a compiled step from its two artefacts alone, kernels.metal
// and plan.json, without the compiler: what `magc compile -o` writes and what
// a generated Go package embeds.

// LoadPlan reads and validates dir/plan.json and reads dir/kernels.metal.
func LoadPlan(dir string) (*codegen.Plan, string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "plan.json"))
	if err != nil {
		return nil, "", err
	}
	plan, err := ParsePlan(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", filepath.Join(dir, "plan.json"), err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "kernels.metal"))
	if err != nil {
		return nil, "", err
	}
	return plan, string(src), nil
}

// ParsePlan decodes plan.json and validates it. The version is read first,
// so a plan of another format version is refused by its version rather than
// by whatever field failed to decode.
func ParsePlan(data []byte) (*codegen.Plan, error) {
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("plan is not valid JSON: %w", err)
	}
	if head.Version == nil {
		return nil, fmt.Errorf("plan has no version (want %d)", codegen.PlanVersion)
	}
	if *head.Version != codegen.PlanVersion {
		return nil, fmt.Errorf("plan has format version %d, this runtime reads version %d", *head.Version, codegen.PlanVersion)
	}
	plan := new(codegen.Plan)
	if err := json.Unmarshal(data, plan); err != nil {
		return nil, fmt.Errorf("decoding plan: %w", err)
	}
	if err := ValidatePlan(plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// paramRoles are the roles of buffers that hold parameters (weights and
// optimizer state): what survives from one step to the next.
var paramRoles = map[string]bool{"trainable": true, "weight": true, "nf4": true, "opt_state": true}

// planType is a buffer's tensor type, checked against its byte count.
func planType(b *codegen.PlanBuffer) (ir.Type, error) {
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

// ValidatePlan checks that a plan is internally consistent: every buffer
// lies inside its segment, every dispatch launches a declared kernel with one
// argument per kernel parameter, every argument and host step names a
// declared buffer. The first problem found is returned.
func ValidatePlan(p *codegen.Plan) error {
	if p.Version != codegen.PlanVersion {
		return fmt.Errorf("plan has format version %d, this runtime reads version %d", p.Version, codegen.PlanVersion)
	}
	for i, s := range p.Segments {
		if s < 0 {
			return fmt.Errorf("segment %d has negative size %d", i, s)
		}
	}
	bufs := map[string]*codegen.PlanBuffer{}
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
		if _, err := planType(b); err != nil {
			return err
		}
		bufs[b.Name] = b
	}
	kernels := map[string]*codegen.PlanKernel{}
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
	for _, out := range sortedKeys(p.Host.Read) {
		if bufs[p.Host.Read[out]] == nil {
			return fmt.Errorf("host reads output %q from buffer %q, which the plan does not declare", out, p.Host.Read[out])
		}
	}
	last := len(p.Dispatches) - 1
	for _, prm := range sortedKeys(p.Host.Updates) {
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

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// PlanRunner runs a plan's step on a device: the arena segments are device
// buffers, each dispatch is resolved once to its kernel and arguments, and
// the host reads and writes tensors by name.
type PlanRunner struct {
	Dev      Device
	Plan     *codegen.Plan
	segments []Buffer
	buffers  map[string]*codegen.PlanBuffer
	types    map[string]ir.Type
	launches []launch
	copies   [][2]*codegen.PlanBuffer // update → parameter, after each step
}

type launch struct {
	kernel          Kernel
	groups, threads [3]int
	args            []Arg
}

// NewPlanRunner validates plan, allocates its arena on dev, compiles src
// (kernels.metal) and looks up every kernel the plan declares.
func NewPlanRunner(dev Device, plan *codegen.Plan, src string) (*PlanRunner, error) {
	if err := ValidatePlan(plan); err != nil {
		return nil, err
	}
	r := &PlanRunner{Dev: dev, Plan: plan, buffers: map[string]*codegen.PlanBuffer{}, types: map[string]ir.Type{}}
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
	kernels := map[string]Kernel{}
	for _, k := range plan.Kernels {
		if kernels[k.Name], err = lib.Kernel(k.Name); err != nil {
			return nil, fmt.Errorf("plan kernel %q: %w", k.Name, err)
		}
	}
	for _, d := range plan.Dispatches {
		l := launch{kernel: kernels[d.Kernel], groups: d.Groups, threads: d.Threads}
		for _, a := range d.Args {
			b := r.buffers[a.Buffer]
			l.args = append(l.args, BufferArg(r.segments[b.Segment], b.Offset+a.Offset))
		}
		r.launches = append(r.launches, l)
	}
	for _, prm := range sortedKeys(plan.Host.Updates) {
		if u := plan.Host.Updates[prm]; u != prm {
			r.copies = append(r.copies, [2]*codegen.PlanBuffer{r.buffers[u], r.buffers[prm]})
		}
	}
	return r, nil
}

// Step runs every dispatch in order, waits for them, and copies each
// parameter update that the plan could not place over its parameter back
// into the parameter's buffer, so the next step reads the new values.
func (r *PlanRunner) Step() error {
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
func (r *PlanRunner) Inputs() []string { return append([]string(nil), r.Plan.Host.Feed...) }

// Outputs are the names of the step's outputs, sorted.
func (r *PlanRunner) Outputs() []string { return sortedKeys(r.Plan.Host.Read) }

// Params are the names of the parameter buffers (weights and optimizer
// state) in plan order.
func (r *PlanRunner) Params() []string {
	var out []string
	for _, b := range r.Plan.Buffers {
		if paramRoles[b.Role] {
			out = append(out, b.Name)
		}
	}
	return out
}

// Buffer describes a buffer by name, or by the name of an output (see Read).
func (r *PlanRunner) Buffer(name string) (codegen.PlanBuffer, bool) {
	b, err := r.lookup(name)
	if err != nil {
		return codegen.PlanBuffer{}, false
	}
	return *b, true
}

// lookup finds a buffer by name; an output name (a key of host.read) names
// the buffer that holds the output, so "loss" reads the loss.
func (r *PlanRunner) lookup(name string) (*codegen.PlanBuffer, error) {
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
func (r *PlanRunner) WriteBytes(name string, data []byte) error {
	b, err := r.lookup(name)
	if err != nil {
		return err
	}
	if int64(len(data)) != b.Bytes {
		return fmt.Errorf("%d bytes for %q, which holds %d (%s%v)", len(data), name, b.Bytes, b.DType, b.Shape)
	}
	return r.Dev.Write(r.segments[b.Segment], b.Offset, data)
}

// ReadBytes copies a buffer's raw bytes.
func (r *PlanRunner) ReadBytes(name string) ([]byte, error) {
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
func (r *PlanRunner) WriteFloat32(name string, v []float32) error {
	return r.write(name, len(v), func(i int) float64 { return float64(v[i]) })
}

// WriteInt32 stores values in a buffer, converted to its dtype.
func (r *PlanRunner) WriteInt32(name string, v []int32) error {
	return r.write(name, len(v), func(i int) float64 { return float64(v[i]) })
}

func (r *PlanRunner) write(name string, n int, at func(int) float64) error {
	t, err := r.tensor(name)
	if err != nil {
		return err
	}
	if int64(n) != int64(len(t.Data)) {
		return fmt.Errorf("%d values for %q, which holds %d (%v)", n, name, len(t.Data), t.Type)
	}
	for i := range t.Data {
		x := at(i)
		if t.Type.DType == ir.I32 && (x != math.Trunc(x) || math.Abs(x) > math.MaxInt32) {
			return fmt.Errorf("%q is i32, but value %d is %v", name, i, x)
		}
		t.Data[i] = x
	}
	data, err := Encode(t)
	if err != nil {
		return err
	}
	return r.WriteBytes(name, data)
}

// ReadFloat32 reads a buffer (or an output) as float32 values.
func (r *PlanRunner) ReadFloat32(name string) ([]float32, error) {
	t, err := r.read(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(t.Data))
	for i, x := range t.Data {
		out[i] = float32(x)
	}
	return out, nil
}

// ReadInt32 reads an integer buffer (or output) as int32 values.
func (r *PlanRunner) ReadInt32(name string) ([]int32, error) {
	t, err := r.read(name)
	if err != nil {
		return nil, err
	}
	if t.Type.DType.IsFloat() {
		return nil, fmt.Errorf("%q is %v, not an integer tensor", name, t.Type)
	}
	out := make([]int32, len(t.Data))
	for i, x := range t.Data {
		out[i] = int32(x)
	}
	return out, nil
}

// Scalar reads a one-element buffer or output ("loss").
func (r *PlanRunner) Scalar(name string) (float64, error) {
	t, err := r.read(name)
	if err != nil {
		return 0, err
	}
	if len(t.Data) != 1 {
		return 0, fmt.Errorf("%q is %v, not a scalar", name, t.Type)
	}
	return t.Data[0], nil
}

func (r *PlanRunner) read(name string) (*ref.Tensor, error) {
	b, err := r.lookup(name)
	if err != nil {
		return nil, err
	}
	if r.types[b.Name].DType == ir.NF4 {
		return nil, fmt.Errorf("%q holds nf4 codes: read them with ReadBytes", name)
	}
	data, err := r.ReadBytes(name)
	if err != nil {
		return nil, err
	}
	return Decode(r.types[b.Name], data)
}

// tensor returns a zero tensor of a buffer's type, refusing nf4 buffers,
// which hold quantised codes rather than values.
func (r *PlanRunner) tensor(name string) (*ref.Tensor, error) {
	b, err := r.lookup(name)
	if err != nil {
		return nil, err
	}
	t := r.types[b.Name]
	if t.DType == ir.NF4 {
		return nil, fmt.Errorf("%q holds nf4 codes: write them with WriteBytes", name)
	}
	return ref.New(t), nil
}
