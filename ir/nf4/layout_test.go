package nf4

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

func TestBitsPerParam(t *testing.T) {
	if got := BitsPerParam(64, false); got != 4.5 {
		t.Errorf("without double: %v, want 4.5", got)
	}
	// 4 + 8/64 + 32/(64*256) = 4.126953125 (docs/maths.md, Double quantisation)
	if got := BitsPerParam(64, true); got != 4.126953125 {
		t.Errorf("with double: %v, want 4.126953125", got)
	}
	// Large tensors approach the figures; alignment adds a few bytes only.
	n := 64 * 256 * 1024
	for _, double := range []bool{false, true} {
		got := float64(StorageBytes(n, double)) * 8 / float64(n)
		if math.Abs(got-BitsPerParam(64, double)) > 1e-4 {
			t.Errorf("double=%v: %v bits/param, want %v", double, got, BitsPerParam(64, double))
		}
	}
}

func TestStorageBytesExact(t *testing.T) {
	cases := []struct {
		n      int
		double bool
		want   int64
	}{
		{0, false, 0},
		{0, true, 16},       // the offset alone
		{1, false, 32},      // 1 code byte, pad to 16, 4 absmax bytes, pad to 32
		{64, false, 48},     // 32 code bytes, 4 absmax bytes at 32, pad
		{128, false, 80},    // 64 + 8 -> 80
		{64, true, 80},      // codes 32 | qabsmax 1 at 32 | scale 4 at 48 | offset 4 at 64
		{16384, true, 8480}, // codes 8192 | qabsmax 256 at 8192 | scale at 8448 | offset at 8464
		{16385, true, 8512}, // 8193 codes | 257 qabsmax at 8208 | 2 scales at 8480 | offset at 8496
	}
	for _, c := range cases {
		if got := StorageBytes(c.n, c.double); got != c.want {
			t.Errorf("StorageBytes(%d, %v) = %d, want %d", c.n, c.double, got, c.want)
		}
	}
	if StorageBytes(-1, false) != 0 {
		t.Error("negative n")
	}
	l, _ := NewLayout(16385, 64, true)
	if l.QAbsmax.Off != 8208 || l.Scales.Off != 8480 || l.Offset.Off != 8496 || l.Size != 8512 {
		t.Errorf("layout %+v", l)
	}
}

func TestBytesRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 64*256 + 3} {
		for _, double := range []bool{false, true} {
			w := normalWeights(n, uint64(n))
			q := mustQuantize(t, w, Options{Double: double})
			b := q.Bytes()
			l, err := q.Layout()
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != l.Size || l.Size != StorageBytes(n, double) || l.Size%SectionAlign != 0 {
				t.Fatalf("n=%d: %d bytes, layout %d", n, len(b), l.Size)
			}
			for _, s := range []Section{l.Codes, l.Absmax, l.QAbsmax, l.Scales, l.Offset} {
				if s.Off%SectionAlign != 0 {
					t.Errorf("section %+v not aligned", s)
				}
			}
			back, err := FromBytes(b, n, 64, double)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Bytes(), b) {
				t.Fatalf("n=%d double=%v: re-encoding differs", n, double)
			}
			d1, d2 := q.Dequantize(), back.Dequantize()
			for i := range d1 {
				if math.Float32bits(d1[i]) != math.Float32bits(d2[i]) {
					t.Fatalf("n=%d: element %d differs after FromBytes", n, i)
				}
			}
		}
	}
}

func TestBytesSections(t *testing.T) {
	w := []float32{Code[3] * 2, Code[12] * 2, 2}
	q := mustQuantize(t, w, Options{Double: true})
	b := q.Bytes()
	l, _ := q.Layout()
	if b[0] != 0x3C || b[1] != 0xF7 {
		t.Errorf("codes % x", b[:2])
	}
	if b[l.QAbsmax.Off] != q.QAbsmax[0] {
		t.Error("qabsmax byte")
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(b[l.Offset.Off:])); got != q.Offset || got != 2 {
		t.Errorf("offset %v", got)
	}
	for i := l.Codes.End(); i < l.QAbsmax.Off; i++ {
		if b[i] != 0 {
			t.Fatal("padding not zero")
		}
	}
}

func TestFromBytesErrors(t *testing.T) {
	q := mustQuantize(t, normalWeights(100, 1), Options{})
	b := q.Bytes()
	if _, err := FromBytes(b[:len(b)-1], 100, 64, false); err == nil {
		t.Error("short buffer accepted")
	}
	if _, err := FromBytes(b, 100, 64, true); err == nil {
		t.Error("wrong variant accepted")
	}
	if _, err := FromBytes(b, -1, 64, false); err == nil {
		t.Error("negative n accepted")
	}
	if _, err := FromBytes(b, 100, 7, false); err == nil {
		t.Error("odd block size accepted")
	}
}

func TestValidate(t *testing.T) {
	q := mustQuantize(t, normalWeights(100, 1), Options{})
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := q
	bad.Codes = bad.Codes[:10]
	if bad.Validate() == nil {
		t.Error("short codes accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("Dequantize of an invalid tensor did not panic")
		}
	}()
	bad.Dequantize()
}
