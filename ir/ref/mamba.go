package ref

import (
	"math"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpConv, convImpl)
	register(ir.OpConvBwd, convBwdImpl)
	register(ir.OpScan, scanImpl)
	register(ir.OpScanBwd, scanBwdImpl)
}

// convImpl is the causal depthwise conv (docs/maths.md, Causal
// convolution), x (B,L,C), w (C,K), bias (C):
//
//	out[b,t,c] = bias[c] + Σ_{k<K} w[c,k]·x[b, t−(K−1)+k, c]
//
// with x = 0 at negative time, so w[c,K−1] multiplies the current token.
func convImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x, w, bias := in[0], in[1], in[2]
	bs, l, c, k := convDims(x, w)
	out := New(n.Out().Type)
	for b := 0; b < bs; b++ {
		for t := 0; t < l; t++ {
			for ch := 0; ch < c; ch++ {
				s := bias.Data[ch]
				for j := 0; j < k; j++ {
					if src := t - (k - 1) + j; src >= 0 {
						s += w.Data[ch*k+j] * x.Data[(b*l+src)*c+ch]
					}
				}
				out.Data[(b*l+t)*c+ch] = s
			}
		}
	}
	return []*Tensor{out}, nil
}

func convDims(x, w *Tensor) (b, l, c, k int) {
	return x.Type.Shape[0], x.Type.Shape[1], x.Type.Shape[2], w.Type.Shape[1]
}

// convBwdImpl is the adjoint of convImpl: (x, w, dy) → (dx, dw, db),
//
//	dx[b,s,c] = Σ_k w[c,k]·dy[b, s+(K−1)−k, c]   (terms past the end are 0)
//	dw[c,k]   = Σ_{b,t} dy[b,t,c]·x[b, t−(K−1)+k, c]
//	db[c]     = Σ_{b,t} dy[b,t,c]
func convBwdImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x, w, dy := in[0], in[1], in[2]
	bs, l, c, k := convDims(x, w)
	dx, dw, db := New(n.Outputs[0].Type), New(n.Outputs[1].Type), New(n.Outputs[2].Type)
	for b := 0; b < bs; b++ {
		for t := 0; t < l; t++ {
			for ch := 0; ch < c; ch++ {
				g := dy.Data[(b*l+t)*c+ch]
				db.Data[ch] += g
				for j := 0; j < k; j++ {
					if src := t - (k - 1) + j; src >= 0 {
						dw.Data[ch*k+j] += g * x.Data[(b*l+src)*c+ch]
						dx.Data[(b*l+src)*c+ch] += g * w.Data[ch*k+j]
					}
				}
			}
		}
	}
	return []*Tensor{dx, dw, db}, nil
}

// scanArgs are the operands of the selective scan (docs/maths.md, Selective scan):
// u, Δ (B,L,E); A (E,N), already −exp(A_log); B, C (B,L,N); D (E). Δ is
// already softplus'ed.
type scanArgs struct {
	u, dt, a, bm, cm, d []float64
	nb, l, e, n, chunk  int
}

func newScanArgs(node *ir.Node, in []*Tensor) scanArgs {
	s := in[0].Type.Shape
	return scanArgs{
		u: in[0].Data, dt: in[1].Data, a: in[2].Data, bm: in[3].Data, cm: in[4].Data, d: in[5].Data,
		nb: s[0], l: s[1], e: s[2], n: in[2].Type.Shape[1], chunk: node.Attrs.Int("chunk"),
	}
}

// step advances the state of one (d, n) pair by token t of batch b: it
// returns a_t = exp(Δ_t[d]·A[d,n]) and s_t = a_t·s_{t−1} + Δ_t[d]·B_t[n]·u_t[d].
// Forward and backward share it, so the recomputed states equal the
// forward's bit for bit.
func (p *scanArgs) step(b, t, d, n int, prev float64) (at, s float64) {
	bt := b*p.l + t
	dt := p.dt[bt*p.e+d]
	at = math.Exp(dt * p.a[d*p.n+n])
	return at, at*prev + dt*p.bm[bt*p.n+n]*p.u[bt*p.e+d]
}

// scanImpl runs the recurrence s_t = Ā_t ⊙ s_{t−1} + B̄u_t from s_{−1} = 0
// and y_t[d] = Σ_n s_t[d,n]·C_t[n] + D[d]·u_t[d]. states[b,c] is the state
// at the start of chunk c, i.e. after token c·chunk − 1 (0 for c = 0).
func scanImpl(node *ir.Node, in []*Tensor) ([]*Tensor, error) {
	p := newScanArgs(node, in)
	y, states := New(node.Outputs[0].Type), New(node.Outputs[1].Type)
	nc := ir.ScanChunks(p.l, p.chunk)
	s := make([]float64, p.e*p.n)
	for b := 0; b < p.nb; b++ {
		clear(s)
		for t := 0; t < p.l; t++ {
			if t%p.chunk == 0 {
				copy(states.Data[(b*nc+t/p.chunk)*p.e*p.n:], s)
			}
			bt := b*p.l + t
			for d := 0; d < p.e; d++ {
				var acc float64
				for n := 0; n < p.n; n++ {
					_, s[d*p.n+n] = p.step(b, t, d, n, s[d*p.n+n])
					acc += s[d*p.n+n] * p.cm[bt*p.n+n]
				}
				y.Data[bt*p.e+d] = acc + p.d[d]*p.u[bt*p.e+d]
			}
		}
	}
	return []*Tensor{y, states}, nil
}

// scanBwdImpl is the scan's adjoint (docs/maths.md, Selective scan
// backward) given dy (after the D skip, before gating), computed chunk by
// chunk as the CUDA kernel does: for each chunk, last first, recompute its
// states from the saved start-of-chunk state, then run the reverse scan
//
//	g_t = C_t·dy_t + a_{t+1} ⊙ g_{t+1},  g_L = 0
//
// carrying a_{t+1} ⊙ g_{t+1} across chunk boundaries. Only one chunk of
// states (chunk+1)·E·N is held at a time, never all B·L·E·N. dΔ is w.r.t. Δ
// (no softplus) and dA w.r.t. A (not A_log).
func scanBwdImpl(node *ir.Node, in []*Tensor) ([]*Tensor, error) {
	p := newScanArgs(node, in)
	states, dy := in[6].Data, in[7].Data
	var outs [6]*Tensor
	for i := range outs {
		outs[i] = New(node.Outputs[i].Type)
	}
	du, ddt, da, dbm, dcm, dd := outs[0].Data, outs[1].Data, outs[2].Data, outs[3].Data, outs[4].Data, outs[5].Data
	en := p.e * p.n
	nc := ir.ScanChunks(p.l, p.chunk)
	carry := make([]float64, en)                     // a_{t+1} ⊙ g_{t+1}
	seq := make([]float64, (min(p.chunk, p.l)+1)*en) // seq[i]: the state after token t0+i−1
	for b := 0; b < p.nb; b++ {
		clear(carry)
		for c := nc - 1; c >= 0; c-- {
			t0, t1 := c*p.chunk, min(p.l, (c+1)*p.chunk)
			copy(seq[:en], states[(b*nc+c)*en:(b*nc+c+1)*en])
			for t := t0; t < t1; t++ {
				prev, cur := seq[(t-t0)*en:], seq[(t-t0+1)*en:]
				for d := 0; d < p.e; d++ {
					for n := 0; n < p.n; n++ {
						_, cur[d*p.n+n] = p.step(b, t, d, n, prev[d*p.n+n])
					}
				}
			}
			for t := t1 - 1; t >= t0; t-- {
				prev, cur := seq[(t-t0)*en:], seq[(t-t0+1)*en:]
				bt := b*p.l + t
				for d := 0; d < p.e; d++ {
					g0 := dy[bt*p.e+d]
					dt, u := p.dt[bt*p.e+d], p.u[bt*p.e+d]
					dd[d] += u * g0
					duAcc := p.d[d] * g0
					var dtAcc float64
					for n := 0; n < p.n; n++ {
						i := d*p.n + n
						bv, av := p.bm[bt*p.n+n], p.a[i]
						at, _ := p.step(b, t, d, n, prev[i])
						g := p.cm[bt*p.n+n]*g0 + carry[i]
						dcm[bt*p.n+n] += cur[i] * g0
						dbm[bt*p.n+n] += g * dt * u
						da[i] += g * dt * at * prev[i]
						dtAcc += g * (av*at*prev[i] + bv*u)
						duAcc += g * dt * bv
						carry[i] = at * g
					}
					du[bt*p.e+d] = duAcc
					ddt[bt*p.e+d] = dtAcc
				}
			}
		}
	}
	return outs[:], nil
}
