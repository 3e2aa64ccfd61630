package codegen

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Row reductions (softmax, rmsnorm and its backward, cross-entropy and its
// backward, reduce_* over trailing axes) share one layout: a team of lanes
// threads reduces each row, lanes striding over the row so that neighbouring
// lanes read neighbouring elements. A team is one thread (rows of ≤ 16
// elements), one simdgroup (≤ 512: simd_sum only, no barrier) or the whole
// threadgroup (simd_sum, then one partial per simdgroup in threadgroup memory
// and a barrier). Every lane folds the partials in the same fixed order, so
// results are deterministic and identical in all lanes. Elements are read
// through e.At, so fused element-wise producers compute inline.

func init() {
	templates["softmax"] = softmax
	templates["rmsnorm"] = rmsnorm
	templates["rmsnorm_bwd"] = rmsnormBwd
	templates["cross_entropy"] = crossEntropy
	templates["cross_entropy_bwd"] = crossEntropyBwd
	templates["reduce_sum"] = reduceKernel(ir.OpReduceSum)
	templates["reduce_max"] = reduceKernel(ir.OpReduceMax)
	templates["reduce_mean"] = reduceKernel(ir.OpReduceMean)
	for _, op := range []ir.Op{ir.OpReduceSum, ir.OpReduceMax, ir.OpReduceMean} {
		splitters[string(op)] = reduceSplit(op)
	}
	splitters["cross_entropy"] = crossEntropySplit
	splitters["rmsnorm_bwd"] = rmsnormBwdSplit
}

func rdCeil(a, b int) int { return (a + b - 1) / b }

func rdRound32(n int) int { return max(32, rdCeil(n, 32)*32) }

// rowLanes picks the team size for rows of w elements.
func rowLanes(w int) int {
	switch {
	case w <= 16:
		return 1
	case w <= 512:
		return 32
	case w <= 8192:
		return 256
	}
	return 1024
}

// rowMaxCached is the most elements per lane kept in registers between two
// passes over a row; longer rows are read (and fused producers recomputed) again.
const rowMaxCached = 16

// redTeam is a set of lanes threads that reduce one row together.
type redTeam struct {
	e              *Emitter
	threads, lanes int
	lid            kir.Expr // thread in the threadgroup
	lane           kir.Expr // thread in the team
	l32, sg        kir.Expr // lane in the simdgroup, simdgroup in the threadgroup
	shared         *[]kir.Stmt
}

// newRedTeam declares the thread positions of the kernel's one-dimensional
// threadgroup of threads (already set); lanes is 1, 32 or threads (a
// multiple of 32). Lane and simdgroup come from the target's own indices
// (Metal's thread_index_in_simdgroup), which equal lid % 32 and lid / 32
// only in a one-dimensional threadgroup.
func newRedTeam(e *Emitter, threads, lanes int) *redTeam {
	if lanes != 1 && lanes != 32 && lanes != threads || threads%32 != 0 || e.K.Threads != [3]int{threads, 1, 1} {
		panic(fmt.Sprintf("codegen: team of %d lanes in %d threads (threadgroup %v)", lanes, threads, e.K.Threads))
	}
	t := &redTeam{e: e, threads: threads, lanes: lanes, shared: new([]kir.Stmt)}
	t.lid = e.Let("lid", kir.I32, kir.Local(0))
	t.l32 = e.Let("l32_", kir.I32, kir.Builtin{Kind: "lane"})
	t.sg = e.Let("sg", kir.I32, kir.Builtin{Kind: "simdgroup"})
	switch lanes {
	case 1:
		t.lane = kir.I(0)
	case threads:
		t.lane = t.lid
	default:
		t.lane = t.l32
	}
	return t
}

// whole is a team of every thread of the threadgroup, sharing t's declarations.
func (t *redTeam) whole() *redTeam {
	w := *t
	w.lanes, w.lane = t.threads, t.lid
	return &w
}

// finish puts the threadgroup arrays at the top of the kernel (MSL declares
// them at kernel scope).
func (t *redTeam) finish() {
	t.e.K.Body = append(append([]kir.Stmt(nil), *t.shared...), t.e.K.Body...)
}

func (t *redTeam) newShared(typ kir.Type, n int) string {
	name := t.e.Temp("sh")
	*t.shared = append(*t.shared, kir.Shared{Name: name, Type: typ, Len: n})
	return name
}

// mut declares a mutable local.
func (t *redTeam) mut(prefix string, typ kir.Type, init kir.Expr) kir.Expr {
	name := t.e.Temp(prefix)
	t.e.Emit(kir.Decl{Name: name, Type: typ, Init: init, Mutable: true})
	return kir.V(name)
}

func nanExpr(x kir.Expr) kir.Expr { return kir.Fn("isnan", x) }

// maxNaNExpr is max(a, b) with NaN winning, as the reference's math.Max
// (Metal's max returns the other operand).
func maxNaNExpr(a, b kir.Expr) kir.Expr {
	return kir.Select{Cond: kir.Op("||", nanExpr(b), kir.Op(">", b, a)), A: b, B: a}
}

// reduce combines per-lane partials over the team with op ("sum" or "max",
// NaN-propagating); every lane gets the results. All lanes of the team must
// call it (a whole-threadgroup team: every thread).
func (t *redTeam) reduce(op string, typ kir.Type, xs ...kir.Expr) []kir.Expr {
	if t.lanes == 1 {
		return xs
	}
	e := t.e
	out := make([]kir.Expr, len(xs))
	for i, x := range xs {
		if op == "max" {
			m := e.Let("m", typ, kir.Simd{Op: "max", X: x})
			anyNaN := e.Let("nan", kir.I32, kir.Simd{Op: "max", X: kir.Select{Cond: nanExpr(x), A: kir.I(1), B: kir.I(0)}})
			out[i] = e.Let("m", typ, kir.Select{Cond: kir.Op(">", anyNaN, kir.I(0)), A: kir.F(math.NaN()), B: m})
		} else {
			out[i] = e.Let("s", typ, kir.Simd{Op: "sum", X: x})
		}
	}
	if t.lanes == 32 {
		return out
	}
	nsg := t.threads / 32
	sh := make([]string, len(xs))
	var put []kir.Stmt
	for i := range xs {
		sh[i] = t.newShared(typ, nsg)
		put = append(put, kir.Set(kir.At(sh[i], t.sg), out[i]))
	}
	e.Emit(kir.If{Cond: kir.Op("==", t.l32, kir.I(0)), Then: put}, kir.Barrier{})
	for i := range xs {
		acc := t.mut("acc", typ, kir.At(sh[i], kir.I(0)))
		s := e.Temp("s")
		var step kir.Stmt = kir.Assign{LHS: acc, Op: "+=", RHS: kir.At(sh[i], kir.V(s))}
		if op == "max" {
			step = kir.Set(acc, maxNaNExpr(acc, kir.At(sh[i], kir.V(s))))
		}
		e.Emit(kir.Loop(s, kir.I(1), kir.I(nsg), kir.I(1), step))
		out[i] = acc
	}
	// The partials are read by every thread before anyone writes them again.
	e.Emit(kir.Barrier{})
	return out
}

// lseStep folds x into a lane's running (max m, Σ exp(· − m) s): one exp per
// element. x == m adds exp(0) without computing −inf − −inf.
func (t *redTeam) lseStep(m, s, x kir.Expr) {
	t.e.Emit(kir.If{Cond: kir.Op(">", x, m),
		Then: []kir.Stmt{kir.Set(s, kir.Add(kir.Mul(s, kir.Fn("exp", kir.Sub(m, x))), kir.F(1))), kir.Set(m, x)},
		Else: []kir.Stmt{kir.Assign{LHS: s, Op: "+=", RHS: kir.Select{Cond: kir.Op("==", x, m), A: kir.F(1), B: kir.Fn("exp", kir.Sub(x, m))}}}})
}

// lseRescale is s·exp(m − M) for a partial (m, s) under the overall max M;
// exact (and NaN-free) when m == M, −inf included.
func lseRescale(m, s, M kir.Expr) kir.Expr {
	return kir.Select{Cond: kir.Op("==", m, M), A: s, B: kir.Mul(s, kir.Fn("exp", kir.Sub(m, M)))}
}

// lse combines the lanes' (m, s) pairs into the row's max and Σ exp(z − max).
func (t *redTeam) lse(m, s kir.Expr) (kir.Expr, kir.Expr) {
	if t.lanes == 1 {
		return m, s
	}
	e := t.e
	M := e.Let("M", kir.F32, kir.Simd{Op: "max", X: m})
	S := e.Let("S", kir.F32, kir.Simd{Op: "sum", X: lseRescale(m, s, M)})
	if t.lanes == 32 {
		return M, S
	}
	nsg := t.threads / 32
	shM, shS := t.newShared(kir.F32, nsg), t.newShared(kir.F32, nsg)
	e.Emit(kir.If{Cond: kir.Op("==", t.l32, kir.I(0)), Then: []kir.Stmt{
		kir.Set(kir.At(shM, t.sg), M), kir.Set(kir.At(shS, t.sg), S)}}, kir.Barrier{})
	gM := t.mut("M", kir.F32, kir.At(shM, kir.I(0)))
	i := e.Temp("s")
	e.Emit(kir.Loop(i, kir.I(1), kir.I(nsg), kir.I(1), kir.Assign{LHS: gM, Op: "max=", RHS: kir.At(shM, kir.V(i))}))
	gS := t.mut("S", kir.F32, kir.F(0))
	i = e.Temp("s")
	e.Emit(kir.Loop(i, kir.I(0), kir.I(nsg), kir.I(1), kir.Assign{LHS: gS, Op: "+=",
		RHS: lseRescale(kir.At(shM, kir.V(i)), kir.At(shS, kir.V(i)), gM)}))
	e.Emit(kir.Barrier{})
	return gM, gS
}

// cols emits a loop over the lane's elements of a row of w: fn gets the
// column j and the slot k (the element's position among the lane's).
func (t *redTeam) cols(w int, fn func(j, k kir.Expr)) {
	e := t.e
	k := e.Temp("k")
	body := e.Block(func() {
		j := kir.V(k)
		if t.lanes > 1 {
			j = e.Let("j", kir.I32, kir.Add(t.lane, kir.Mul(kir.V(k), kir.I(t.lanes))))
		}
		if w%t.lanes == 0 {
			fn(j, kir.V(k))
			return
		}
		e.Emit(kir.If{Cond: kir.Lt(j, kir.I(w)), Then: e.Block(func() { fn(j, kir.V(k)) })})
	})
	e.Emit(kir.Loop(k, kir.I(0), kir.I(rdCeil(w, t.lanes)), kir.I(1), body...))
}

// redSlots keeps a lane's elements of one operand between passes over a row,
// when they are few enough for registers.
type redSlots struct{ arr string }

func (t *redTeam) slots(w int) *redSlots {
	n := rdCeil(w, t.lanes)
	if n > rowMaxCached {
		return &redSlots{}
	}
	name := t.e.Temp("reg")
	t.e.Emit(kir.Array{Name: name, Type: kir.F32, Len: n})
	return &redSlots{arr: name}
}

// load reads v at c (first pass), keeping it in slot k.
func (s *redSlots) load(e *Emitter, v *ir.Value, c []kir.Expr, k kir.Expr) kir.Expr {
	x := e.At(v, c)
	if s.arr != "" {
		e.Emit(kir.Set(kir.At(s.arr, k), x))
	}
	return x
}

// get reads v at c again (later passes).
func (s *redSlots) get(e *Emitter, v *ir.Value, c []kir.Expr, k kir.Expr) kir.Expr {
	if s.arr != "" {
		return kir.At(s.arr, k)
	}
	return e.At(v, c)
}

// rowKernel is a grid of teams, one row each.
type rowKernel struct {
	*redTeam
	lead ir.Shape // the row axes
	rows int
	row  kir.Expr
	rc   []kir.Expr // the row's coordinates in lead
}

// newRowKernel sets the launch for rows of width w and declares the team;
// start then picks the row.
func newRowKernel(e *Emitter, lead ir.Shape, w int) *rowKernel {
	rows := int(lead.Elems())
	lanes := rowLanes(w)
	threads := lanes
	if lanes <= 32 {
		threads = min(256, rdRound32(rows*lanes))
	}
	e.K.Threads = [3]int{threads, 1, 1}
	e.K.Groups = [3]int{rdCeil(rows, threads/lanes), 1, 1}
	return &rowKernel{redTeam: newRedTeam(e, threads, lanes), lead: lead, rows: rows}
}

// start declares the team's row; teams past the last row return (a team
// smaller than the threadgroup has no barrier to meet).
func (r *rowKernel) start() {
	e := r.e
	per := r.threads / r.lanes
	if per == 1 {
		r.row = e.Let("row", kir.I32, kir.Group(0))
	} else {
		team := r.lid
		if r.lanes > 1 { // 32: a team is a simdgroup
			team = r.sg
		}
		r.row = e.Let("row", kir.I32, kir.Add(kir.Mul(kir.Group(0), kir.I(per)), team))
		if r.rows%per != 0 {
			e.Emit(kir.If{Cond: kir.Op(">=", r.row, kir.I(r.rows)), Then: []kir.Stmt{kir.Return{}}})
		}
	}
	r.rc = e.Split(r.lead, r.row)
}

// rowElem is the coordinates of column j of the row with coordinates rc in a
// tensor of rank rank (a scalar has none).
func rowElem(rc []kir.Expr, j kir.Expr, rank int) []kir.Expr {
	if rank == 0 {
		return nil
	}
	return append(append([]kir.Expr(nil), rc...), j)
}

// rowAxes splits a shape into its row axes and the width of the last axis;
// a scalar is one row of one element.
func rowAxes(s ir.Shape) (ir.Shape, int) {
	if len(s) == 0 {
		return nil, 1
	}
	return s[:len(s)-1], s[len(s)-1]
}

// onlineLSE runs the first pass of a row: each lane's running max and
// Σ exp, combined over the team. The row's elements stay in s's slots.
func (t *redTeam) onlineLSE(z *ir.Value, rc []kir.Expr, w int, s *redSlots) (kir.Expr, kir.Expr) {
	e := t.e
	m := t.mut("m", kir.F32, kir.F(math.Inf(-1)))
	sum := t.mut("s", kir.F32, kir.F(0))
	rank := len(z.Type.Shape)
	t.cols(w, func(j, k kir.Expr) {
		t.lseStep(m, sum, s.load(e, z, rowElem(rc, j, rank), k))
	})
	return t.lse(m, sum)
}

// softmax: one pass for the row's max and Σ exp (online rescaling), one to
// write exp(x − max)/Σ. Memory: x read once when a lane's elements fit its
// registers, else twice.
func softmax(e *Emitter, grp *passes.Group) error {
	x, y := grp.Anchor.Inputs[0], grp.Anchor.Out()
	lead, w := rowAxes(x.Type.Shape)
	r := newRowKernel(e, lead, w)
	r.start()
	s := r.slots(w)
	M, S := r.onlineLSE(x, r.rc, w, s)
	inv := e.Let("inv", kir.F32, kir.Div(kir.F(1), S))
	rank := len(x.Type.Shape)
	r.cols(w, func(j, k kir.Expr) {
		c := rowElem(r.rc, j, rank)
		e.StoreThrough(grp, y, c, kir.Mul(kir.Fn("exp", kir.Sub(s.get(e, x, c, k), M)), inv))
	})
	r.finish()
	return nil
}

// rmsnorm: y = x·r·γ with r = 1/√(mean(x²) + eps); x read once when cached.
func rmsnorm(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	x, g, y := n.Inputs[0], n.Inputs[1], n.Out()
	lead, w := rowAxes(x.Type.Shape)
	r := newRowKernel(e, lead, w)
	r.start()
	s := r.slots(w)
	ss := r.mut("ss", kir.F32, kir.F(0))
	rank := len(x.Type.Shape)
	r.cols(w, func(j, k kir.Expr) {
		v := s.load(e, x, rowElem(r.rc, j, rank), k)
		e.Emit(kir.Assign{LHS: ss, Op: "+=", RHS: kir.Mul(v, v)})
	})
	tot := r.reduce("sum", kir.F32, ss)[0]
	rs := e.Let("r", kir.F32, kir.Fn("rsqrt", kir.Add(kir.Div(tot, kir.F(float64(w))), kir.F(n.Attrs.Float("eps")))))
	r.cols(w, func(j, k kir.Expr) {
		c := rowElem(r.rc, j, rank)
		e.StoreThrough(grp, y, c, kir.Mul(kir.Mul(s.get(e, x, c, k), rs), e.At(g, []kir.Expr{j})))
	})
	r.finish()
	return nil
}

// rmsnormBwd: per row r = 1/√(mean(x²)+eps), x̂ = x·r,
// dx = r·(dy·γ − x̂·mean(dy·γ·x̂)), and dγ = Σ_rows dy·x̂.
//
// When dγ is not needed (frozen γ, as in QLoRA) rows run in parallel like
// rmsnorm. dγ is a column sum over every row that needs each row's r: in one
// launch and without atomics that is one threadgroup looping over the rows,
// each thread owning fixed columns and keeping their dγ in registers. It is
// deterministic but runs on one GPU core: (rows·width) reads of x and dy at
// one core's bandwidth. Long ones split in two launches (rmsnormBwdSplit).
func rmsnormBwd(e *Emitter, grp *passes.Group) error {
	var dg *ir.Value
	if writes(grp, grp.Anchor.Outputs[1]) {
		dg = grp.Anchor.Outputs[1]
	}
	rmsnormBwdRows(e, grp, dg, 1, 0)
	return nil
}

// rmsnormBwdRows emits rmsnorm_bwd. Without dg (nil) a team per row; with
// it, threadgroup g of groups loops over rows [g·per, (g+1)·per) and writes
// its column sums to dg: the result itself for one group, else the group's
// row of partials [groups, width].
func rmsnormBwdRows(e *Emitter, grp *passes.Group, dg *ir.Value, groups, per int) {
	n := grp.Anchor
	x, g, dy := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	dx := n.Outputs[0]
	needDX, needDG := writes(grp, dx), dg != nil
	eps := n.Attrs.Float("eps")
	lead, w := rowAxes(x.Type.Shape)
	rank := len(x.Type.Shape)

	var t *redTeam
	var rc []kir.Expr
	var acc *redSlots
	var loopVar string
	if !needDG {
		r := newRowKernel(e, lead, w)
		r.start()
		t, rc = r.redTeam, r.rc
	} else {
		threads := min(1024, rdRound32(w))
		e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{groups, 1, 1}
		t = newRedTeam(e, threads, threads)
		n := rdCeil(w, threads)
		acc = &redSlots{arr: e.Temp("dg")}
		e.Emit(kir.Array{Name: acc.arr, Type: kir.F32, Len: n})
		k := e.Temp("k")
		e.Emit(kir.Loop(k, kir.I(0), kir.I(n), kir.I(1), kir.Set(kir.At(acc.arr, kir.V(k)), kir.F(0))))
		loopVar = e.Temp("row")
	}
	row := func() {
		sx, sdy := t.slots(w), t.slots(w)
		ss := t.mut("ss", kir.F32, kir.F(0))
		dot := t.mut("dot", kir.F32, kir.F(0))
		t.cols(w, func(j, k kir.Expr) {
			c := rowElem(rc, j, rank)
			xv, dyv := sx.load(e, x, c, k), sdy.load(e, dy, c, k)
			e.Emit(kir.Assign{LHS: ss, Op: "+=", RHS: kir.Mul(xv, xv)},
				kir.Assign{LHS: dot, Op: "+=", RHS: kir.Mul(kir.Mul(dyv, e.At(g, []kir.Expr{j})), xv)})
		})
		sums := t.reduce("sum", kir.F32, ss, dot)
		rs := e.Let("r", kir.F32, kir.Fn("rsqrt", kir.Add(kir.Div(sums[0], kir.F(float64(w))), kir.F(eps))))
		mean := e.Let("mean", kir.F32, kir.Div(kir.Mul(sums[1], rs), kir.F(float64(w))))
		t.cols(w, func(j, k kir.Expr) {
			c := rowElem(rc, j, rank)
			xh := e.Let("xh", kir.F32, kir.Mul(sx.get(e, x, c, k), rs))
			dyv := sdy.get(e, dy, c, k)
			if needDX {
				e.StoreThrough(grp, dx, c, kir.Mul(rs, kir.Sub(kir.Mul(dyv, e.At(g, []kir.Expr{j})), kir.Mul(xh, mean))))
			}
			if needDG {
				e.Emit(kir.Assign{LHS: kir.At(acc.arr, k), Op: "+=", RHS: kir.Mul(dyv, xh)})
			}
		})
	}
	if !needDG {
		row()
	} else {
		rows := int(lead.Elems())
		body := e.Block(func() {
			rc = e.Split(lead, kir.V(loopVar))
			row()
		})
		from, to := kir.Expr(kir.I(0)), kir.Expr(kir.I(rows))
		if groups > 1 {
			from = e.Let("from", kir.I32, kir.Mul(kir.Group(0), kir.I(per)))
			to = kir.Add(from, kir.I(per))
			if groups*per != rows {
				to = kir.Min(to, kir.I(rows))
			}
		}
		e.Emit(kir.Loop(loopVar, from, to, kir.I(1), body...))
		t.cols(w, func(j, k kir.Expr) {
			c := []kir.Expr{j}
			if groups > 1 {
				c = []kir.Expr{kir.Group(0), j}
			}
			e.Store(dg, c, kir.At(acc.arr, k))
		})
	}
	t.finish()
}

// rmsnormBwdSplit splits the dγ column sum over many rows (see split.go):
// pass 1 is rmsnormBwdRows on threadgroups of per rows each (dx for its
// rows, and its column sums as a row of partials [groups, width]); pass 2
// sums each column of the partials in row order.
func rmsnormBwdSplit(grp *passes.Group) *split {
	n := grp.Anchor
	dg := n.Outputs[1]
	if !writes(grp, dg) {
		return nil
	}
	lead, w := rowAxes(n.Inputs[0].Type.Shape)
	rows := int(lead.Elems())
	if rows < 2 || !splitWorth(1, int64(rows)*int64(w)) {
		return nil
	}
	groups, per := splitSlices(rows, int64(w), splitMaxGroups)
	if groups < 2 {
		return nil
	}
	late := grp.Finished(dg)
	sum := &reduction{grp: grp, op: ir.OpReduceSum}
	return &split{partials: ir.T(ir.F32, groups, w), early: func(v *ir.Value) bool { return !late[v] },
		pass1: func(e *Emitter, p *ir.Value) { rmsnormBwdRows(e, grp, p, groups, per) },
		pass2: func(e *Emitter, p *ir.Value) {
			sum.columns(e, w, groups, 1, func(oi kir.Expr) func(k kir.Expr) kir.Expr {
				return func(k kir.Expr) kir.Expr { return e.Load(p, []kir.Expr{k, oi}) }
			}, func(oi, _, acc kir.Expr) { e.Store(dg, []kir.Expr{oi}, acc) })
		}}
}

// ceCounts is whether target t counts: not ignore_index and inside the
// vocabulary (the reference rejects other targets; the kernel skips them
// rather than read outside the row).
func ceCounts(t kir.Expr, ignore, v int) kir.Expr {
	in := kir.Op("&&", kir.Op(">=", t, kir.I(0)), kir.Lt(t, kir.I(v)))
	if ignore >= 0 && ignore < v {
		return kir.Op("&&", kir.Op("!=", t, kir.I(ignore)), in)
	}
	return in
}

// crossEntropy is the mean over counted targets of logsumexp(z) − z[target].
// The loss needs every row, so the kernel is one threadgroup: its teams take
// rows in turn (team i: rows i, i+teams, …), each team's loss and count
// accumulate in the lanes' registers in that fixed order, and the teams'
// totals are summed in threadgroup order at the end, so the result is
// deterministic. Cost: the logits are read once, by one GPU core; long ones
// split in two launches (crossEntropySplit).
func crossEntropy(e *Emitter, grp *passes.Group) error {
	out := grp.Anchor.Out()
	t, total, count := ceLoss(e, grp, 1, 0)
	e.Emit(kir.If{Cond: kir.Op("==", t.lid, kir.I(0)), Then: e.Block(func() {
		e.Store(out, nil, kir.Select{Cond: kir.Op(">", count, kir.I(0)),
			A: kir.Div(total, kir.Convert{Type: kir.F32, X: count}), B: kir.F(0)})
	})})
	t.finish()
	return nil
}

// ceLoss emits the loss and target count of the rows threadgroup g of
// groups takes (rows per of them, in turn over its teams; all rows when
// groups is 1): every thread gets the sums, in i32 for the count.
func ceLoss(e *Emitter, grp *passes.Group, groups, per int) (*redTeam, kir.Expr, kir.Expr) {
	n := grp.Anchor
	z, y := n.Inputs[0], n.Inputs[1]
	ignore := n.Attrs.Int("ignore_index")
	lead, v := rowAxes(z.Type.Shape)
	rows := int(lead.Elems())
	if groups == 1 {
		per = rows
	}
	lanes := rowLanes(v)
	threads := 1024
	if lanes <= 32 {
		threads = min(1024, rdRound32(per*lanes))
	} else {
		lanes = threads
	}
	e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{groups, 1, 1}
	t := newRedTeam(e, threads, lanes)
	teams := threads / lanes
	first := kir.Expr(kir.I(0))
	switch {
	case lanes == 1:
		first = t.lid
	case teams > 1: // teams of 32 lanes: simdgroups
		first = t.sg
	}
	if groups > 1 {
		first = kir.Add(kir.Mul(kir.Group(0), kir.I(teams)), first)
	}
	loss := t.mut("loss", kir.F32, kir.F(0))
	cnt := t.mut("cnt", kir.I32, kir.I(0))
	rv := e.Temp("row")
	body := e.Block(func() {
		rc := e.Split(lead, kir.V(rv))
		tg := e.At(y, rc)
		e.Emit(kir.If{Cond: ceCounts(tg, ignore, v), Then: e.Block(func() {
			M, S := t.onlineLSE(z, rc, v, &redSlots{})
			zt := e.At(z, rowElem(rc, tg, len(z.Type.Shape)))
			e.Emit(kir.Assign{LHS: loss, Op: "+=", RHS: kir.Add(kir.Sub(M, zt), kir.Fn("log", S))},
				kir.Assign{LHS: cnt, Op: "+=", RHS: kir.I(1)})
		})})
	})
	e.Emit(kir.Loop(rv, first, kir.I(rows), kir.I(teams*groups), body...))
	total, count := loss, cnt
	if teams > 1 {
		// The team's lanes agree; lane 0 speaks for it.
		own, ownCnt := loss, cnt
		if lanes > 1 {
			lead0 := kir.Op("==", t.lane, kir.I(0))
			own, ownCnt = kir.Select{Cond: lead0, A: loss, B: kir.F(0)}, kir.Select{Cond: lead0, A: cnt, B: kir.I(0)}
		}
		w := t.whole()
		total = w.reduce("sum", kir.F32, own)[0]
		count = w.reduce("sum", kir.I32, ownCnt)[0]
	}
	return t, total, count
}

// crossEntropySplit splits the loss over many rows (see split.go): pass 1
// runs ceLoss on threadgroups of per rows each, writing each one's loss and
// count (as f32: exact below 2^24 rows) to partials (losses, then counts);
// pass 2, one threadgroup, folds them in order and divides.
func crossEntropySplit(grp *passes.Group) *split {
	z := grp.Anchor.Inputs[0]
	lead, v := rowAxes(z.Type.Shape)
	rows := int(lead.Elems())
	if rows < 2 || rows >= 1<<24 || !splitWorth(1, int64(rows)*int64(v)) {
		return nil
	}
	groups, per := splitSlices(rows, int64(v), splitMaxGroups)
	if groups < 2 {
		return nil
	}
	return &split{partials: ir.T(ir.F32, 2*groups), pass1: func(e *Emitter, p *ir.Value) {
		t, total, count := ceLoss(e, grp, groups, per)
		e.Emit(kir.If{Cond: kir.Op("==", t.lid, kir.I(0)), Then: e.Block(func() {
			e.Store(p, []kir.Expr{kir.Group(0)}, total)
			e.Store(p, []kir.Expr{kir.Add(kir.Group(0), kir.I(groups))}, kir.Convert{Type: kir.F32, X: count})
		})})
		t.finish()
	}, pass2: func(e *Emitter, p *ir.Value) {
		threads := min(1024, rdRound32(groups))
		e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{1, 1, 1}
		t := newRedTeam(e, threads, threads)
		loss := t.mut("loss", kir.F32, kir.F(0))
		cnt := t.mut("cnt", kir.F32, kir.F(0))
		i := e.Temp("i")
		e.Emit(kir.Loop(i, t.lid, kir.I(groups), kir.I(threads),
			kir.Assign{LHS: loss, Op: "+=", RHS: e.Load(p, []kir.Expr{kir.V(i)})},
			kir.Assign{LHS: cnt, Op: "+=", RHS: e.Load(p, []kir.Expr{kir.Add(kir.V(i), kir.I(groups))})}))
		sums := t.reduce("sum", kir.F32, loss, cnt)
		e.Emit(kir.If{Cond: kir.Op("==", t.lid, kir.I(0)), Then: e.Block(func() {
			e.Store(grp.Anchor.Out(), nil, kir.Select{Cond: kir.Op(">", sums[1], kir.F(0)),
				A: kir.Div(sums[0], sums[1]), B: kir.F(0)})
		})})
		t.finish()
	}}
}

// crossEntropyBwd: dz = (softmax(z) − onehot(y))·dloss/count, zero on rows
// whose target does not count. Rows run in parallel; count is over all rows,
// so every threadgroup first counts the targets itself (rows i32 reads per
// threadgroup, small next to a row of logits; no second launch). Memory: z
// read once when cached in registers, else twice.
func crossEntropyBwd(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	z, y, dl, dz := n.Inputs[0], n.Inputs[1], n.Inputs[2], n.Out()
	ignore := n.Attrs.Int("ignore_index")
	lead, v := rowAxes(z.Type.Shape)
	rank := len(z.Type.Shape)
	r := newRowKernel(e, lead, v)
	cnt := r.mut("cnt", kir.I32, kir.I(0))
	i := e.Temp("i")
	e.Emit(kir.Loop(i, r.lid, kir.I(r.rows), kir.I(r.threads), e.Block(func() {
		tg := e.At(y, e.Split(lead, kir.V(i)))
		e.Emit(kir.Assign{LHS: cnt, Op: "+=", RHS: kir.Select{Cond: ceCounts(tg, ignore, v), A: kir.I(1), B: kir.I(0)}})
	})...))
	count := r.whole().reduce("sum", kir.I32, cnt)[0]
	scale := e.Let("scale", kir.F32, kir.Div(e.At(dl, nil), kir.Convert{Type: kir.F32, X: count}))
	r.start()
	tg := e.At(y, r.rc)
	valid := e.Block(func() {
		s := r.slots(v)
		M, S := r.onlineLSE(z, r.rc, v, s)
		inv := e.Let("inv", kir.F32, kir.Div(kir.F(1), S))
		r.cols(v, func(j, k kir.Expr) {
			c := rowElem(r.rc, j, rank)
			p := kir.Mul(kir.Fn("exp", kir.Sub(s.get(e, z, c, k), M)), inv)
			hot := kir.Select{Cond: kir.Op("==", j, tg), A: kir.F(1), B: kir.F(0)}
			e.Store(dz, c, kir.Mul(kir.Sub(p, hot), scale))
		})
	})
	zero := e.Block(func() {
		r.cols(v, func(j, _ kir.Expr) { e.Store(dz, rowElem(r.rc, j, rank), kir.F(0)) })
	})
	e.Emit(kir.If{Cond: ceCounts(tg, ignore, v), Then: valid, Else: zero})
	r.finish()
	return nil
}

// reduction is a reduce_sum, reduce_max or reduce_mean group: the input x
// split into kept axes (o outputs) and reduced ones (w elements per output).
type reduction struct {
	grp       *passes.Group
	op        ir.Op
	x, out    *ir.Value
	axes      []int
	kept, red ir.Shape
	trailing  bool // the reduced axes are the last ones: rows
	o, w      int
}

func newReduction(op ir.Op, grp *passes.Group) *reduction {
	n := grp.Anchor
	rd := &reduction{grp: grp, op: op, x: n.Inputs[0], out: n.Out(), axes: n.Attrs.Ints("axes"), trailing: true}
	for i, d := range rd.x.Type.Shape {
		if hasAxis(rd.axes, i) {
			rd.red = append(rd.red, d)
		} else {
			rd.kept = append(rd.kept, d)
			if len(rd.red) > 0 {
				rd.trailing = false
			}
		}
	}
	rd.o, rd.w = int(rd.kept.Elems()), int(rd.red.Elems())
	return rd
}

func (rd *reduction) combine() string {
	if rd.op == ir.OpReduceMax {
		return "max"
	}
	return "sum"
}

func (rd *reduction) init() kir.Expr {
	if rd.op == ir.OpReduceMax {
		return kir.F(math.Inf(-1))
	}
	return kir.F(0)
}

func (rd *reduction) fold(acc, v kir.Expr) kir.Stmt {
	if rd.op == ir.OpReduceMax {
		return kir.Set(acc, maxNaNExpr(acc, v))
	}
	return kir.Assign{LHS: acc, Op: "+=", RHS: v}
}

func (rd *reduction) finalize(v kir.Expr) kir.Expr {
	if rd.op == ir.OpReduceMean {
		return kir.Div(v, kir.F(float64(rd.w)))
	}
	return v
}

// elem is x at kept coordinates kc and reduced element k (row-major in red).
func (rd *reduction) elem(e *Emitter, kc []kir.Expr, k kir.Expr) kir.Expr {
	rc := Coords(rd.red, k)
	c := make([]kir.Expr, 0, len(rd.x.Type.Shape))
	for i := range rd.x.Type.Shape {
		if hasAxis(rd.axes, i) {
			c, rc = append(c, rc[0]), rc[1:]
		} else {
			c, kc = append(c, kc[0]), kc[1:]
		}
	}
	return e.At(rd.x, c)
}

// rowGroups is the grid of the one-launch row reduction.
func (rd *reduction) rowGroups() int {
	lanes := rowLanes(rd.w)
	threads := lanes
	if lanes <= 32 {
		threads = min(256, rdRound32(rd.o*lanes))
	}
	return rdCeil(rd.o, threads/lanes)
}

// reduceKernel lowers reduce_sum, reduce_max and reduce_mean. Reductions over
// trailing axes are row reductions; others (bias gradients summing batch and
// time, say) give each output a column of threads (see columns). Long ones
// with few outputs split in two launches (reduceSplit).
func reduceKernel(op ir.Op) template {
	return func(e *Emitter, grp *passes.Group) error {
		rd := newReduction(op, grp)
		if rd.trailing {
			r := newRowKernel(e, rd.kept, rd.w)
			r.start()
			acc := r.mut("acc", kir.F32, rd.init())
			r.cols(rd.w, func(j, _ kir.Expr) { e.Emit(rd.fold(acc, rd.elem(e, r.rc, j))) })
			rd.finishRow(r, acc)
			return nil
		}
		rd.columns(e, rd.o, rd.w, 1, func(oi kir.Expr) func(k kir.Expr) kir.Expr {
			kc := e.Split(rd.kept, oi)
			return func(k kir.Expr) kir.Expr { return rd.elem(e, kc, k) }
		}, rd.storeOut(e))
		return nil
	}
}

// finishRow combines a row's lane partials acc over the team, then stores
// the result (through the element-wise epilogue) and runs the row epilogue.
func (rd *reduction) finishRow(r *rowKernel, acc kir.Expr) {
	e, grp := r.e, rd.grp
	res := rd.finalize(r.reduce(rd.combine(), kir.F32, acc)[0])
	if len(grp.RowEpilogue) > 0 {
		res = e.Let("r", kir.F32, res)
	}
	st := e.Block(func() { e.StoreThrough(grp, rd.out, e.Split(rd.out.Type.Shape, r.row), res) })
	if r.lanes > 1 {
		st = []kir.Stmt{kir.If{Cond: kir.Op("==", r.lane, kir.I(0)), Then: st}}
	}
	e.Emit(st...)
	r.rowEpilogue(grp, rd.out, res)
	r.finish()
}

// storeOut stores output oi's folded value (through the epilogue).
func (rd *reduction) storeOut(e *Emitter) func(oi, _, acc kir.Expr) {
	return func(oi, _, acc kir.Expr) {
		e.StoreThrough(rd.grp, rd.out, e.Split(rd.out.Type.Shape, oi), rd.finalize(acc))
	}
}

// columns emits a column reduction of o outputs, each folding w elements
// (elems(oi) gives output oi's element k; it is called once per thread,
// before the loop, so per-output coordinates are split once). A
// threadgroup is 32 outputs × 8 parts (more parts for fewer outputs, fewer
// for short reductions), part p folding elements p, p+parts, … (consecutive
// threads read consecutive outputs), and part 0 folding the parts' partials
// in order. With slices > 1 each column of outputs has that many
// threadgroups, slice s folding elements [s·per, (s+1)·per) of w; store
// gets each output's fold in each slice.
func (rd *reduction) columns(e *Emitter, o, w, slices int, elems func(oi kir.Expr) func(k kir.Expr) kir.Expr, store func(oi, slice, acc kir.Expr)) {
	per := rdCeil(w, slices)
	cols := 1
	for cols < min(o, 32) {
		cols *= 2
	}
	parts := 256 / cols
	for parts > 1 && parts/2 >= per {
		parts /= 2
	}
	threads := cols * parts
	e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{rdCeil(o, cols) * slices, 1, 1}
	lid := e.Let("lid", kir.I32, kir.Local(0))
	col, part := kir.Expr(kir.I(0)), kir.Expr(kir.I(0))
	if cols > 1 {
		col = e.Let("col", kir.I32, kir.Mod(lid, kir.I(cols)))
	}
	if parts > 1 {
		part = e.Let("part", kir.I32, kir.Div(lid, kir.I(cols)))
	}
	block, slice := kir.Group(0), kir.Expr(kir.I(0))
	from, to := part, kir.Expr(kir.I(w))
	if slices > 1 {
		block = kir.Div(kir.Group(0), kir.I(slices))
		slice = e.Let("slice", kir.I32, kir.Mod(kir.Group(0), kir.I(slices)))
		start := e.Let("from", kir.I32, kir.Mul(slice, kir.I(per)))
		from, to = kir.Add(start, part), kir.Add(start, kir.I(per))
		if per*slices != w {
			to = kir.Min(to, kir.I(w))
		}
	}
	oi := e.Let("o", kir.I32, kir.Add(kir.Mul(block, kir.I(cols)), col))
	acc := e.Temp("acc")
	e.Emit(kir.Decl{Name: acc, Type: kir.F32, Init: rd.init(), Mutable: true})
	kv := e.Temp("k")
	loop := e.Block(func() {
		elem := elems(oi)
		body := e.Block(func() { e.Emit(rd.fold(kir.V(acc), elem(kir.V(kv)))) })
		e.Emit(kir.Loop(kv, from, to, kir.I(parts), body...))
	})
	if o%cols != 0 {
		loop = []kir.Stmt{kir.If{Cond: kir.Lt(oi, kir.I(o)), Then: loop}}
	}
	e.Emit(loop...)
	var sh string
	cond := kir.Expr(kir.Lit{Type: kir.Bool, V: 1})
	if parts > 1 {
		sh = e.Temp("sh")
		e.Emit(kir.Set(kir.At(sh, lid), kir.V(acc)), kir.Barrier{})
		cond = kir.Op("==", part, kir.I(0))
	}
	if o%cols != 0 {
		cond = kir.Op("&&", cond, kir.Lt(oi, kir.I(o)))
		if parts == 1 {
			cond = kir.Lt(oi, kir.I(o))
		}
	}
	e.Emit(kir.If{Cond: cond, Then: e.Block(func() {
		if parts > 1 {
			p := e.Temp("pr")
			e.Emit(kir.Loop(p, kir.I(1), kir.I(parts), kir.I(1), rd.fold(kir.V(acc), kir.At(sh, kir.Add(kir.Mul(kir.V(p), kir.I(cols)), col)))))
		}
		store(oi, slice, kir.V(acc))
	})})
	if parts > 1 {
		e.K.Body = append([]kir.Stmt{kir.Shared{Name: sh, Type: kir.F32, Len: threads}}, e.K.Body...)
	}
}

// reduceSplit splits a long reduction with few outputs (see split.go).
// Rows: each row's w elements in slices of per, pass 1 one team per slice,
// pass 2 a row reduction of the slices' partials (then mean's division and
// the epilogue). Columns: each column of outputs in slices of its reduced
// elements, one threadgroup each, pass 2 a column reduction of the
// partials. Not split: a reduction with a row epilogue, which reads its
// long rows again after the result and so stays on the row's team.
func reduceSplit(op ir.Op) func(grp *passes.Group) *split {
	return func(grp *passes.Group) *split {
		rd := newReduction(op, grp)
		if rd.trailing {
			if len(grp.RowEpilogue) > 0 || !splitWorth(rd.rowGroups(), int64(rd.o)*int64(rd.w)) {
				return nil
			}
			slices, per := splitSlices(rd.w, 1, max(1, splitMaxGroups/rd.o))
			// Whole rounds of the team's lanes: only the last slice needs a bound.
			per = rdCeil(per, rowLanes(per)) * rowLanes(per)
			slices = rdCeil(rd.w, per)
			if slices < 2 {
				return nil
			}
			return &split{partials: ir.T(ir.F32, rd.o*slices), pass1: func(e *Emitter, p *ir.Value) {
				r := newRowKernel(e, ir.Shape{rd.o * slices}, per)
				r.start()
				row := e.Let("row", kir.I32, kir.Div(r.row, kir.I(slices)))
				start := e.Let("from", kir.I32, kir.Mul(kir.Mod(r.row, kir.I(slices)), kir.I(per)))
				kc := e.Split(rd.kept, row)
				acc := r.mut("acc", kir.F32, rd.init())
				r.cols(per, func(j, _ kir.Expr) {
					k := e.Let("k", kir.I32, kir.Add(start, j))
					if per*slices == rd.w {
						e.Emit(rd.fold(acc, rd.elem(e, kc, k)))
						return
					}
					e.Emit(kir.If{Cond: kir.Lt(k, kir.I(rd.w)), Then: e.Block(func() { e.Emit(rd.fold(acc, rd.elem(e, kc, k))) })})
				})
				tot := r.reduce(rd.combine(), kir.F32, acc)[0]
				st := e.Block(func() { e.Store(p, []kir.Expr{r.row}, tot) })
				if r.lanes > 1 {
					st = []kir.Stmt{kir.If{Cond: kir.Op("==", r.lane, kir.I(0)), Then: st}}
				}
				e.Emit(st...)
				r.finish()
			}, pass2: func(e *Emitter, p *ir.Value) {
				r := newRowKernel(e, rd.kept, slices)
				r.start()
				acc := r.mut("acc", kir.F32, rd.init())
				r.cols(slices, func(j, _ kir.Expr) {
					e.Emit(rd.fold(acc, e.Load(p, []kir.Expr{kir.Add(kir.Mul(r.row, kir.I(slices)), j)})))
				})
				rd.finishRow(r, acc)
			}}
		}
		cols := 1
		for cols < min(rd.o, 32) {
			cols *= 2
		}
		blocks := rdCeil(rd.o, cols)
		if !splitWorth(blocks, int64(rd.o)*int64(rd.w)) {
			return nil
		}
		slices, _ := splitSlices(rd.w, int64(cols), max(1, splitMaxGroups/blocks))
		if slices < 2 {
			return nil
		}
		return &split{partials: ir.T(ir.F32, slices, rd.o), pass1: func(e *Emitter, p *ir.Value) {
			rd.columns(e, rd.o, rd.w, slices, func(oi kir.Expr) func(k kir.Expr) kir.Expr {
				kc := e.Split(rd.kept, oi)
				return func(k kir.Expr) kir.Expr { return rd.elem(e, kc, k) }
			}, func(oi, slice, acc kir.Expr) { e.Store(p, []kir.Expr{slice, oi}, acc) })
		}, pass2: func(e *Emitter, p *ir.Value) {
			rd.columns(e, rd.o, slices, 1, func(oi kir.Expr) func(k kir.Expr) kir.Expr {
				return func(k kir.Expr) kir.Expr { return e.Load(p, []kir.Expr{k, oi}) }
			}, rd.storeOut(e))
		}}
	}
}

// rowEpilogue computes the group's row epilogue over the row once the row's
// result res (of out, reduced keeping its axis) is known to every lane: the
// epilogue reads it broadcast, at (row, 0).
func (r *rowKernel) rowEpilogue(grp *passes.Group, out *ir.Value, res kir.Expr) {
	if len(grp.RowEpilogue) == 0 {
		return
	}
	e := r.e
	rank := len(out.Type.Shape)
	e.Bind(out, append(append([]kir.Expr(nil), r.rc...), kir.I(0)), res)
	var outs []*ir.Value
	in := map[*ir.Node]bool{}
	for _, n := range grp.RowEpilogue {
		in[n] = true
	}
	for _, v := range grp.Outputs {
		if in[v.Node] {
			outs = append(outs, v)
		}
	}
	w := grp.Root.Out().Type.Shape[rank-1]
	r.cols(w, func(j, _ kir.Expr) {
		c := rowElem(r.rc, j, rank)
		for _, v := range outs {
			e.Store(v, c, e.At(v, c))
		}
	})
}

func hasAxis(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
