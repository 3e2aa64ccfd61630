package runtime

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/runtime/safetensors"
)

// Placement says where a value lives: a buffer and a byte offset in it.
type Placement func(v *ir.Value) (Buffer, int64, error)

// Executor launches a compiled program's kernels on a device one at a time,
// with each value wherever a Placement puts it: how CheckKernels runs every
// kernel on its own. A whole step runs through its plan (PlanRunner), the
// way a plan.json runs without the compiler.
type Executor struct {
	Dev     Device
	Prog    *codegen.Program
	kernels map[string]Kernel
	place   Placement
}

// NewExecutor compiles src (the program's rendered module) on dev.
func NewExecutor(dev Device, prog *codegen.Program, src string, place Placement) (*Executor, error) {
	lib, err := dev.Compile(src)
	if err != nil {
		return nil, err
	}
	x := &Executor{Dev: dev, Prog: prog, kernels: map[string]Kernel{}, place: place}
	for _, k := range prog.Module.Kernels {
		if x.kernels[k.Name], err = lib.Kernel(k.Name); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// resolve follows aliases to the value that owns the memory.
func (x *Executor) resolve(v *ir.Value) *ir.Value {
	if a, ok := x.Prog.Alias[v]; ok {
		return a
	}
	return v
}

// Run launches dispatch i.
func (x *Executor) Run(i int) error {
	d := x.Prog.Dispatches[i]
	args := make([]Arg, len(d.Bindings))
	for j, b := range d.Bindings {
		buf, off, err := x.place(x.resolve(b.Value))
		if err != nil {
			return err
		}
		args[j] = BufferArg(buf, off+b.Offset)
	}
	if err := x.Dev.Dispatch(x.kernels[d.Kernel], d.Groups, d.Threads, args); err != nil {
		return fmt.Errorf("dispatch %d (%s): %w", i, d.Kernel, err)
	}
	return nil
}

// Write stores a reference tensor in v's memory, in v's storage format.
func (x *Executor) Write(v *ir.Value, t *ref.Tensor) error {
	buf, off, err := x.place(x.resolve(v))
	if err != nil {
		return err
	}
	data, err := Encode(t)
	if err != nil {
		return err
	}
	return x.Dev.Write(buf, off, data)
}

// Read loads v's memory as a reference tensor of v's type.
func (x *Executor) Read(v *ir.Value) (*ref.Tensor, error) {
	buf, off, err := x.place(x.resolve(v))
	if err != nil {
		return nil, err
	}
	data := make([]byte, v.Type.Bytes())
	if err := x.Dev.Read(buf, off, data); err != nil {
		return nil, err
	}
	return Decode(v.Type, data)
}

// storage names the safetensors dtype of an IR dtype's bytes: tensors in
// device memory use the same little-endian layouts as safetensors files.
var storage = map[ir.DType]string{ir.F32: "F32", ir.F16: "F16", ir.BF16: "BF16", ir.I32: "I32", ir.U8: "U8"}

// Encode lays a tensor out as the kernels read it: little-endian f32, f16,
// bf16 or i32, and NF4 in package nf4's flat layout.
func Encode(t *ref.Tensor) ([]byte, error) {
	typ := t.Type
	if typ.DType == ir.NF4 {
		if t.Q == nil {
			return nil, fmt.Errorf("nf4 tensor %v has no weights", typ)
		}
		return t.Q.Bytes(), nil
	}
	var st safetensors.Tensor
	var err error
	switch typ.DType {
	case ir.I32:
		v := make([]int32, len(t.Data))
		for i, x := range t.Data {
			v[i] = int32(x)
		}
		st, err = safetensors.FromInt32([]int(typ.Shape), v)
	case ir.F32, ir.F16, ir.BF16:
		st, err = safetensors.FromFloat32(storage[typ.DType], []int(typ.Shape), t.Float32())
	default:
		return nil, fmt.Errorf("cannot encode %v", typ)
	}
	return st.Data, err
}

// Decode is the inverse of Encode.
func Decode(typ ir.Type, data []byte) (*ref.Tensor, error) {
	if int64(len(data)) != typ.Bytes() {
		return nil, fmt.Errorf("%d bytes for %v, want %d", len(data), typ, typ.Bytes())
	}
	if typ.DType == ir.NF4 {
		q, err := nf4.FromBytes(data, int(typ.Shape.Elems()), nf4.DefaultBlockSize, true)
		if err != nil {
			return nil, err
		}
		return &ref.Tensor{Type: typ, Q: &q}, nil
	}
	name, ok := storage[typ.DType]
	if !ok {
		return nil, fmt.Errorf("cannot decode %v", typ)
	}
	v, err := safetensors.Tensor{DType: name, Shape: []int(typ.Shape), Data: data}.Float64s()
	if err != nil {
		return nil, err
	}
	return &ref.Tensor{Type: typ, Data: v}, nil
}
