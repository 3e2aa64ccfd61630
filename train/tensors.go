package train

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/safetensors"
)

// FromSafetensors converts a stored tensor to a reference tensor of type
// want, refusing a shape or dtype that does not fit. An f32 tensor is
// accepted for an NF4 parameter and quantised (block 64, double quantisation).
func FromSafetensors(name string, st safetensors.Tensor, want ir.Type) (*ref.Tensor, error) {
	if !slices.Equal(st.Shape, []int(want.Shape)) {
		return nil, fmt.Errorf("%s: shape %v, the model needs %v", name, ir.Shape(st.Shape), want.Shape)
	}
	switch want.DType {
	case ir.I32:
		v, err := st.Int32s()
		if err != nil {
			return nil, fmt.Errorf("%s: the model needs integers (i32): %v", name, err)
		}
		data := make([]float64, len(v))
		for i, x := range v {
			data[i] = float64(x)
		}
		return ref.FromFloat64(want, data)
	case ir.NF4:
		v, err := st.Float32s()
		if err != nil || !isFloat(st.DType) {
			return nil, fmt.Errorf("%s: an NF4 weight is loaded from float values, got %s", name, st.DType)
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%s: element %d is %v: a weight must be a finite number", name, i, x)
			}
		}
		return ref.QuantizeNF4(want.Shape, v)
	default:
		if !isFloat(st.DType) {
			return nil, fmt.Errorf("%s: the model needs %v values, got dtype %s", name, want.DType, st.DType)
		}
		v, err := st.Float64s()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		if err := checkValues(name, v); err != nil {
			return nil, err
		}
		return ref.FromFloat64(want, v)
	}
}

// checkValues refuses NaN and ±Inf, and negative Adam second moments
// (their square root divides the update), naming the tensor and element.
func checkValues(name string, v []float64) error {
	second := strings.HasSuffix(name, ".adam_v")
	for i, x := range v {
		switch {
		case math.IsNaN(x) || math.IsInf(x, 0):
			return fmt.Errorf("%s: element %d is %v: every value must be a finite number", name, i, x)
		case second && x < 0:
			return fmt.Errorf("%s: element %d is %v: an Adam second moment (a running mean of squares) cannot be negative", name, i, x)
		}
	}
	return nil
}

func isFloat(dtype string) bool {
	switch dtype {
	case "F64", "F32", "F16", "BF16":
		return true
	}
	return false
}

// ToSafetensors stores a reference tensor: integers as I32, floats as F32,
// NF4 weights dequantised to F32.
func ToSafetensors(t *ref.Tensor) (safetensors.Tensor, error) {
	shape := []int(t.Type.Shape)
	switch t.Type.DType {
	case ir.I32:
		v := make([]int32, len(t.Data))
		for i, x := range t.Data {
			v[i] = int32(x)
		}
		return safetensors.FromInt32(shape, v)
	case ir.NF4:
		return safetensors.FromFloat32("F32", shape, t.Q.Dequantize())
	}
	return safetensors.FromFloat32("F32", shape, t.Float32())
}

// Encode lays a tensor out as the kernels read it: values as plan.Encode
// does, NF4 weights in package nf4's flat layout.
func Encode(t *ref.Tensor) ([]byte, error) {
	if t.Type.DType == ir.NF4 {
		if t.Q == nil {
			return nil, fmt.Errorf("nf4 tensor %v has no weights", t.Type)
		}
		return t.Q.Bytes(), nil
	}
	return plan.Encode(t.Type, t.Data)
}

// Decode is the inverse of Encode.
func Decode(typ ir.Type, data []byte) (*ref.Tensor, error) {
	if typ.DType == ir.NF4 {
		if int64(len(data)) != typ.Bytes() {
			return nil, fmt.Errorf("%d bytes for %v, want %d", len(data), typ, typ.Bytes())
		}
		q, err := nf4.FromBytes(data, int(typ.Shape.Elems()), nf4.DefaultBlockSize, true)
		if err != nil {
			return nil, err
		}
		return &ref.Tensor{Type: typ, Q: &q}, nil
	}
	v, err := plan.Decode(typ, data)
	if err != nil {
		return nil, err
	}
	return &ref.Tensor{Type: typ, Data: v}, nil
}
