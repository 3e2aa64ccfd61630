package runtime

import (
	"fmt"
	"slices"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/runtime/safetensors"
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
		return ref.QuantizeNF4(want.Shape, v)
	default:
		if !isFloat(st.DType) {
			return nil, fmt.Errorf("%s: the model needs %v values, got dtype %s", name, want.DType, st.DType)
		}
		v, err := st.Float64s()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		return ref.FromFloat64(want, v)
	}
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
