package nf4

import (
	"encoding/binary"
	"math"
	"testing"
)

// FuzzQuantize: any input quantises without panicking, round-trips through
// the flat layout, and finite input stays within half the widest code gap
// times the block absmax.
func FuzzQuantize(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 192}, uint8(1), false)
	f.Add(make([]byte, 400), uint8(32), true)
	f.Fuzz(func(t *testing.T, data []byte, half uint8, double bool) {
		w := make([]float32, len(data)/4)
		finite := true
		for i := range w {
			w[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			if math.IsNaN(float64(w[i])) || math.IsInf(float64(w[i]), 0) {
				finite = false
			}
		}
		bs := 2 * (int(half) + 1)
		q, err := Quantize(w, Options{BlockSize: bs, Double: double})
		if err != nil {
			t.Fatal(err)
		}
		back, err := FromBytes(q.Bytes(), len(w), bs, double)
		if err != nil {
			t.Fatal(err)
		}
		_ = back.Dequantize()
		if finite {
			checkBound(t, w, q)
		}
	})
}
