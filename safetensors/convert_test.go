package safetensors

import (
	"math"
	"strings"
	"testing"
)

func TestHalfConversions(t *testing.T) {
	known := map[uint16]float32{
		0x3C00: 1, 0xC000: -2, 0x7BFF: 65504, 0x0001: 1.0 / (1 << 24), 0x0400: 1.0 / (1 << 14),
		0x3555: 0.33325195, 0x8000: float32(math.Copysign(0, -1)), 0x7C00: float32(math.Inf(1)),
	}
	for h, f := range known {
		if got := halfToFloat32(h); math.Float32bits(got) != math.Float32bits(f) {
			t.Errorf("half %04x -> %v, want %v", h, got, f)
		}
	}
	// Every half value survives a round trip through float32.
	for h := 0; h < 1<<16; h++ {
		f := halfToFloat32(uint16(h))
		if f != f {
			if back := float32ToHalf(f); back&0x7C00 != 0x7C00 || back&0x3FF == 0 {
				t.Fatalf("NaN %04x -> %04x", h, back)
			}
			continue
		}
		if back := float32ToHalf(f); back != uint16(h) {
			t.Fatalf("half %04x -> %v -> %04x", h, f, back)
		}
	}
	// Rounding to nearest, ties to even, overflow and underflow.
	rounding := map[float32]uint16{
		1 + 1.0/2048: 0x3C00, 1 + 3.0/2048: 0x3C02, 1 + 1.0/2048 + 1.0/(1<<20): 0x3C01,
		65520: 0x7C00, 65519: 0x7BFF, 1.0 / (1 << 25): 0x0000, 1.5 / (1 << 25): 0x0001, 3.0 / (1 << 25): 0x0002,
	}
	for f, want := range rounding {
		if got := float32ToHalf(f); got != want {
			t.Errorf("float32ToHalf(%v) = %04x, want %04x", f, got, want)
		}
	}
}

func TestBF16Conversions(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := math.Float32frombits(uint32(h) << 16)
		if f != f {
			continue
		}
		if back := float32ToBF16(f); back != uint16(h) {
			t.Fatalf("bf16 %04x -> %04x", h, back)
		}
	}
	rounding := map[uint32]uint16{0x3F808000: 0x3F80, 0x3F818000: 0x3F82, 0x3F808001: 0x3F81, 0x7F7FFFFF: 0x7F80}
	for b, want := range rounding {
		if got := float32ToBF16(math.Float32frombits(b)); got != want {
			t.Errorf("float32ToBF16(%08x) = %04x, want %04x", b, got, want)
		}
	}
	if got := float32ToBF16(float32(math.NaN())); got&0x7F80 != 0x7F80 || got&0x7F == 0 {
		t.Errorf("NaN -> %04x", got)
	}
}

func TestFloatHelpers(t *testing.T) {
	v := []float32{1, -2.5, 0.1, 65504}
	for _, dt := range []string{"F32", "F64", "F16", "BF16"} {
		tn, err := FromFloat32(dt, []int{2, 2}, v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tn.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		tol := map[string]float64{"F32": 0, "F64": 0, "F16": 1e-3, "BF16": 4e-3}[dt]
		for i := range v {
			if math.Abs(float64(got[i]-v[i])) > tol*math.Abs(float64(v[i])) {
				t.Errorf("%s: %v -> %v", dt, v[i], got[i])
			}
		}
		g64, _ := tn.Float64s()
		if float32(g64[1]) != got[1] {
			t.Errorf("%s: Float64s and Float32s disagree", dt)
		}
	}
	if _, err := FromFloat32("F32", []int{3}, v); err == nil {
		t.Error("shape mismatch accepted")
	}
	if _, err := FromFloat32("I32", []int{4}, v); err == nil {
		t.Error("float32 encoded as I32")
	}
	f64, _ := FromFloat64([]int{1}, []float64{0.1})
	if got, _ := f64.Float32s(); got[0] != float32(0.1) {
		t.Errorf("F64 -> F32 rounding: %v", got[0])
	}
}

func TestIntHelpers(t *testing.T) {
	i32, _ := FromInt32([]int{3}, []int32{-7, 0, math.MaxInt32})
	if got, err := i32.Int32s(); err != nil || got[0] != -7 || got[2] != math.MaxInt32 {
		t.Errorf("I32: %v %v", got, err)
	}
	if got, err := i32.Float64s(); err != nil || got[0] != -7 {
		t.Errorf("I32 -> F64: %v %v", got, err)
	}
	if _, err := i32.Float32s(); err == nil || !strings.Contains(err.Error(), "not exact in float32") {
		t.Errorf("MaxInt32 as float32: %v", err)
	}
	i64, _ := FromInt64([]int{2}, []int64{5, 1 << 40})
	if _, err := i64.Int32s(); err == nil || !strings.Contains(err.Error(), "does not fit in int32") {
		t.Errorf("I64 overflow: %v", err)
	}
	if got, err := i64.Float64s(); err != nil || got[1] != 1<<40 {
		t.Errorf("I64 -> F64: %v %v", got, err)
	}
	big, _ := FromInt64([]int{1}, []int64{1<<53 + 1})
	if _, err := big.Float64s(); err == nil {
		t.Error("2^53+1 converted to float64")
	}
	u8 := Tensor{DType: "U8", Shape: []int{2}, Data: []byte{0, 255}}
	if got, _ := u8.Int32s(); got[1] != 255 {
		t.Errorf("U8 %v", got)
	}
	if got, _ := u8.Float32s(); got[1] != 255 {
		t.Errorf("U8 %v", got)
	}
	f32, _ := FromFloat32("F32", []int{1}, []float32{1})
	if _, err := f32.Int32s(); err == nil {
		t.Error("F32 converted to int32")
	}
	if _, err := (Tensor{DType: "F32", Shape: []int{2}, Data: make([]byte, 4)}).Float32s(); err == nil {
		t.Error("inconsistent tensor converted")
	}
}
