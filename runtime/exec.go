package runtime

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
	"github.com/scm-magellano/magc/ir/ref"
)

// Placement says where a value lives: a buffer and a byte offset in it.
type Placement func(v *ir.Value) (Buffer, int64, error)

// Executor launches a compiled program's kernels on a device.
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
	out := make([]byte, typ.Bytes())
	for i, x := range t.Data {
		switch typ.DType {
		case ir.F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(float32(x)))
		case ir.I32:
			binary.LittleEndian.PutUint32(out[4*i:], uint32(int32(x)))
		case ir.F16:
			binary.LittleEndian.PutUint16(out[2*i:], f16Bits(x))
		case ir.BF16:
			binary.LittleEndian.PutUint16(out[2*i:], uint16(math.Float32bits(float32(ref.Convert(ir.BF16, x)))>>16))
		case ir.U8:
			out[i] = byte(x)
		default:
			return nil, fmt.Errorf("cannot encode %v", typ)
		}
	}
	return out, nil
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
	t := ref.New(typ)
	for i := range t.Data {
		switch typ.DType {
		case ir.F32:
			t.Data[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
		case ir.I32:
			t.Data[i] = float64(int32(binary.LittleEndian.Uint32(data[4*i:])))
		case ir.F16:
			t.Data[i] = f16Value(binary.LittleEndian.Uint16(data[2*i:]))
		case ir.BF16:
			t.Data[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16))
		case ir.U8:
			t.Data[i] = float64(data[i])
		}
	}
	return t, nil
}

// f16Bits encodes x (already representable, or rounded by ref.Convert) as IEEE binary16.
func f16Bits(x float64) uint16 {
	x = ref.Convert(ir.F16, x)
	bits := math.Float32bits(float32(x))
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case math.IsNaN(x):
		return sign | 0x7e00
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0: // subnormal: value = mant/2^24
		return sign | uint16(math.Abs(x)*(1<<24))
	}
	return sign | uint16(exp)<<10 | uint16(mant>>13)
}

func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp, mant := int(h>>10&0x1f), float64(h&0x3ff)
	switch exp {
	case 0:
		return sign * mant / (1 << 24)
	case 31:
		if mant != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * (1 + mant/1024) * math.Pow(2, float64(exp-15))
}
