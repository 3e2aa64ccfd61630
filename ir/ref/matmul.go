package ref

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpMatmul, matmulImpl)
	register(ir.OpGroupedMM, groupedMatmulImpl)
	register(ir.OpGroupedMMW, groupedMatmulWgradImpl)
	register(ir.OpDequant, dequantImpl)
}

// mat is a row-major matrix view, read transposed when t is set.
type mat struct {
	data []float64
	r, c int // stored rows and columns
	t    bool
}

// at returns element (i, j) of the (possibly transposed) matrix.
func (m mat) at(i, j int) float64 {
	if m.t {
		return m.data[j*m.c+i]
	}
	return m.data[i*m.c+j]
}

// mulInto sets dst (m×n, row-major) = a·b. Finite operands go to gonum's
// blocked dgemm (sums in another order: results agree to float64 rounding).
// Its kernels skip zero multipliers, so 0·Inf would give 0, not NaN: operands
// holding a non-finite value take the plain loop, which keeps IEEE semantics.
func mulInto(dst []float64, a, b mat, m, k, n int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		clear(dst[:m*n])
		return
	}
	if !finite(a.data) || !finite(b.data) {
		mulNaive(dst, a, b, m, k, n)
		return
	}
	blas64.Gemm(a.trans(), b.trans(), 1, a.general(), b.general(), 0,
		blas64.General{Rows: m, Cols: n, Stride: n, Data: dst[:m*n]})
}

func (m mat) trans() blas.Transpose {
	if m.t {
		return blas.Trans
	}
	return blas.NoTrans
}

func (m mat) general() blas64.General {
	return blas64.General{Rows: m.r, Cols: m.c, Stride: m.c, Data: m.data[:m.r*m.c]}
}

func finite(x []float64) bool {
	for _, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// mulNaive is mulInto summing over k in increasing order, one product at a time.
func mulNaive(dst []float64, a, b mat, m, k, n int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += a.at(i, p) * b.at(p, j)
			}
			dst[i*n+j] = s
		}
	}
}

// matmulImpl: out[..., i, j] = Σ_k a[..., i, k]·b[..., k, j] over the last two
// axes, read transposed when ta/tb are set. A b without batch axes is shared
// by every batch entry of a.
func matmulImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	a, b := in[0], in[1]
	ta, tb := n.Attrs.Bool("ta"), n.Attrs.Bool("tb")
	as, bs := a.Type.Shape, b.Type.Shape
	ar, ac := as[len(as)-2], as[len(as)-1]
	br, bc := bs[len(bs)-2], bs[len(bs)-1]
	m, k := ar, ac
	if ta {
		m, k = ac, ar
	}
	nn := bc
	if tb {
		nn = br
	}
	out := New(n.Out().Type)
	batch := int(as[:len(as)-2].Elems())
	shared := len(bs) == 2
	for i := 0; i < batch; i++ {
		am := mat{a.Data[i*ar*ac : (i+1)*ar*ac], ar, ac, ta}
		bi := i
		if shared {
			bi = 0
		}
		bm := mat{b.Data[bi*br*bc : (bi+1)*br*bc], br, bc, tb}
		mulInto(out.Data[i*m*nn:(i+1)*m*nn], am, bm, m, k, nn)
	}
	return []*Tensor{out}, nil
}

// expertOffsets reads and checks the offsets operand of the grouped matmuls:
// non-decreasing, within [0, rows]. Rows outside [offsets[0], offsets[E])
// belong to no expert; grouped_matmul writes 0 there and wgrad ignores them.
func expertOffsets(t *Tensor, rows int) ([]int, error) {
	off := t.Ints()
	for e, o := range off {
		if o < 0 || o > rows {
			return nil, fmt.Errorf("expert offset %d (entry %d) is outside [0, %d]", o, e, rows)
		}
		if e > 0 && o < off[e-1] {
			return nil, fmt.Errorf("expert offsets %v decrease at entry %d", off, e)
		}
	}
	return off, nil
}

// groupedMatmulImpl: out[r] = x[r]·w[e] for offsets[e] ≤ r < offsets[e+1],
// w[e] read transposed (as (N,K)) when tb is set.
func groupedMatmulImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x, w := in[0], in[1]
	tb := n.Attrs.Bool("tb")
	rows, k := x.Type.Shape[0], x.Type.Shape[1]
	off, err := expertOffsets(in[2], rows)
	if err != nil {
		return nil, err
	}
	wr, wc := w.Type.Shape[1], w.Type.Shape[2]
	nn := n.Out().Type.Shape[1]
	out := New(n.Out().Type)
	for e := 0; e+1 < len(off); e++ {
		lo, hi := off[e], off[e+1]
		xm := mat{x.Data[lo*k : hi*k], hi - lo, k, false}
		wm := mat{w.Data[e*wr*wc : (e+1)*wr*wc], wr, wc, tb}
		mulInto(out.Data[lo*nn:hi*nn], xm, wm, hi-lo, k, nn)
	}
	return []*Tensor{out}, nil
}

// groupedMatmulWgradImpl: dw[e] = dy[rows of e]ᵀ · x[rows of e], shape (E,N,K):
// the gradient of grouped_matmul's w in its tb=true layout.
func groupedMatmulWgradImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	dy, x := in[0], in[1]
	rows, nn, k := dy.Type.Shape[0], dy.Type.Shape[1], x.Type.Shape[1]
	off, err := expertOffsets(in[2], rows)
	if err != nil {
		return nil, err
	}
	out := New(n.Out().Type)
	for e := 0; e+1 < len(off); e++ {
		lo, hi := off[e], off[e+1]
		dym := mat{dy.Data[lo*nn : hi*nn], hi - lo, nn, true}
		xm := mat{x.Data[lo*k : hi*k], hi - lo, k, false}
		mulInto(out.Data[e*nn*k:(e+1)*nn*k], dym, xm, nn, hi-lo, k)
	}
	return []*Tensor{out}, nil
}

// dequantImpl: the f32 weights of an NF4 tensor (package nf4, bit-exact with
// bitsandbytes), in the tensor's shape; the quantisation is flat row-major.
func dequantImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	out := New(n.Out().Type)
	for i, v := range in[0].Q.Dequantize() {
		out.Data[i] = float64(v)
	}
	return []*Tensor{out}, nil
}
