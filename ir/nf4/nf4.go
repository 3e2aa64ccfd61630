// Package nf4 implements 4-bit NormalFloat (NF4) block quantisation the way
// bitsandbytes does it on CUDA (quantize_4bit with quant_type="nf4"),
// optionally with double quantisation of the block scales
// (compress_statistics=True), as used by QLoRA.
//
// Quantisation of a block of BlockSize weights:
//
//	absmax = max |x|                  (fp32; NaN elements are ignored, like fmaxf)
//	v      = x * (1/absmax)           (fp32 reciprocal then multiply, as the kernel does)
//	code   = QuantizeValue(v)         (strict ">" against the 15 fp32 midpoints)
//	w      = Code[code] * absmax      (dequantisation)
//
// Two codes share a byte: the first element of a pair in the high nibble, the
// second in the low nibble. A count that is not a multiple of the block size
// makes a short last block (its absmax covers only the real elements); an odd
// count pads the final low nibble with the code of 0.0 (7), which is what
// bitsandbytes stores there, and Dequantize never reads it.
//
// An all-zero block has absmax 0; 0*(1/0) is NaN, which the comparison tree
// sends to code 0 (-1.0), so it dequantises to -0.0 — bit for bit what
// bitsandbytes produces. Likewise a block whose absmax is so small
// (below about 2.9e-39) that 1/absmax overflows to +Inf maps every nonzero
// weight to ±absmax.
package nf4

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// DefaultBlockSize is the bitsandbytes (and QLoRA) block size.
const DefaultBlockSize = 64

// Code holds the 16 NF4 values, codes 0..15, as the fp32 values bitsandbytes
// uses (dDequantizeNF4 in csrc/kernels.cu).
var Code = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// Midpoints holds the 15 decision thresholds in increasing order, as the fp32
// literals of dQuantizeNF4: code c is chosen when Midpoints[c-1] < v <= Midpoints[c].
var Midpoints = [15]float32{
	-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
	-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
	0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
	0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
}

// QuantizeValue returns the NF4 code of a normalised value. Like bitsandbytes'
// dQuantizeNF4 it compares with strict ">" (a binary search over the sorted
// midpoints), so a value exactly on a midpoint takes the lower code and NaN
// takes code 0.
func QuantizeValue(v float32) uint8 {
	// The code is the number of midpoints v lies strictly above (they are
	// sorted); !(v > m) also holds for NaN, which so gets code 0.
	return uint8(sort.Search(len(Midpoints), func(i int) bool { return !(v > Midpoints[i]) }))
}

// Options configures Quantize. The zero value means block size 64, no
// double quantisation.
type Options struct {
	BlockSize int  // elements per absmax block; 0 means DefaultBlockSize; must be even
	Double    bool // quantise the block absmaxes to 8 bits (compress_statistics=True)
}

// Tensor is an NF4-quantised vector of N elements (a matrix is stored flat,
// row-major, exactly like bitsandbytes flattens it).
type Tensor struct {
	N         int
	BlockSize int
	Double    bool

	Codes []byte // ceil(N/2) bytes, first element of a pair in the high nibble

	// Without double quantisation: one fp32 absmax per block.
	Absmax []float32

	// With double quantisation: absmax[b] = DynamicMap[QAbsmax[b]]*AbsmaxScale[b/256] + Offset.
	QAbsmax     []uint8   // one per block
	AbsmaxScale []float32 // one per DoubleBlockSize blocks
	Offset      float32   // mean of the fp32 absmaxes
}

// ErrBlockSize reports an unusable block size.
var ErrBlockSize = errors.New("nf4: block size must be a positive even number")

func (o Options) blockSize() (int, error) {
	bs := o.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	// Even, so that a byte's two codes never straddle two blocks.
	if bs < 2 || bs%2 != 0 || bs > 1<<20 {
		return 0, fmt.Errorf("%w (got %d)", ErrBlockSize, o.BlockSize)
	}
	return bs, nil
}

func numBlocks(n, bs int) int { return (n + bs - 1) / bs }

// Quantize quantises w to NF4. It only fails on an invalid block size; any
// float input is accepted (non-finite values give non-finite dequantised
// values, as in bitsandbytes).
func Quantize(w []float32, opts Options) (Tensor, error) {
	bs, err := opts.blockSize()
	if err != nil {
		return Tensor{}, err
	}
	n := len(w)
	t := Tensor{N: n, BlockSize: bs, Double: opts.Double, Codes: make([]byte, (n+1)/2)}
	codes, absmax := quantizeBlockwise(w, bs, QuantizeValue)
	for j, c := range codes {
		if j%2 == 0 {
			t.Codes[j/2] = c<<4 | 7 // low nibble: code of the 0.0 pad, overwritten unless N is odd
		} else {
			t.Codes[j/2] = t.Codes[j/2]&0xF0 | c
		}
	}
	if !opts.Double {
		t.Absmax = absmax
		return t, nil
	}
	t.Offset = mean32(absmax)
	centred := make([]float32, len(absmax))
	for i, a := range absmax {
		centred[i] = a - t.Offset
	}
	t.QAbsmax, t.AbsmaxScale = quantizeBlockwise8(centred, DoubleBlockSize)
	return t, nil
}

// mean32 is the fp32 mean. bitsandbytes uses torch's fp32 mean, whose
// summation order is device-specific; a float64 sum rounded once is the
// exact mean to within half an ulp.
func mean32(x []float32) float32 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return float32(s / float64(len(x)))
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// BlockAbsmax returns the fp32 absmax of every block as dequantisation uses
// it (decoded from 8 bits when the tensor is double-quantised).
func (t Tensor) BlockAbsmax() []float32 {
	t.mustValid()
	if !t.Double {
		return append([]float32(nil), t.Absmax...)
	}
	return dequantizeAbsmax(t.QAbsmax, t.AbsmaxScale, t.Offset)
}

func dequantizeAbsmax(q []uint8, scale []float32, offset float32) []float32 {
	out := dequantizeBlockwise8(q, scale, DoubleBlockSize)
	for i := range out {
		out[i] += offset // a separate fp32 add, as bitsandbytes does after dequantize_blockwise
	}
	return out
}

// Dequantize returns the N fp32 weights. t must be valid (as Quantize and
// FromBytes make it); an inconsistent hand-built Tensor panics with the
// Validate error.
func (t Tensor) Dequantize() []float32 {
	out := make([]float32, t.N)
	t.DequantizeInto(out)
	return out
}

// DequantizeInto writes the N weights into dst[:N]; dst must have room for N.
func (t Tensor) DequantizeInto(dst []float32) {
	absmax := t.BlockAbsmax()
	dst = dst[:t.N]
	for j := range dst {
		c := t.Codes[j/2]
		if j%2 == 0 {
			c >>= 4
		} else {
			c &= 0x0F
		}
		dst[j] = Code[c] * absmax[j/t.BlockSize]
	}
}

// Validate checks that the fields are mutually consistent.
func (t Tensor) Validate() error {
	if _, err := (Options{BlockSize: t.BlockSize}).blockSize(); err != nil || t.BlockSize == 0 {
		return fmt.Errorf("%w (got %d)", ErrBlockSize, t.BlockSize)
	}
	if t.N < 0 {
		return fmt.Errorf("nf4: negative element count %d", t.N)
	}
	nb := numBlocks(t.N, t.BlockSize)
	if len(t.Codes) != (t.N+1)/2 {
		return fmt.Errorf("nf4: %d code bytes for %d elements, want %d", len(t.Codes), t.N, (t.N+1)/2)
	}
	if !t.Double {
		if len(t.Absmax) != nb {
			return fmt.Errorf("nf4: %d absmax values for %d blocks", len(t.Absmax), nb)
		}
		if len(t.QAbsmax) != 0 || len(t.AbsmaxScale) != 0 {
			return errors.New("nf4: double-quantisation fields set on a tensor without Double")
		}
		return nil
	}
	if len(t.Absmax) != 0 {
		return errors.New("nf4: fp32 Absmax set on a double-quantised tensor")
	}
	if len(t.QAbsmax) != nb {
		return fmt.Errorf("nf4: %d quantised absmax values for %d blocks", len(t.QAbsmax), nb)
	}
	if want := numBlocks(nb, DoubleBlockSize); len(t.AbsmaxScale) != want {
		return fmt.Errorf("nf4: %d absmax scales for %d blocks, want %d", len(t.AbsmaxScale), nb, want)
	}
	return nil
}

func (t Tensor) mustValid() {
	if err := t.Validate(); err != nil {
		panic(err)
	}
}
