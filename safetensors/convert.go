package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

var le = binary.LittleEndian

// Float64s decodes a tensor of any float type, or of an integer type whose
// values are exact in float64 (I64 and U64 fail beyond 2^53).
func (t Tensor) Float64s() ([]float64, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	n := t.NumElements()
	out := make([]float64, n)
	d := t.Data
	for i := range out {
		switch t.DType {
		case "F64":
			out[i] = math.Float64frombits(le.Uint64(d[8*i:]))
		case "F32":
			out[i] = float64(math.Float32frombits(le.Uint32(d[4*i:])))
		case "F16":
			out[i] = float64(halfToFloat32(le.Uint16(d[2*i:])))
		case "BF16":
			out[i] = float64(math.Float32frombits(uint32(le.Uint16(d[2*i:])) << 16))
		case "I32":
			out[i] = float64(int32(le.Uint32(d[4*i:])))
		case "U32":
			out[i] = float64(le.Uint32(d[4*i:]))
		case "I16":
			out[i] = float64(int16(le.Uint16(d[2*i:])))
		case "U16":
			out[i] = float64(le.Uint16(d[2*i:]))
		case "I8":
			out[i] = float64(int8(d[i]))
		case "U8", "BOOL":
			out[i] = float64(d[i])
		case "I64", "U64":
			u := le.Uint64(d[8*i:])
			v := int64(u)
			if t.DType == "U64" && u > math.MaxInt64 || v > 1<<53 || v < -1<<53 {
				return nil, fmt.Errorf("safetensors: %s element %d is not exact in float64", t.DType, i)
			}
			out[i] = float64(v)
		default:
			return nil, fmt.Errorf("safetensors: cannot convert %s to float64", t.DType)
		}
	}
	return out, nil
}

// Float32s decodes F32, F16 and BF16 exactly, F64 rounded to nearest, and
// integer types whose values are exact in float32 (|v| <= 2^24).
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType == "F32" {
		if err := t.check(); err != nil {
			return nil, err
		}
		out := make([]float32, t.NumElements())
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(t.Data[4*i:]))
		}
		return out, nil
	}
	f64, err := t.Float64s()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(f64))
	isFloat := t.DType == "F64" || t.DType == "F16" || t.DType == "BF16"
	for i, v := range f64 {
		if !isFloat && math.Abs(v) > 1<<24 {
			return nil, fmt.Errorf("safetensors: %s element %d (%v) is not exact in float32", t.DType, i, v)
		}
		out[i] = float32(v)
	}
	return out, nil
}

// Int32s decodes an integer tensor whose values fit in int32.
func (t Tensor) Int32s() ([]int32, error) {
	switch t.DType {
	case "I32", "I64", "U64", "U32", "I16", "U16", "I8", "U8", "BOOL":
	default:
		return nil, fmt.Errorf("safetensors: cannot convert %s to int32", t.DType)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	out := make([]int32, t.NumElements())
	for i := range out {
		var v int64
		switch t.DType {
		case "I32":
			v = int64(int32(le.Uint32(t.Data[4*i:])))
		case "U32":
			v = int64(le.Uint32(t.Data[4*i:]))
		case "I64":
			v = int64(le.Uint64(t.Data[8*i:]))
		case "U64":
			u := le.Uint64(t.Data[8*i:])
			v = int64(min(u, math.MaxInt64))
		case "I16":
			v = int64(int16(le.Uint16(t.Data[2*i:])))
		case "U16":
			v = int64(le.Uint16(t.Data[2*i:]))
		case "I8":
			v = int64(int8(t.Data[i]))
		default: // U8, BOOL
			v = int64(t.Data[i])
		}
		if v < math.MinInt32 || v > math.MaxInt32 {
			return nil, fmt.Errorf("safetensors: %s element %d (%d) does not fit in int32", t.DType, i, v)
		}
		out[i] = int32(v)
	}
	return out, nil
}

// FromFloat32 encodes v as dtype F32, F16 or BF16 (rounded to nearest even)
// or F64. It fails if the shape does not hold len(v) elements.
func FromFloat32(dtype string, shape []int, v []float32) (Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return Tensor{}, err
	}
	if n != len(v) {
		return Tensor{}, fmt.Errorf("safetensors: shape %v holds %d elements, got %d", shape, n, len(v))
	}
	size, _ := DTypeSize(dtype)
	t := Tensor{DType: dtype, Shape: append([]int{}, shape...), Data: make([]byte, n*size)}
	for i, x := range v {
		switch dtype {
		case "F32":
			le.PutUint32(t.Data[4*i:], math.Float32bits(x))
		case "F64":
			le.PutUint64(t.Data[8*i:], math.Float64bits(float64(x)))
		case "F16":
			le.PutUint16(t.Data[2*i:], float32ToHalf(x))
		case "BF16":
			le.PutUint16(t.Data[2*i:], float32ToBF16(x))
		default:
			return Tensor{}, fmt.Errorf("safetensors: cannot encode float32 as %q", dtype)
		}
	}
	return t, nil
}

// FromFloat64 encodes v as an F64 tensor.
func FromFloat64(shape []int, v []float64) (Tensor, error) {
	t, err := rawTensor("F64", shape, len(v))
	for i, x := range v {
		le.PutUint64(t.Data[8*i:], math.Float64bits(x))
	}
	return t, err
}

// FromInt32 encodes v as an I32 tensor.
func FromInt32(shape []int, v []int32) (Tensor, error) {
	t, err := rawTensor("I32", shape, len(v))
	for i, x := range v {
		le.PutUint32(t.Data[4*i:], uint32(x))
	}
	return t, err
}

// FromInt64 encodes v as an I64 tensor.
func FromInt64(shape []int, v []int64) (Tensor, error) {
	t, err := rawTensor("I64", shape, len(v))
	for i, x := range v {
		le.PutUint64(t.Data[8*i:], uint64(x))
	}
	return t, err
}

// rawTensor allocates a tensor for count elements; on a shape mismatch it
// still returns a buffer of count elements so callers can fill it
// unconditionally, with the error.
func rawTensor(dtype string, shape []int, count int) (Tensor, error) {
	size, _ := DTypeSize(dtype)
	t := Tensor{DType: dtype, Shape: append([]int{}, shape...), Data: make([]byte, count*size)}
	n, err := numElements(shape)
	if err == nil && n != count {
		err = fmt.Errorf("safetensors: shape %v holds %d elements, got %d", shape, n, count)
	}
	return t, err
}

// halfToFloat32 widens an IEEE binary16 value exactly.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	man := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F: // Inf, NaN
		return math.Float32frombits(sign | 0xFF<<23 | man<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	default: // zero, subnormal: man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(f))
	}
}

// float32ToHalf rounds to the nearest binary16, ties to even.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xFF
	man := b & 0x7FFFFF
	if exp == 0xFF { // Inf, NaN (kept quiet and non-zero)
		if man != 0 {
			return sign | 0x7E00
		}
		return sign | 0x7C00
	}
	e := exp - 127 + 15
	if e >= 0x1F {
		return sign | 0x7C00
	}
	if e <= 0 { // subnormal or zero in half
		if e < -10 {
			return sign
		}
		man |= 1 << 23
		shift := uint(14 - e)
		h := man >> shift
		rem := man & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1FFF
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // may carry into the exponent, up to Inf, which is right
	}
	return sign | uint16(h)
}

// float32ToBF16 rounds to the nearest bfloat16, ties to even, as torch does.
func float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7FFFFFFF > 0x7F800000 { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7FFF + (b>>16)&1) >> 16)
}
