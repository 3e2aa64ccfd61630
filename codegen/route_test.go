package codegen_test

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// The cases run in the suite of reduce_test.go.
func TestTopKKernel(t *testing.T)       { redKind(t, "topk") }
func TestMoERouteKernel(t *testing.T)   { redKind(t, "moe_route") }
func TestScatterAddKernel(t *testing.T) { redKind(t, "scatter_add") }

// topk on rows with ties (values from a small set), NaN (ranked first),
// ±inf, k = 1 up to the whole row, and more rows than a threadgroup.
func topkCases() []redCase {
	type tc struct {
		shape []int
		k     int
		f     func(i int) float64
		dtype ir.DType
	}
	ties := func(i int) float64 { return float64((i*7+3)%5) - 2 }
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, 1, math.NaN(), -1, 1}
	cases := []tc{
		{[]int{128, 4}, 2, redRandom(1, 3), 0}, // the tiny router
		{[]int{300, 8}, 2, ties, 0},
		{[]int{7, 5}, 5, ties, 0},
		{[]int{3, 4, 40}, 3, ties, 0},
		{[]int{6, 8}, 4, func(i int) float64 { return special[(i*3)%len(special)] }, 0},
		{[]int{1}, 1, func(int) float64 { return 2 }, 0},
		{[]int{9, 33}, 1, redRandom(2, 1), 0},
		{[]int{10, 8}, 3, redRandom(3, 1), ir.F16},
	}
	var batch []redCase
	for _, c := range cases {
		batch = append(batch, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			d := c.dtype
			if d == 0 {
				d = ir.F32
			}
			ty := ir.T(d, c.shape...)
			x := redInput(b, in, name("x"), ty, c.f)
			y := redInput(b, in, name("y"), ty, func(int) float64 { return 0 })
			// Only index maps fuse into topk: a transpose round trip.
			src := b.Op(ir.OpAdd, nil, x, y)
			if len(c.shape) == 2 {
				tr := b.Op(ir.OpTranspose, ir.Attrs{"perm": []int{1, 0}}, src)
				src = b.Op(ir.OpTranspose, ir.Attrs{"perm": []int{1, 0}}, tr)
			}
			return b.Apply(ir.OpTopK, ir.Attrs{"k": c.k}, src)
		})
	}
	return batch
}

// moe_route with a single simdgroup, several, more pairs than threads, and
// experts that get no tokens (the first, a middle and the last).
func moeRouteCases() []redCase {
	type tc struct {
		tokens, k, experts int
		f                  func(i int) int
	}
	cases := []tc{
		{128, 2, 4, func(i int) int { return (i*7 + i/3) % 4 }},
		{5, 1, 3, func(i int) int { return 2 - i%2 }}, // expert 0 unused
		{37, 3, 8, func(i int) int { return []int{1, 2, 3, 4, 6}[(i*5+i/7)%5] }},
		{700, 2, 6, func(i int) int { return (i * i / 3) % 5 }}, // 1400 pairs, expert 5 unused
		{2000, 2, 4, func(i int) int { return (i*13 + 1) % 4 }}, // chunks of 4 pairs a thread
		{64, 2, 2, func(int) int { return 1 }},                  // all to one expert
	}
	var batch []redCase
	for _, c := range cases {
		batch = append(batch, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			ty := ir.T(ir.I32, c.tokens, c.k)
			idx := redInput(b, in, name("idx"), ty, func(i int) float64 { return float64(c.f(i)) })
			return b.Apply(ir.OpMoERoute, ir.Attrs{"experts": c.experts}, idx)
		})
	}
	return batch
}

// scatter_add with repeated indices, rows nobody scatters to, rank-2
// indices, scalar rows (one thread per output row), and rows wide enough
// that each thread owns a block of several output rows.
func scatterCases() []redCase {
	type tc struct {
		idx   []int
		row   []int
		rows  int
		dtype ir.DType
	}
	cases := []tc{
		{[]int{256}, nil, 256, 0},      // the router's probability gradient
		{[]int{128}, []int{64}, 16, 0}, // embedding gradient of the tiny model
		{[]int{20}, []int{3000}, 10, 0},
		{[]int{4, 5}, []int{7}, 9, 0},
		{[]int{33}, []int{2, 5}, 40, 0},
		{[]int{3}, []int{1}, 1, 0},
		{[]int{40}, []int{3000}, 6, ir.F16}, // wide, but a row per thread for f16
	}
	var batch []redCase
	for _, c := range cases {
		batch = append(batch, func(b *ir.Builder, name func(string) string, in map[string]*ref.Tensor) []*ir.Value {
			it := ir.T(ir.I32, c.idx...)
			n := int(it.Shape.Elems())
			idx := redInput(b, in, name("idx"), it, func(i int) float64 {
				// Repeats, skipping row 1 (left zero) when there is more than one.
				r := (i * 5 / 2) % c.rows
				if r == 1 && c.rows > 2 {
					r = c.rows - 1
				}
				return float64(r)
			})
			d := c.dtype
			if d == 0 {
				d = ir.F32
			}
			st := ir.T(d, append(append([]int(nil), c.idx...), c.row...)...)
			src := redInput(b, in, name("src"), st, redRandom(uint64(n), 2))
			// Index maps fuse into scatter_add: a reshape round trip.
			flat := b.Op(ir.OpReshape, ir.Attrs{"shape": []int{int(st.Shape.Elems())}}, src)
			src = b.Op(ir.OpReshape, ir.Attrs{"shape": []int(st.Shape)}, flat)
			return []*ir.Value{b.Op(ir.OpScatter, ir.Attrs{"rows": c.rows}, idx, src)}
		})
	}
	return batch
}
