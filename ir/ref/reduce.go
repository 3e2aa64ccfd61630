package ref

import (
	"math"
	"slices"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpReduceSum, reduce(0, func(acc, x float64) float64 { return acc + x }, false))
	register(ir.OpReduceMean, reduce(0, func(acc, x float64) float64 { return acc + x }, true))
	register(ir.OpReduceMax, reduce(math.Inf(-1), math.Max, false)) // NaN propagates
	register(ir.OpSoftmax, softmaxImpl)
	register(ir.OpRMSNorm, rmsnormImpl)
	register(ir.OpRMSNormBwd, rmsnormBwdImpl)
}

// reduce folds the elements of each output position in row-major input order.
func reduce(init float64, f func(acc, x float64) float64, mean bool) Impl {
	return func(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
		x := in[0]
		axes := n.Attrs.Ints("axes")
		out := New(n.Out().Type)
		for i := range out.Data {
			out.Data[i] = init
		}
		// Output stride of each input axis; reduced axes contribute 0. The
		// flat output index is the same with or without keep.
		shape := x.Type.Shape
		ost := make([]int, len(shape))
		s := 1
		for i := len(shape) - 1; i >= 0; i-- {
			if !slices.Contains(axes, i) {
				ost[i] = s
				s *= shape[i]
			}
		}
		forEachIndex(shape, func(idx []int, flat int) {
			o := 0
			for i, v := range idx {
				o += v * ost[i]
			}
			out.Data[o] = f(out.Data[o], x.Data[flat])
		})
		if mean {
			cnt := 1
			for _, a := range axes {
				cnt *= shape[a]
			}
			for i := range out.Data {
				out.Data[i] /= float64(cnt)
			}
		}
		return []*Tensor{out}, nil
	}
}

// forEachIndex calls f with every multi-index of shape in row-major order and
// its flat offset. idx is reused between calls.
func forEachIndex(shape ir.Shape, f func(idx []int, flat int)) {
	n := int(shape.Elems())
	idx := make([]int, len(shape))
	for flat := 0; flat < n; flat++ {
		f(idx, flat)
		for i := len(idx) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
}

// lastAxis splits a shape into (rows, width of the last axis). A scalar is
// one row of width 1 (softmax's shape rule admits scalars; torch gives 1).
func lastAxis(s ir.Shape) (rows, w int) {
	if len(s) == 0 {
		return 1, 1
	}
	w = s[len(s)-1]
	return int(s.Elems()) / w, w
}

// softmaxImpl: exp(x − max) / Σ exp(x − max) along the last axis.
func softmaxImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x := in[0]
	out := New(n.Out().Type)
	rows, w := lastAxis(x.Type.Shape)
	for r := 0; r < rows; r++ {
		softmaxRow(out.Data[r*w:(r+1)*w], x.Data[r*w:(r+1)*w])
	}
	return []*Tensor{out}, nil
}

func softmaxRow(dst, z []float64) {
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v)
	}
	var sum float64
	for i, v := range z {
		dst[i] = math.Exp(v - m)
		sum += dst[i]
	}
	for i := range dst {
		dst[i] /= sum
	}
}

// rmsnormImpl (docs/maths.md, RMSNorm): y = x·r·γ, r = 1/√(mean(x²) + eps)
// over the last axis.
func rmsnormImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x, g := in[0], in[1]
	eps := n.Attrs.Float("eps")
	out := New(n.Out().Type)
	rows, w := lastAxis(x.Type.Shape)
	for r := 0; r < rows; r++ {
		row := x.Data[r*w : (r+1)*w]
		rs := rmsScale(row, eps)
		for i, v := range row {
			out.Data[r*w+i] = v * rs * g.Data[i]
		}
	}
	return []*Tensor{out}, nil
}

// rmsScale is r = 1/√(mean(x²) + eps) of one row.
func rmsScale(row []float64, eps float64) float64 {
	var ss float64
	for _, v := range row {
		ss += v * v
	}
	return 1 / math.Sqrt(ss/float64(len(row))+eps)
}

// rmsnormBwdImpl (docs/maths.md, RMSNorm): with x̂ = x·r and h = dy ⊙ γ per row,
// dx = r·(h − x̂·mean(h ⊙ x̂)) and dγ = Σ_rows dy ⊙ x̂.
func rmsnormBwdImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x, g, dy := in[0], in[1], in[2]
	eps := n.Attrs.Float("eps")
	dx, dg := New(n.Outputs[0].Type), New(n.Outputs[1].Type)
	rows, w := lastAxis(x.Type.Shape)
	xhat := make([]float64, w)
	for r := 0; r < rows; r++ {
		row, drow := x.Data[r*w:(r+1)*w], dy.Data[r*w:(r+1)*w]
		rs := rmsScale(row, eps)
		var dotHX float64
		for i, v := range row {
			xhat[i] = v * rs
			dotHX += drow[i] * g.Data[i] * xhat[i]
			dg.Data[i] += drow[i] * xhat[i]
		}
		mean := dotHX / float64(w)
		for i := range row {
			dx.Data[r*w+i] = rs * (drow[i]*g.Data[i] - xhat[i]*mean)
		}
	}
	return []*Tensor{dx, dg}, nil
}
