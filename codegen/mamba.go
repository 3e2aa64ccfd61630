package codegen

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Mamba templates: the selective scan (forward and adjoint) and the causal
// depthwise conv (forward and adjoint), following ir/ref/mamba.go.
//
// Scan forward (llama.cpp ssm_scan style): one thread per state element
// (b, e, n); the P = next power of two ≥ N lanes of a channel sit side by side
// in one simdgroup, so y_t[e] = Σ_n s·C_t[n] is a butterfly of shuffle_xor
// over those lanes. The state stays in a register: only y and the
// start-of-chunk states reach memory.
//
// Scan backward: the adjoint reduces over every axis somewhere (du, dΔ over
// n; dB, dC over e; dA, dD over b and t), so no single split of the work
// over threadgroups completes all sums, and a group must be one launch with
// one writer per element. The kernel therefore has two kinds of threadgroup
// that each recompute the scan (about twice the minimal work, in exchange
// for parallelism when the batch is 1):
//   - row threadgroups, one per batch b and group of states n, with one
//     thread per (n, channel), looping over blocks of up to 1024 channels:
//     they own dB[b,:,n] and dC[b,:,n] (sums over e, simd_sum then across
//     simdgroups in threadgroup memory);
//   - channel threadgroups, one per block of channels with P lanes each,
//     looping over b: they own du, dΔ (sums over the lanes of a channel) and
//     dA, dD (sums over b and t, kept in registers).
// Both recompute each chunk's states from the saved start state, then run
// the reverse scan through them, carrying g across chunks from last to
// first. No state tensor is written. A thread keeps every scanSub-th state
// of the chunk (checkpoints) and, sub-chunk by sub-chunk from the last,
// recomputes that sub-chunk's states from its checkpoint: chunk/scanSub +
// scanSub floats per thread (24 for chunk 128) rather than a chunk's (128,
// which spills to stack memory in threadgroups of 1024 threads), for one
// more pass of the forward's arithmetic over the chunk.
// For Magellano (B=1, E=4096, N=16, L=512, chunk 128) that is 16 row
// threadgroups of 1024 threads, each making 4 passes over the sequence, and
// 64 channel threadgroups making one; their latency, not the total work, is
// the cost of keeping the launch single and deterministic.

func init() {
	templates[string(ir.OpScan)] = scanForward
	templates[string(ir.OpScanBwd)] = scanBackward
	templates[string(ir.OpConv)] = convForward
	templates[string(ir.OpConvBwd)] = convBackward
}

const (
	scanSimd = 32
	// scanFwdThreads is the forward's threadgroup size (at most).
	scanFwdThreads = 256
	// scanBwdThreads is the backward's threadgroup size (at most): large, so
	// a row threadgroup covers many channels per pass over the sequence.
	scanBwdThreads = 1024
	// scanBwdMinThreads is the backward's threadgroup size for small E.
	scanBwdMinThreads = 256
	// scanMaxChunk bounds the backward's per-thread state array (4 bytes
	// per token of a chunk).
	scanMaxChunk = 512
	// scanBatch is how many tokens' partial dB/dC sums the row threadgroups
	// gather in threadgroup memory between barriers.
	scanBatch = 16
	// scanSub is the backward's sub-chunk: the states it keeps per thread
	// beside a chunk's checkpoints. It equals scanBatch, so a row
	// threadgroup's batches still hold 16 tokens.
	scanSub     = 16
	convThreads = 256
)

// scanShape holds the sizes of a selective scan.
type scanShape struct {
	b, l, e, n, chunk, chunks int
	// lanes is the number of simdgroup lanes per channel (a power of two ≥ n).
	lanes int
}

func newScanShape(root *ir.Node) (scanShape, error) {
	u, a := root.Inputs[0].Type.Shape, root.Inputs[2].Type.Shape
	s := scanShape{b: u[0], l: u[1], e: u[2], n: a[1], chunk: root.Attrs.Int("chunk")}
	s.chunks = ir.ScanChunks(s.l, s.chunk)
	if s.n > scanSimd {
		return s, fmt.Errorf("d_state %d: the scan kernels keep a channel's states in one simdgroup, so at most %d", s.n, scanSimd)
	}
	s.lanes = 1
	for s.lanes < s.n {
		s.lanes *= 2
	}
	return s, nil
}

func mbCeilDiv(a, b int) int { return (a + b - 1) / b }

func mbRoundUp(a, b int) int { return mbCeilDiv(a, b) * b }

// mbAnd combines optional conditions (nil is true).
func mbAnd(conds ...kir.Expr) kir.Expr {
	var out kir.Expr
	for _, c := range conds {
		switch {
		case c == nil:
		case out == nil:
			out = c
		default:
			out = kir.Op("&&", out, c)
		}
	}
	return out
}

// mbGuard wraps body in an if when cond is not nil.
func mbGuard(cond kir.Expr, body []kir.Stmt) []kir.Stmt {
	if cond == nil {
		return body
	}
	return []kir.Stmt{kir.If{Cond: cond, Then: body}}
}

// mbBounded is a coordinate that may run past its axis (masked lanes): the
// index to read at (clamped into the axis, so reads stay in bounds) and the
// condition that it is real (nil when it always is).
type mbBounded struct {
	idx, clamped, valid kir.Expr
}

func newMBBounded(e *Emitter, name string, idx kir.Expr, size int, exact bool) mbBounded {
	v := e.Let(name, kir.I32, idx)
	if exact {
		return mbBounded{v, v, nil}
	}
	return mbBounded{v, e.Let(name+"c", kir.I32, kir.Min(v, kir.I(size-1))), kir.Lt(v, kir.I(size))}
}

// mbMask is x where cond holds, else 0 (x itself when cond is nil).
func mbMask(cond, x kir.Expr) kir.Expr {
	if cond == nil {
		return x
	}
	return kir.Select{Cond: cond, A: x, B: kir.F(0)}
}

// mbLaneSum sums x over the aligned runs of `lanes` lanes of a simdgroup (the
// lanes of one channel), leaving the total in every lane of the run. Every
// lane must reach it.
func mbLaneSum(e *Emitter, x kir.Expr, lanes int) kir.Expr {
	for d := lanes / 2; d >= 1; d /= 2 {
		x = e.Let("r", kir.F32, kir.Add(x, kir.Simd{Op: "shuffle_xor", X: x, Arg: kir.I(d)}))
	}
	return x
}

// mbMutable declares a mutable f32 local.
func mbMutable(e *Emitter, prefix string, init kir.Expr) kir.Expr {
	name := e.Temp(prefix)
	e.Emit(kir.Decl{Name: name, Type: kir.F32, Init: init, Mutable: true})
	return kir.V(name)
}

// mbLoop emits for (v = from; v < to; v++) with the body fn builds from v.
func mbLoop(e *Emitter, prefix string, from, to kir.Expr, fn func(v kir.Expr)) {
	mbLoopStep(e, prefix, from, to, kir.I(1), fn)
}

// mbLoopStep is mbLoop with a step.
func mbLoopStep(e *Emitter, prefix string, from, to, step kir.Expr, fn func(v kir.Expr)) {
	v := e.Temp(prefix)
	e.Emit(kir.Loop(v, from, to, step, e.Block(func() { fn(kir.V(v)) })...))
}

// scanOps are the operands of a scan node.
type scanOps struct{ u, dt, a, bm, cm, d *ir.Value }

func newScanOps(n *ir.Node) scanOps {
	in := n.Inputs
	return scanOps{in[0], in[1], in[2], in[3], in[4], in[5]}
}

// scanToken holds the per-token operands Δ, u, B, C of one state element.
type scanToken struct{ dt, u, bv, cv kir.Expr }

// readToken reads them for channel ch, state n at (b, t).
func readToken(e *Emitter, op scanOps, b, t, ch, n kir.Expr) scanToken {
	return scanToken{
		dt: e.At(op.dt, []kir.Expr{b, t, ch}),
		u:  e.At(op.u, []kir.Expr{b, t, ch}),
		bv: e.At(op.bm, []kir.Expr{b, t, n}),
		cv: e.At(op.cm, []kir.Expr{b, t, n}),
	}
}

// scanStepExprs are a_t = exp(Δ·A) and the input term Δ·B·u of one step.
func scanStepExprs(e *Emitter, tk scanToken, a kir.Expr) (at, in kir.Expr) {
	at = e.Let("a", kir.F32, kir.Fn("exp", kir.Mul(tk.dt, a)))
	return at, kir.Mul(kir.Mul(tk.dt, tk.bv), tk.u)
}

// scanForward: threadgroups of cpg channels × P lanes; grid (channel
// blocks, B). Each thread runs the recurrence for its (e, n) over all L
// tokens in a register, writing the state at each chunk start and, from the
// channel's first lane, y_t[e].
func scanForward(e *Emitter, grp *passes.Group) error {
	root := grp.Anchor
	s, err := newScanShape(root)
	if err != nil {
		return err
	}
	op := newScanOps(root)
	y, states := root.Outputs[0], root.Outputs[1]
	p := s.lanes
	cpg := min(scanFwdThreads/p, mbRoundUp(s.e, scanSimd/p))
	e.K.Threads = [3]int{cpg * p, 1, 1}
	e.K.Groups = [3]int{mbCeilDiv(s.e, cpg), s.b, 1}

	b := e.Let("b", kir.I32, kir.Group(1))
	ch := newMBBounded(e, "ch", kir.Add(kir.Mul(kir.Group(0), kir.I(cpg)), kir.Div(kir.Local(0), kir.I(p))), s.e, s.e%cpg == 0)
	n := newMBBounded(e, "n", kir.Mod(kir.Local(0), kir.I(p)), s.n, s.n == p)
	a := e.At(op.a, []kir.Expr{ch.clamped, n.clamped})
	dd := e.At(op.d, []kir.Expr{ch.clamped})
	st := mbMutable(e, "s", kir.F(0))
	mbLoop(e, "c", kir.I(0), kir.I(s.chunks), func(c kir.Expr) {
		if writes(grp, states) {
			e.Emit(mbGuard(mbAnd(ch.valid, n.valid), e.Block(func() {
				e.Store(states, []kir.Expr{b, c, ch.idx, n.idx}, st)
			}))...)
		}
		t0 := kir.Mul(c, kir.I(s.chunk))
		mbLoop(e, "t", t0, kir.Min(kir.Add(t0, kir.I(s.chunk)), kir.I(s.l)), func(t kir.Expr) {
			tk := readToken(e, op, b, t, ch.clamped, n.clamped)
			at, in := scanStepExprs(e, tk, a)
			e.Emit(kir.Set(st, kir.Add(kir.Mul(at, st), in)))
			if !writes(grp, y) {
				return
			}
			sum := mbLaneSum(e, mbMask(n.valid, kir.Mul(st, tk.cv)), p)
			e.Emit(mbGuard(mbAnd(kir.Op("==", n.idx, kir.I(0)), ch.valid), e.Block(func() {
				e.StoreThrough(grp, y, []kir.Expr{b, t, ch.idx}, kir.Add(sum, kir.Mul(dd, tk.u)))
			}))...)
		})
	})
	return nil
}

// bwdScan is what the two kinds of backward threadgroup share.
type bwdScan struct {
	s          scanShape
	op         scanOps
	states, dy *ir.Value
	seq        string // thread array: seq[i] = the state before token t0+i of a sub-chunk
	ckpt       string // thread array: ckpt[k] = the state before the chunk's sub-chunk k; "" for chunks of one sub-chunk
	chunkLen   int
	// rb is the channels a row threadgroup runs at once, nr the states.
	rb, nr int
}

// chunkBounds are the first token and one past the last of chunk c.
func (w *bwdScan) chunkBounds(e *Emitter, c kir.Expr) (t0, t1 kir.Expr) {
	t0 = e.Let("t0", kir.I32, kir.Mul(c, kir.I(w.s.chunk)))
	return t0, e.Let("t1", kir.I32, kir.Min(kir.Add(t0, kir.I(w.s.chunk)), kir.I(w.s.l)))
}

// recompute fills seq with the states of tokens [t0, t1) from the state
// before t0, with the same arithmetic as the forward.
func (w *bwdScan) recompute(e *Emitter, start, b, t0, t1, ch, n, a kir.Expr) {
	sv := mbMutable(e, "s", start)
	mbLoop(e, "t", t0, t1, func(t kir.Expr) {
		e.Emit(kir.Set(kir.At(w.seq, kir.Sub(t, t0)), sv))
		w.advance(e, sv, b, t, ch, n, a)
	})
}

// advance steps state sv over token t.
func (w *bwdScan) advance(e *Emitter, sv, b, t, ch, n, a kir.Expr) {
	tk := readToken(e, w.op, b, t, ch, n)
	at, in := scanStepExprs(e, tk, a)
	e.Emit(kir.Set(sv, kir.Add(kir.Mul(at, sv), in)))
}

// reverseChunk runs body(u0, u1) over the tokens of chunk c in reverse
// sub-chunks [u0, u1), last first, with seq holding each one's states:
// the chunk's checkpoints first (one pass from the saved start state), then
// for each sub-chunk its states again from its checkpoint. A chunk of one
// sub-chunk fills seq from the saved state directly.
func (w *bwdScan) reverseChunk(e *Emitter, b, c, ch, n, a kir.Expr, body func(u0, u1 kir.Expr)) {
	t0, t1 := w.chunkBounds(e, c)
	start := e.At(w.states, []kir.Expr{b, c, ch, n})
	if w.ckpt == "" {
		w.recompute(e, start, b, t0, t1, ch, n, a)
		body(t0, t1)
		return
	}
	subs := e.Let("subs", kir.I32, kir.Div(kir.Add(kir.Sub(t1, t0), kir.I(scanSub-1)), kir.I(scanSub)))
	sv := mbMutable(e, "s", start)
	mbLoop(e, "k", kir.I(0), subs, func(k kir.Expr) {
		e.Emit(kir.Set(kir.At(w.ckpt, k), sv))
		u0 := e.Let("u0", kir.I32, kir.Add(t0, kir.Mul(k, kir.I(scanSub))))
		mbLoop(e, "t", u0, kir.Min(kir.Add(u0, kir.I(scanSub)), t1), func(t kir.Expr) {
			w.advance(e, sv, b, t, ch, n, a)
		})
	})
	mbLoop(e, "kk", kir.I(0), subs, func(kk kir.Expr) {
		k := e.Let("k", kir.I32, kir.Sub(kir.Sub(subs, kir.I(1)), kk))
		u0 := e.Let("u0", kir.I32, kir.Add(t0, kir.Mul(k, kir.I(scanSub))))
		u1 := e.Let("u1", kir.I32, kir.Min(kir.Add(u0, kir.I(scanSub)), t1))
		w.recompute(e, kir.At(w.ckpt, k), b, u0, u1, ch, n, a)
		body(u0, u1)
	})
}

// scanStep is one token of the reverse scan, seen from one state element.
type scanStep struct {
	t        kir.Expr
	tk       scanToken
	dy       kir.Expr
	prev, at kir.Expr // s_{t−1}, a_t
	g        kir.Expr // g_t = C_t·dy_t + a_{t+1}·g_{t+1}
}

// reverseStep emits token t = t1−1−i of the reverse scan: it reads the
// operands, computes g_t from carry and updates carry to a_t·g_t.
func (w *bwdScan) reverseStep(e *Emitter, b, i, t0, t1, ch, n, a, carry kir.Expr) scanStep {
	t := e.Let("t", kir.I32, kir.Sub(kir.Sub(t1, kir.I(1)), i))
	tk := readToken(e, w.op, b, t, ch, n)
	st := scanStep{t: t, tk: tk, dy: e.At(w.dy, []kir.Expr{b, t, ch})}
	st.prev = e.Let("sp", kir.F32, kir.At(w.seq, kir.Sub(t, t0)))
	st.at, _ = scanStepExprs(e, tk, a)
	st.g = e.Let("g", kir.F32, kir.Add(kir.Mul(tk.cv, st.dy), carry))
	e.Emit(kir.Set(carry, kir.Mul(st.at, st.g)))
	return st
}

// scanBackward lays out the adjoint: row threadgroups first (they make
// several passes over the sequence, so they should start first), then
// channel threadgroups.
func scanBackward(e *Emitter, grp *passes.Group) error {
	root := grp.Anchor
	s, err := newScanShape(root)
	if err != nil {
		return err
	}
	w := &bwdScan{s: s, op: newScanOps(root), states: root.Inputs[6], dy: root.Inputs[7], chunkLen: min(s.chunk, s.l)}
	if w.chunkLen > scanMaxChunk {
		return fmt.Errorf("chunk %d: the backward keeps a chunk's states per thread, at most %d", s.chunk, scanMaxChunk)
	}
	// Row threadgroups run rb channels (one per thread) for each of nr
	// states side by side; channel threadgroups run threads/P channels.
	// Large threadgroups only pay where a row pass covers many channels;
	// small models get more, smaller threadgroups.
	w.rb = min(scanBwdThreads, mbRoundUp(s.e, scanSimd))
	w.nr = max(1, min(s.n, scanBwdMinThreads/w.rb))
	threads := w.nr * w.rb
	e.K.Threads = [3]int{threads, 1, 1}
	outs := root.Outputs
	var rowOuts, chanOuts []*ir.Value
	for i, v := range outs {
		if !writes(grp, v) {
			continue
		}
		if i == 3 || i == 4 {
			rowOuts = append(rowOuts, v)
		} else {
			chanOuts = append(chanOuts, v)
		}
	}
	rows, chans := 0, 0
	if len(rowOuts) > 0 {
		rows = s.b * mbCeilDiv(s.n, w.nr)
	}
	if len(chanOuts) > 0 {
		chans = mbCeilDiv(s.e, threads/s.lanes)
	}
	e.K.Groups = [3]int{rows + chans, 1, 1}
	w.seq = e.Temp("seq")
	if w.chunkLen > scanSub {
		w.ckpt = e.Temp("ckpt")
		e.Emit(kir.Array{Name: w.ckpt, Type: kir.F32, Len: mbCeilDiv(w.chunkLen, scanSub)})
		e.Emit(kir.Array{Name: w.seq, Type: kir.F32, Len: scanSub})
	} else {
		e.Emit(kir.Array{Name: w.seq, Type: kir.F32, Len: w.chunkLen})
	}
	red := ""
	if rows > 0 {
		// Partial dB/dC sums of each simdgroup for a batch of tokens, double
		// buffered so one barrier per batch suffices.
		red = e.Temp("red")
		e.Emit(kir.Shared{Name: red, Type: kir.F32, Len: 2 * len(rowOuts) * scanBatch * (threads / scanSimd)})
	}
	gid := e.Let("gid", kir.I32, kir.Group(0))
	rowBody := e.Block(func() { w.rowGroup(e, grp, threads, gid, red) })
	chanBody := e.Block(func() { w.channelGroup(e, grp, threads, kir.Sub(gid, kir.I(rows))) })
	switch {
	case rows == 0:
		e.Emit(chanBody...)
	case chans == 0:
		e.Emit(rowBody...)
	default:
		e.Emit(kir.If{Cond: kir.Lt(gid, kir.I(rows)), Then: rowBody, Else: chanBody})
	}
	return nil
}

// rowGroup computes dB[b,:,n] and dC[b,:,n] for b and nr consecutive n
// (row threadgroup r): thread (slot, c) runs channel c of each block of rb
// channels for state n0+slot, blocks one after another. Per token each
// simdgroup sums its channels' terms with simd_sum (a simdgroup has one
// state); every scanBatch tokens, after one barrier, the simdgroups share
// out the sums across the simdgroups of each state (one simd_sum each) and
// add them to memory, so each element has one writer and a fixed order.
func (w *bwdScan) rowGroup(e *Emitter, grp *passes.Group, threads int, r kir.Expr, red string) {
	s := w.s
	root := grp.Anchor
	var sums []*ir.Value // dB and/or dC
	for _, v := range root.Outputs[3:5] {
		if writes(grp, v) {
			sums = append(sums, v)
		}
	}
	nsg := threads / scanSimd
	spn := w.rb / scanSimd // simdgroups per state
	groupsPerB := mbCeilDiv(s.n, w.nr)
	b := e.Let("b", kir.I32, kir.Div(r, kir.I(groupsPerB)))
	n0 := e.Let("n0", kir.I32, kir.Mul(kir.Mod(r, kir.I(groupsPerB)), kir.I(w.nr)))
	n := newMBBounded(e, "n", kir.Add(n0, kir.Div(kir.Local(0), kir.I(w.rb))), s.n, s.n%w.nr == 0)
	sg := e.Let("sg", kir.I32, kir.Builtin{Kind: "simdgroup"})
	lane := e.Let("lane", kir.I32, kir.Builtin{Kind: "lane"})
	buf := kir.V(e.Temp("buf"))
	e.Emit(kir.Decl{Name: buf.(kir.Var).Name, Type: kir.I32, Init: kir.I(0), Mutable: true})
	blocks := mbCeilDiv(s.e, w.rb)
	// red[buf][q][j][sg] is simdgroup sg's part of sum q (dB or dC) of token j.
	slot := func(base, q, j, sgi kir.Expr) kir.Expr {
		return kir.Add(base, kir.Add(kir.Mul(kir.Add(kir.Mul(q, kir.I(scanBatch)), j), kir.I(nsg)), sgi))
	}
	mbLoop(e, "blk", kir.I(0), kir.I(blocks), func(blk kir.Expr) {
		ch := newMBBounded(e, "ch", kir.Add(kir.Mul(blk, kir.I(w.rb)), kir.Mod(kir.Local(0), kir.I(w.rb))), s.e, s.e%w.rb == 0)
		a := e.At(w.op.a, []kir.Expr{ch.clamped, n.clamped})
		carry := mbMutable(e, "carry", kir.F(0))
		mbLoop(e, "cc", kir.I(0), kir.I(s.chunks), func(cc kir.Expr) {
			c := e.Let("c", kir.I32, kir.Sub(kir.I(s.chunks-1), cc))
			w.reverseChunk(e, b, c, ch.clamped, n.clamped, a, func(t0, t1 kir.Expr) {
				size := e.Let("len", kir.I32, kir.Sub(t1, t0))
				mbLoopStep(e, "i0", kir.I(0), size, kir.I(scanBatch), func(i0 kir.Expr) {
					cnt := e.Let("cnt", kir.I32, kir.Min(kir.I(scanBatch), kir.Sub(size, i0)))
					base := e.Let("rb", kir.I32, kir.Mul(buf, kir.I(len(sums)*scanBatch*nsg)))
					mbLoop(e, "j", kir.I(0), cnt, func(j kir.Expr) {
						st := w.reverseStep(e, b, kir.Add(i0, j), t0, t1, ch.clamped, n.clamped, a, carry)
						var parts []kir.Expr
						for _, v := range sums {
							var x kir.Expr
							if v == root.Outputs[3] { // dB_t[n] = Σ_e g·Δ·u
								x = kir.Mul(kir.Mul(st.g, st.tk.dt), st.tk.u)
							} else { // dC_t[n] = Σ_e s_t·dy
								cur := kir.Add(kir.Mul(st.at, st.prev), kir.Mul(kir.Mul(st.tk.dt, st.tk.bv), st.tk.u))
								x = kir.Mul(cur, st.dy)
							}
							parts = append(parts, e.Let("sp", kir.F32, kir.Simd{Op: "sum", X: mbMask(ch.valid, x)}))
						}
						e.Emit(kir.If{Cond: kir.Op("==", lane, kir.I(0)), Then: e.Block(func() {
							for q, x := range parts {
								e.Emit(kir.Set(kir.At(red, slot(base, kir.I(q), j, sg)), x))
							}
						})})
					})
					e.Emit(kir.Barrier{})
					// Simdgroup sg adds up sums k = sg, sg+nsg, …: sum q of
					// token j for state slot ns.
					per := e.Let("per", kir.I32, kir.Mul(cnt, kir.I(w.nr)))
					mbLoopStep(e, "k", sg, kir.Mul(kir.I(len(sums)), per), kir.I(nsg), func(k kir.Expr) {
						q := e.Let("q", kir.I32, kir.Div(k, per))
						j := e.Let("j", kir.I32, kir.Div(kir.Mod(k, per), kir.I(w.nr)))
						ns := e.Let("ns", kir.I32, kir.Mod(k, kir.I(w.nr)))
						from := kir.Mul(ns, kir.I(spn))
						var x kir.Expr
						if spn == scanSimd {
							x = kir.At(red, slot(base, q, j, kir.Add(from, lane)))
						} else {
							x = mbMask(kir.Lt(lane, kir.I(spn)), kir.At(red, slot(base, q, j, kir.Add(from, kir.Min(lane, kir.I(spn-1))))))
						}
						tot := e.Let("tot", kir.F32, kir.Simd{Op: "sum", X: x})
						t := e.Let("t", kir.I32, kir.Sub(kir.Sub(t1, kir.I(1)), kir.Add(i0, j)))
						nn := e.Let("nn", kir.I32, kir.Add(n0, ns))
						cond := kir.Op("==", lane, kir.I(0))
						if s.n%w.nr != 0 {
							cond = mbAnd(cond, kir.Lt(nn, kir.I(s.n)))
						}
						e.Emit(kir.If{Cond: cond, Then: e.Block(func() {
							for qi, v := range sums {
								write := e.Block(func() { w.accumulate(e, v, []kir.Expr{b, t, nn}, tot, blk, blocks) })
								if len(sums) == 1 {
									e.Emit(write...)
								} else {
									e.Emit(kir.If{Cond: kir.Op("==", q, kir.I(qi)), Then: write})
								}
							}
						})})
					})
					e.Emit(kir.Set(buf, kir.Sub(kir.I(1), buf)))
				})
			})
		})
	})
}

// accumulate writes x to v at coords on the first channel block and adds it
// on the later ones (the same thread each time, so no race).
func (w *bwdScan) accumulate(e *Emitter, v *ir.Value, coords []kir.Expr, x, blk kir.Expr, blocks int) {
	if blocks == 1 {
		e.Store(v, coords, x)
		return
	}
	first := e.Block(func() { e.Store(v, coords, x) })
	var later []kir.Stmt
	if v.Store != ir.Invalid { // a half type: load, add in f32, round on the store
		later = e.Block(func() { e.Store(v, coords, kir.Add(e.Load(v, coords), x)) })
	} else {
		buf := e.Buffer(v, "", elemType(v.Type.DType), 0, false)
		later = []kir.Stmt{kir.Assign{LHS: kir.At(buf, e.Linear(v.Type.Shape, coords)), Op: "+=", RHS: x}}
	}
	e.Emit(kir.If{Cond: kir.Op("==", blk, kir.I(0)), Then: first, Else: later})
}

// channelGroup computes du, dΔ, dA and dD for block blkIdx of channels (P
// lanes each), looping over the batch: du and dΔ are lane sums per token,
// dA and dD stay in registers until the end.
func (w *bwdScan) channelGroup(e *Emitter, grp *passes.Group, threads int, blkIdx kir.Expr) {
	s := w.s
	root := grp.Anchor
	duOut, dtOut, daOut, ddOut := root.Outputs[0], root.Outputs[1], root.Outputs[2], root.Outputs[5]
	p := s.lanes
	cpg := threads / p
	ch := newMBBounded(e, "ch", kir.Add(kir.Mul(blkIdx, kir.I(cpg)), kir.Div(kir.Local(0), kir.I(p))), s.e, s.e%cpg == 0)
	n := newMBBounded(e, "n", kir.Mod(kir.Local(0), kir.I(p)), s.n, s.n == p)
	first := mbAnd(kir.Op("==", n.idx, kir.I(0)), ch.valid) // the lane that writes per-channel values
	a := e.At(w.op.a, []kir.Expr{ch.clamped, n.clamped})
	var skip kir.Expr // D, read once
	if writes(grp, duOut) {
		skip = e.At(w.op.d, []kir.Expr{ch.clamped})
	}
	da := mbMutable(e, "dA", kir.F(0))
	dd := mbMutable(e, "dD", kir.F(0))
	mbLoop(e, "b", kir.I(0), kir.I(s.b), func(b kir.Expr) {
		carry := mbMutable(e, "carry", kir.F(0))
		mbLoop(e, "cc", kir.I(0), kir.I(s.chunks), func(cc kir.Expr) {
			c := e.Let("c", kir.I32, kir.Sub(kir.I(s.chunks-1), cc))
			w.reverseChunk(e, b, c, ch.clamped, n.clamped, a, func(t0, t1 kir.Expr) {
				mbLoop(e, "i", kir.I(0), kir.Sub(t1, t0), func(i kir.Expr) {
					st := w.reverseStep(e, b, i, t0, t1, ch.clamped, n.clamped, a, carry)
					coords := []kir.Expr{b, st.t, ch.idx}
					var stores []func()
					if writes(grp, daOut) { // dA = Σ g·Δ·a_t·s_{t−1}
						e.Emit(kir.Assign{LHS: da, Op: "+=", RHS: kir.Mul(kir.Mul(kir.Mul(st.g, st.tk.dt), st.at), st.prev)})
					}
					if writes(grp, ddOut) { // dD = Σ u·dy
						e.Emit(kir.Assign{LHS: dd, Op: "+=", RHS: kir.Mul(st.tk.u, st.dy)})
					}
					if writes(grp, duOut) { // du = Σ_n g·Δ·B + D·dy
						x := mbLaneSum(e, mbMask(n.valid, kir.Mul(kir.Mul(st.g, st.tk.dt), st.tk.bv)), p)
						stores = append(stores, func() { e.StoreThrough(grp, duOut, coords, kir.Add(x, kir.Mul(skip, st.dy))) })
					}
					if writes(grp, dtOut) { // dΔ = Σ_n g·(A·a_t·s_{t−1} + B·u)
						x := mbLaneSum(e, mbMask(n.valid, kir.Mul(st.g, kir.Add(kir.Mul(kir.Mul(a, st.at), st.prev), kir.Mul(st.tk.bv, st.tk.u)))), p)
						stores = append(stores, func() { e.StoreThrough(grp, dtOut, coords, x) })
					}
					if len(stores) > 0 {
						e.Emit(mbGuard(first, e.Block(func() {
							for _, f := range stores {
								f()
							}
						}))...)
					}
				})
			})
		})
	})
	if writes(grp, daOut) {
		e.Emit(mbGuard(mbAnd(ch.valid, n.valid), e.Block(func() { e.Store(daOut, []kir.Expr{ch.idx, n.idx}, da) }))...)
	}
	if writes(grp, ddOut) {
		e.Emit(mbGuard(first, e.Block(func() { e.Store(ddOut, []kir.Expr{ch.idx}, dd) }))...)
	}
}

// convForward: one thread per output element (b, t, c), K taps read through
// e.At (fused slices of in_proj's output compute inline), zero before t=0.
func convForward(e *Emitter, grp *passes.Group) error {
	root := grp.Anchor
	out := root.Out()
	total := int(out.Type.Shape.Elems())
	i := convGrid(e, total)
	c := e.Split(out.Type.Shape, i)
	e.StoreThrough(grp, out, c, convAt(e, root, c))
	return nil
}

// convAt is the conv's output at c: b[c] + Σ_j w[c,j]·x[b, t−(K−1)+j, c].
func convAt(e *Emitter, n *ir.Node, c []kir.Expr) kir.Expr {
	x, w, bias := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	k := w.Type.Shape[1]
	acc := e.At(bias, []kir.Expr{c[2]})
	for j := 0; j < k; j++ {
		acc = kir.Add(acc, convTap(e, x, w, c, j, k))
	}
	return acc
}

// convDXAt is the conv backward's dx at c: Σ_k w[c,k]·dy[b, t+(K−1)−k, c],
// zero past the sequence's end.
func convDXAt(e *Emitter, n *ir.Node, c []kir.Expr) kir.Expr {
	w, dy := n.Inputs[1], n.Inputs[2]
	k, l := w.Type.Shape[1], dy.Type.Shape[1]
	var acc kir.Expr
	for tap := k - 1; tap >= 0; tap-- {
		fwd := k - 1 - tap
		t := c[1]
		if fwd > 0 {
			t = kir.Min(kir.Add(t, kir.I(fwd)), kir.I(l-1))
		}
		term := kir.Mul(e.At(dy, []kir.Expr{c[0], t, c[2]}), e.At(w, []kir.Expr{c[2], kir.I(tap)}))
		if fwd > 0 {
			term = kir.Select{Cond: kir.Lt(c[1], kir.I(l-fwd)), A: term, B: kir.F(0)}
		}
		if acc == nil {
			acc = term
		} else {
			acc = kir.Add(acc, term)
		}
	}
	return acc
}

// convGrid sets a 1-D grid of at least total threads and returns the
// thread's index; threads past total return (the conv kernels have no
// barriers).
func convGrid(e *Emitter, total int) kir.Expr {
	e.K.Threads = [3]int{convThreads, 1, 1}
	e.K.Groups = [3]int{mbCeilDiv(total, convThreads), 1, 1}
	i := e.Let("i", kir.I32, kir.Thread(0))
	if total%convThreads != 0 {
		e.Emit(kir.If{Cond: kir.Op(">=", i, kir.I(total)), Then: []kir.Stmt{kir.Return{}}})
	}
	return i
}

// convTap is w[c,j]·x[b, t−(K−1)+j, c], zero at negative time.
func convTap(e *Emitter, x, w *ir.Value, c []kir.Expr, j, k int) kir.Expr {
	back := k - 1 - j
	t := c[1]
	if back > 0 {
		t = kir.Max(kir.Sub(t, kir.I(back)), kir.I(0))
	}
	term := kir.Mul(e.At(w, []kir.Expr{c[2], kir.I(j)}), e.At(x, []kir.Expr{c[0], t, c[2]}))
	if back > 0 {
		term = kir.Select{Cond: kir.Op(">=", c[1], kir.I(back)), A: term, B: kir.F(0)}
	}
	return term
}

// convBackward: one launch whose grid is the dx elements (one thread each,
// the K anti-causal taps), then C·K threads for dw[c,k] and C threads for
// db[c], each summing over all (b, t) in a loop. Those threads are few
// (C·(K+1)) and each reads B·L values of dy and x, coalesced across c; the
// sums have one writer each and a fixed order.
func convBackward(e *Emitter, grp *passes.Group) error {
	root := grp.Anchor
	x, w, dy := root.Inputs[0], root.Inputs[1], root.Inputs[2]
	dx, dw, db := root.Outputs[0], root.Outputs[1], root.Outputs[2]
	s := x.Type.Shape
	nb, l, nc, k := s[0], s[1], s[2], w.Type.Shape[1]
	type section struct {
		n    int
		body func(j kir.Expr)
	}
	var secs []section
	if writes(grp, dx) {
		secs = append(secs, section{nb * l * nc, func(j kir.Expr) {
			c := e.Split(s, j)
			e.StoreThrough(grp, dx, c, convDXAt(e, root, c))
		}})
	}
	if writes(grp, dw) {
		secs = append(secs, section{nc * k, func(j kir.Expr) {
			tap := e.Let("k", kir.I32, kir.Div(j, kir.I(nc)))
			ch := e.Let("ch", kir.I32, kir.Mod(j, kir.I(nc)))
			acc := mbMutable(e, "acc", kir.F(0))
			mbLoop(e, "b", kir.I(0), kir.I(nb), func(b kir.Expr) {
				// t from K−1−k: earlier tokens would read before t=0.
				mbLoop(e, "t", kir.Sub(kir.I(k-1), tap), kir.I(l), func(t kir.Expr) {
					src := kir.Add(kir.Sub(t, kir.I(k-1)), tap)
					e.Emit(kir.Assign{LHS: acc, Op: "+=", RHS: kir.Mul(e.At(dy, []kir.Expr{b, t, ch}), e.At(x, []kir.Expr{b, src, ch}))})
				})
			})
			e.Store(dw, []kir.Expr{ch, tap}, acc)
		}})
	}
	if writes(grp, db) {
		secs = append(secs, section{nc, func(ch kir.Expr) {
			acc := mbMutable(e, "acc", kir.F(0))
			mbLoop(e, "b", kir.I(0), kir.I(nb), func(b kir.Expr) {
				mbLoop(e, "t", kir.I(0), kir.I(l), func(t kir.Expr) {
					e.Emit(kir.Assign{LHS: acc, Op: "+=", RHS: e.At(dy, []kir.Expr{b, t, ch})})
				})
			})
			e.Store(db, []kir.Expr{ch}, acc)
		}})
	}
	total := 0
	for _, sec := range secs {
		total += sec.n
	}
	i := convGrid(e, total)
	// An if-else chain over the sections, the last without a test.
	var chain []kir.Stmt
	end := total
	for si := len(secs) - 1; si >= 0; si-- {
		start := end - secs[si].n
		body := e.Block(func() {
			j := i
			if start > 0 {
				j = e.Let("j", kir.I32, kir.Sub(i, kir.I(start)))
			}
			secs[si].body(j)
		})
		if chain == nil {
			chain = body
		} else {
			chain = []kir.Stmt{kir.If{Cond: kir.Lt(i, kir.I(end)), Then: body, Else: chain}}
		}
		end = start
	}
	e.Emit(chain...)
	return nil
}
