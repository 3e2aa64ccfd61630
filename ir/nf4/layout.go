package nf4

import (
	"encoding/binary"
	"fmt"
	"math"
)

// SectionAlign is the alignment, in bytes, of every section of the flat
// layout and of its total size, so that fp32 sections can be read with
// vector loads and consecutive tensors stay aligned.
const SectionAlign = 16

// maxElements bounds N so that layout arithmetic cannot overflow.
const maxElements int64 = 1 << 52

// Section is a byte range of the flat layout.
type Section struct{ Off, Len int64 }

// End is the first byte after the section.
func (s Section) End() int64 { return s.Off + s.Len }

// Layout is the flat byte layout of an NF4 tensor, the form the memory
// planner allocates and the Metal kernels read. There is no header: N, the
// block size and Double come from the graph. All multi-byte values are
// little-endian; each section starts at a multiple of SectionAlign and the
// gaps (and the tail up to Size) are zero.
//
//	without Double: [codes | absmax f32 x Blocks]
//	with Double:    [codes | qabsmax u8 x Blocks | scales f32 x ScaleBlocks | offset f32]
//
// codes holds ceil(N/2) bytes, element 2k in the high nibble of byte k and
// element 2k+1 in the low nibble.
type Layout struct {
	N, BlockSize int
	Double       bool
	Blocks       int // ceil(N/BlockSize)
	ScaleBlocks  int // ceil(Blocks/256) when Double, else 0

	Codes   Section
	Absmax  Section // fp32 absmax (without Double)
	QAbsmax Section // u8 absmax codes (with Double)
	Scales  Section // fp32 scale per 256 blocks (with Double)
	Offset  Section // fp32 offset (with Double)

	Size int64 // total bytes, a multiple of SectionAlign
}

func alignUp(x int64) int64 { return (x + SectionAlign - 1) / SectionAlign * SectionAlign }

// NewLayout computes the layout of n elements.
func NewLayout(n, blockSize int, double bool) (Layout, error) {
	bs, err := Options{BlockSize: blockSize}.blockSize()
	if err != nil {
		return Layout{}, err
	}
	if n < 0 || int64(n) > maxElements {
		return Layout{}, fmt.Errorf("nf4: element count %d out of range", n)
	}
	l := Layout{N: n, BlockSize: bs, Double: double, Blocks: numBlocks(n, bs)}
	l.Codes = Section{0, int64(n+1) / 2}
	next := func(length int64, after Section) Section { return Section{alignUp(after.End()), length} }
	if !double {
		l.Absmax = next(4*int64(l.Blocks), l.Codes)
		l.Size = alignUp(l.Absmax.End())
		return l, nil
	}
	l.ScaleBlocks = numBlocks(l.Blocks, DoubleBlockSize)
	l.QAbsmax = next(int64(l.Blocks), l.Codes)
	l.Scales = next(4*int64(l.ScaleBlocks), l.QAbsmax)
	l.Offset = next(4, l.Scales)
	l.Size = alignUp(l.Offset.End())
	return l, nil
}

// StorageBytes is the exact size of the flat layout of n elements with the
// default block size (64); it returns 0 for a negative n.
func StorageBytes(n int, double bool) int64 {
	l, err := NewLayout(n, DefaultBlockSize, double)
	if err != nil {
		return 0
	}
	return l.Size
}

// BitsPerParam is the asymptotic storage cost per weight, alignment aside:
// 4 + 32/B without double quantisation (4.5 for B=64), and
// 4 + 8/B + 32/(256B) with it (about 4.127 for B=64).
func BitsPerParam(blockSize int, double bool) float64 {
	b := float64(blockSize)
	if !double {
		return 4 + 32/b
	}
	return 4 + 8/b + 32/(b*DoubleBlockSize)
}

// Layout returns the layout of t.
func (t Tensor) Layout() (Layout, error) { return NewLayout(t.N, t.BlockSize, t.Double) }

// Bytes serialises t in its flat layout.
func (t Tensor) Bytes() []byte {
	t.mustValid()
	l, err := t.Layout()
	if err != nil {
		panic(err)
	}
	b := make([]byte, l.Size)
	copy(b[l.Codes.Off:], t.Codes)
	if !t.Double {
		putF32s(b[l.Absmax.Off:], t.Absmax)
		return b
	}
	copy(b[l.QAbsmax.Off:], t.QAbsmax)
	putF32s(b[l.Scales.Off:], t.AbsmaxScale)
	putF32s(b[l.Offset.Off:], []float32{t.Offset})
	return b
}

// FromBytes decodes a flat layout of n elements. b must be exactly
// NewLayout(n, blockSize, double).Size bytes; the slices of the result are
// copies.
func FromBytes(b []byte, n, blockSize int, double bool) (Tensor, error) {
	l, err := NewLayout(n, blockSize, double)
	if err != nil {
		return Tensor{}, err
	}
	if int64(len(b)) != l.Size {
		return Tensor{}, fmt.Errorf("nf4: %d bytes for %d elements (block %d, double %v), want %d",
			len(b), n, l.BlockSize, double, l.Size)
	}
	t := Tensor{N: n, BlockSize: l.BlockSize, Double: double}
	t.Codes = append([]byte{}, b[l.Codes.Off:l.Codes.End()]...)
	if !double {
		t.Absmax = getF32s(b[l.Absmax.Off:l.Absmax.End()])
		return t, nil
	}
	t.QAbsmax = append([]byte{}, b[l.QAbsmax.Off:l.QAbsmax.End()]...)
	t.AbsmaxScale = getF32s(b[l.Scales.Off:l.Scales.End()])
	t.Offset = getF32s(b[l.Offset.Off:l.Offset.End()])[0]
	return t, nil
}

func putF32s(dst []byte, v []float32) {
	for i, x := range v {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
	}
}

func getF32s(src []byte) []float32 {
	out := make([]float32, len(src)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	return out
}
