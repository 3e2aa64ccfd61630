package ref

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestTensorHelpers(t *testing.T) {
	x, err := FromFloat64(ir.T(ir.BF16, 2, 2), []float64{1, math.Pi, -2, 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if x.At(0, 1) != 3.140625 || x.At(1, 0) != -2 {
		t.Fatalf("bf16 values %v", x)
	}
	if err := x.check(ir.T(ir.BF16, 2, 2)); err != nil {
		t.Fatalf("a FromFloat64 tensor fails its own check: %v", err)
	}
	if _, err := FromFloat64(ir.T(ir.F32, 3), []float64{1, 2}); err == nil {
		t.Fatal("2 values for 3 elements: no error")
	}
	if _, err := FromFloat64(ir.T(ir.NF4, 64), make([]float64, 64)); err == nil {
		t.Fatal("nf4 from values: no error")
	}
	if _, err := FromInts([]int{1}, []int{1 << 40}); err == nil {
		t.Fatal("i32 overflow: no error")
	}
	f, _ := FromFloat32(ir.T(ir.F32, 2), []float32{0.1, 2})
	if f.Data[0] != float64(float32(0.1)) || f.Float32()[0] != 0.1 {
		t.Fatalf("FromFloat32/Float32 round trip: %v", f)
	}
	c := f.Clone()
	c.Data[0] = 5
	if f.Data[0] == 5 {
		t.Fatal("Clone shares data")
	}
	if s := Scalar(2.5); !s.Type.Equal(ir.T(ir.F32)) || s.At() != 2.5 {
		t.Fatalf("Scalar: %v", s)
	}
	if got := f.String(); got != "f32[2]{0.10000000149011612 2}" {
		t.Fatalf("String: %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("At out of range did not panic")
		}
	}()
	x.At(2, 0)
}
