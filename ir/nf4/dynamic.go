package nf4

import (
	"math"
	"sort"
)

// DoubleBlockSize is the block size of the second (8-bit) quantisation of
// the absmaxes, fixed at 256 by bitsandbytes' quantize_4bit.
const DoubleBlockSize = 256

var dynMap = buildDynamicMap()

// DynamicMap returns bitsandbytes' default 8-bit code,
// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
// sorted, 127 negative values down to -0.99296875, 0, and 128 positive values
// up to 1.0.
func DynamicMap() [256]float32 { return dynMap }

// buildDynamicMap follows create_dynamic_map. For exponent i = 0..6 it takes
// the midpoints of torch.linspace(0.1, 1, 2^i+1) (fp32), scales them by
// 10^(i-6) (fp32 multiply) and adds them with both signs; then 0 and 1 are
// appended and the list sorted.
func buildDynamicMap() [256]float32 {
	var data []float32
	for i := 0; i < 7; i++ {
		b := torchLinspace(0.1, 1, 1<<i+1)
		scale := float32(math.Pow(10, float64(i-6)))
		for j := 0; j+1 < len(b); j++ {
			m := (b[j] + b[j+1]) / 2
			data = append(data, scale*m, -(scale * m))
		}
	}
	data = append(data, 0, 1)
	sort.Slice(data, func(a, b int) bool { return data[a] < data[b] })
	var out [256]float32
	copy(out[:], data)
	return out
}

// torchLinspace reproduces the fp32 values of torch.linspace(start, end,
// steps) on an x86-64 CPU (AVX2 kernels), where bitsandbytes builds the map.
// The kernel fills the first half as start+step*i and the second half as
// end-step*(steps-1-i), but vectorised: each run of 8 lanes takes that
// formula (fused multiply-add) at its first index and adds lane*step to it.
// A plain scalar linspace differs from torch in the last bit of several
// entries, which is why this is spelled out (checked against torch 1.13.1
// in the tests).
func torchLinspace(start, end float32, steps int) []float32 {
	const lanes = 8
	out := make([]float32, steps)
	step := (end - start) / float32(steps-1)
	half := steps / 2
	at := func(i int) float32 {
		if i < half {
			return fmaf(step, float32(i), start)
		}
		return fmaf(-step, float32(steps-i-1), end)
	}
	i := 0
	// The vector loop handles whole pairs of vectors; the rest is scalar.
	for vecEnd := steps / (2 * lanes) * (2 * lanes); i < vecEnd; i += lanes {
		base := at(i)
		for l := 0; l < lanes; l++ {
			out[i+l] = base + float32(float32(l)*step)
		}
	}
	for ; i < steps; i++ {
		out[i] = at(i)
	}
	return out
}

func fmaf(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// quantize8 picks the code of x the way bitsandbytes' CUDA dQuantize<0>
// does: a 7-step binary search over the sorted map, then a comparison with
// the fp32 midpoint (a+b)*0.5 of the two candidates. The search always ends
// on an even index, and a value exactly on a midpoint keeps that index, so
// ties go to the even code. NaN gives code 0.
func quantize8(code *[256]float32, x float32) uint8 {
	pivot, lo, hi := 127, 0, 255
	for step := 64; step > 0; step >>= 1 {
		if x > code[pivot] {
			lo = pivot
			pivot += step
		} else {
			hi = pivot
			pivot -= step
		}
	}
	val := code[pivot]
	if x > val {
		if x > (code[hi]+val)*0.5 {
			return uint8(hi)
		}
		return uint8(pivot)
	}
	if x < (code[lo]+val)*0.5 {
		return uint8(lo)
	}
	return uint8(pivot)
}

// quantizeBlockwise is bitsandbytes' blockwise scheme, shared by the NF4
// codes and the 8-bit absmax codes: per block of bs an fp32 absmax, and
// code(x*(1/absmax)) for each element.
func quantizeBlockwise(x []float32, bs int, code func(float32) uint8) (q []uint8, absmax []float32) {
	n := len(x)
	q = make([]uint8, n)
	absmax = make([]float32, numBlocks(n, bs))
	for b := range absmax {
		blk := x[b*bs : min((b+1)*bs, n)]
		var am float32
		for _, v := range blk {
			// ">" is false for NaN, so NaN is skipped like CUDA's fmaxf.
			if a := abs32(v); a > am {
				am = a
			}
		}
		absmax[b] = am
		inv := 1 / am
		for i, v := range blk {
			q[b*bs+i] = code(v * inv)
		}
	}
	return q, absmax
}

// quantizeBlockwise8 is bitsandbytes' quantize_blockwise with the dynamic map.
func quantizeBlockwise8(x []float32, bs int) (q []uint8, absmax []float32) {
	return quantizeBlockwise(x, bs, func(v float32) uint8 { return quantize8(&dynMap, v) })
}

// dequantizeBlockwise8 returns DynamicMap[q]*absmax, rounded to fp32.
func dequantizeBlockwise8(q []uint8, absmax []float32, bs int) []float32 {
	out := make([]float32, len(q))
	for i, c := range q {
		// The conversion stops Go fusing this product with a later add.
		out[i] = float32(dynMap[c] * absmax[i/bs])
	}
	return out
}
