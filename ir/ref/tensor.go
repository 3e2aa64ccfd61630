// Package ref is magc's reference interpreter: it evaluates an ir.Graph in
// float64, one straightforward loop nest per op, and is the oracle every other
// executor (generated kernels on the sim or on Metal) is compared with.
//
// Precision model. f32 math is carried out in float64 and never rounded to
// float32: the oracle is more precise than any executor, and comparisons use
// a tolerance. f16 and bf16 are storage types: every f16/bf16 value (inputs,
// constants, op results, casts) holds a number representable in that format,
// rounded to nearest, ties to even, so the reference sees the same storage
// rounding as a kernel that computes in float and stores half. Integer
// tensors (i32, u8) hold exact integers in Data. NF4 tensors hold their
// quantised form in Q and nothing in Data.
package ref

import (
	"fmt"
	"math"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
)

// Tensor is a value of the reference interpreter: a row-major array of
// float64, or an NF4-quantised weight.
type Tensor struct {
	Type ir.Type
	Data []float64   // Type.Shape.Elems() values, row-major; nil for NF4
	Q    *nf4.Tensor // the quantised weights of an NF4 tensor (flat, row-major)
}

// New returns a zero-filled tensor of type t (an NF4 tensor without weights:
// set Q, or use QuantizeNF4).
func New(t ir.Type) *Tensor {
	t.Shape = t.Shape.Clone()
	if t.DType == ir.NF4 {
		return &Tensor{Type: t}
	}
	return &Tensor{Type: t, Data: make([]float64, t.Shape.Elems())}
}

// FromFloat64 makes a tensor of type t from row-major values, converted to
// t's dtype the way cast converts (f16/bf16 rounded, integers truncated
// toward zero and saturated).
func FromFloat64(t ir.Type, data []float64) (*Tensor, error) {
	if t.DType == ir.NF4 || t.DType == ir.Invalid {
		return nil, fmt.Errorf("ref: cannot build a %v tensor from values (use QuantizeNF4)", t)
	}
	if int64(len(data)) != t.Shape.Elems() {
		return nil, fmt.Errorf("ref: %d values for %v (%d elements)", len(data), t, t.Shape.Elems())
	}
	out := New(t)
	for i, x := range data {
		out.Data[i] = Convert(t.DType, x)
	}
	return out, nil
}

// FromFloat32 is FromFloat64 for float32 data.
func FromFloat32(t ir.Type, data []float32) (*Tensor, error) {
	d := make([]float64, len(data))
	for i, x := range data {
		d[i] = float64(x)
	}
	return FromFloat64(t, d)
}

// FromInts makes an i32 tensor of the given shape.
func FromInts(shape []int, data []int) (*Tensor, error) {
	t := ir.T(ir.I32, shape...)
	if int64(len(data)) != t.Shape.Elems() {
		return nil, fmt.Errorf("ref: %d values for %v (%d elements)", len(data), t, t.Shape.Elems())
	}
	out := New(t)
	for i, x := range data {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("ref: value %d at %d does not fit i32", x, i)
		}
		out.Data[i] = float64(x)
	}
	return out, nil
}

// Scalar is an f32 scalar.
func Scalar(x float64) *Tensor { return &Tensor{Type: ir.T(ir.F32), Data: []float64{x}} }

// QuantizeNF4 quantises row-major f32 weights of the given shape the way a
// FrozenNF4 parameter is stored: block 64, double quantisation.
func QuantizeNF4(shape []int, w []float32) (*Tensor, error) {
	t := ir.T(ir.NF4, shape...)
	if int64(len(w)) != t.Shape.Elems() {
		return nil, fmt.Errorf("ref: %d values for %v (%d elements)", len(w), t, t.Shape.Elems())
	}
	q, err := nf4.Quantize(w, nf4.Options{BlockSize: nf4.DefaultBlockSize, Double: true})
	if err != nil {
		return nil, err
	}
	return &Tensor{Type: t, Q: &q}, nil
}

// Float32 returns the values rounded to float32 (the dequantised weights of
// an NF4 tensor), e.g. to upload them to a device.
func (t *Tensor) Float32() []float32 {
	if t.Type.DType == ir.NF4 {
		if t.Q == nil || t.Q.Validate() != nil {
			return nil
		}
		return t.Q.Dequantize()
	}
	out := make([]float32, len(t.Data))
	for i, x := range t.Data {
		out[i] = float32(x)
	}
	return out
}

// Ints returns the values as ints (for i32 and u8 tensors).
func (t *Tensor) Ints() []int {
	out := make([]int, len(t.Data))
	for i, x := range t.Data {
		out[i] = int(x)
	}
	return out
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	c := &Tensor{Type: ir.Type{DType: t.Type.DType, Shape: t.Type.Shape.Clone()}}
	if t.Data != nil {
		c.Data = append([]float64(nil), t.Data...)
	}
	if t.Q != nil {
		q := *t.Q
		q.Codes = append([]byte(nil), q.Codes...)
		q.Absmax = append([]float32(nil), q.Absmax...)
		q.QAbsmax = append([]uint8(nil), q.QAbsmax...)
		q.AbsmaxScale = append([]float32(nil), q.AbsmaxScale...)
		c.Q = &q
	}
	return c
}

// At returns the element at a full index. Like a slice access it panics on a
// wrong index: it is a helper for tests and tools, not used by Eval.
func (t *Tensor) At(idx ...int) float64 {
	s := t.Type.Shape
	if len(idx) != len(s) {
		panic(fmt.Sprintf("ref: At%v on %v: need %d indices", idx, t.Type, len(s)))
	}
	off := 0
	for i, x := range idx {
		if x < 0 || x >= s[i] {
			panic(fmt.Sprintf("ref: At%v out of range for %v", idx, t.Type))
		}
		off = off*s[i] + x
	}
	return t.Data[off]
}

// String prints the type and up to 16 values, for test failures.
func (t *Tensor) String() string {
	if t == nil {
		return "<nil>"
	}
	var sb strings.Builder
	sb.WriteString(t.Type.String())
	if t.Type.DType == ir.NF4 {
		return sb.String() + "{nf4}"
	}
	sb.WriteString("{")
	for i, x := range t.Data {
		if i == 16 {
			sb.WriteString(" …")
			break
		}
		if i > 0 {
			sb.WriteString(" ")
		}
		fmt.Fprintf(&sb, "%g", x)
	}
	sb.WriteString("}")
	return sb.String()
}

// check reports whether t is a well-formed value of type want: the declared
// type, the right number of elements, and values representable in the dtype.
func (t *Tensor) check(want ir.Type) error {
	if t == nil {
		return fmt.Errorf("is nil")
	}
	if !t.Type.Equal(want) {
		return fmt.Errorf("has type %v, want %v", t.Type, want)
	}
	n := want.Shape.Elems()
	if want.DType == ir.NF4 {
		if t.Q == nil {
			return fmt.Errorf("is an nf4 tensor without quantised weights (Q is nil)")
		}
		if err := t.Q.Validate(); err != nil {
			return err
		}
		if int64(t.Q.N) != n {
			return fmt.Errorf("holds %d quantised weights, %v has %d", t.Q.N, want, n)
		}
		return nil
	}
	if int64(len(t.Data)) != n {
		return fmt.Errorf("has %d values, %v has %d", len(t.Data), want, n)
	}
	for i, x := range t.Data {
		if c := Convert(want.DType, x); c != x && !(math.IsNaN(x) && math.IsNaN(c)) {
			return fmt.Errorf("value %g at %d is not representable in %v (nearest %g)", x, i, want.DType, c)
		}
	}
	return nil
}

// strides returns row-major strides of s.
func strides(s ir.Shape) []int {
	st := make([]int, len(s))
	n := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = n
		n *= s[i]
	}
	return st
}
