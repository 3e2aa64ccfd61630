package codegen

import (
	"math"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Routing kernels of the mixture of experts: top-k selection, the dispatch
// map that groups (token, choice) pairs by expert, and scatter_add (the
// combine, and gather's adjoint for embedding gradients). All deterministic
// without atomics.

func init() {
	templates["topk"] = topk
	templates["moe_route"] = moeRoute
	templates["scatter_add"] = scatterAdd
}

// ranksAbove is a > b in topk's order, where NaN ranks above every number.
func ranksAbove(a, b kir.Expr) kir.Expr {
	return kir.Op("||", kir.Op("&&", nanExpr(a), kir.Not{X: nanExpr(b)}), kir.Op(">", a, b))
}

// topk: one thread per row (router rows are a few experts wide). Choice j
// is the first element, scanning in index order, that ranks strictly after
// choice j−1 in the order (value descending, NaN first, lower index first on
// ties), which is exactly the reference's stable sort. Reads k·width
// elements per row. Routing fused (see passes.mergeRouting), the thread
// also computes the softmax it selects from, and renormalises the chosen
// values: softmax, top-k and renormalisation in one kernel.
func topk(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	x := n.Inputs[0]
	vals, idxs := n.Outputs[0], n.Outputs[1]
	k := n.Attrs.Int("k")
	lead, w := rowAxes(x.Type.Shape)
	rows := int(lead.Elems())
	threads := min(256, rdRound32(rows))
	e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{rdCeil(rows, threads), 1, 1}
	row := e.Let("row", kir.I32, kir.Thread(0))
	if rows%threads != 0 {
		e.Emit(kir.If{Cond: kir.Op(">=", row, kir.I(rows)), Then: []kir.Stmt{kir.Return{}}})
	}
	rc := e.Split(lead, row)
	rank := len(x.Type.Shape)
	mut := func(prefix string, t kir.Type, init kir.Expr) kir.Expr {
		name := e.Temp(prefix)
		e.Emit(kir.Decl{Name: name, Type: t, Init: init, Mutable: true})
		return kir.V(name)
	}
	value := func(i kir.Expr) kir.Expr { return e.At(x, rowElem(rc, i, rank)) }
	if e.In(x) && x.Node.Op == ir.OpSoftmax {
		value = routeSoftmax(e, grp, x, rc, w, mut)
	}
	renorm := routeRenorm(grp, vals)
	var kept, sum kir.Expr
	if renorm != nil {
		kept = kir.V(e.Temp("tv"))
		e.Emit(kir.Array{Name: kept.(kir.Var).Name, Type: kir.F32, Len: k})
		sum = mut("sum", kir.F32, kir.F(0))
	}
	pv, pi := mut("pv", kir.F32, kir.F(0)), mut("pi", kir.I32, kir.I(-1))
	jv := e.Temp("j")
	choose := e.Block(func() {
		bv, bi := mut("bv", kir.F32, kir.F(0)), mut("bi", kir.I32, kir.I(-1))
		iv := e.Temp("i")
		scan := e.Block(func() {
			i := kir.V(iv)
			v := e.Let("v", kir.F32, value(i))
			after := kir.Op("||", kir.Lt(pi, kir.I(0)), kir.Op("||", ranksAbove(pv, v),
				kir.Op("&&", kir.Not{X: ranksAbove(v, pv)}, kir.Op(">", i, pi))))
			better := kir.Op("||", kir.Lt(bi, kir.I(0)), ranksAbove(v, bv))
			e.Emit(kir.If{Cond: kir.Op("&&", after, better), Then: []kir.Stmt{kir.Set(bv, v), kir.Set(bi, i)}})
		})
		e.Emit(kir.Loop(iv, kir.I(0), kir.I(w), kir.I(1), scan...))
		c := rowElem(rc, kir.V(jv), rank)
		if writes(grp, vals) {
			e.Store(vals, c, bv)
		}
		if writes(grp, idxs) {
			e.Store(idxs, c, bi)
		}
		if renorm != nil {
			e.Emit(kir.Set(kir.At(kept.(kir.Var).Name, kir.V(jv)), bv), kir.Assign{LHS: sum, Op: "+=", RHS: bv})
		}
		e.Emit(kir.Set(pv, bv), kir.Set(pi, bi))
	})
	e.Emit(kir.Loop(jv, kir.I(0), kir.I(k), kir.I(1), choose...))
	if renorm == nil {
		return nil
	}
	// The chosen values' sum, then the renormalisation over them.
	s := renorm.Out()
	at := append(append([]kir.Expr(nil), rc...), kir.I(0))
	e.Bind(s, at, sum)
	if writes(grp, s) {
		e.Store(s, at, sum)
	}
	epilogue := map[*ir.Node]bool{}
	for _, q := range grp.RowEpilogue {
		epilogue[q] = true
	}
	jr := e.Temp("j")
	body := e.Block(func() {
		c := rowElem(rc, kir.V(jr), rank)
		e.Bind(vals, c, kir.At(kept.(kir.Var).Name, kir.V(jr)))
		for _, v := range grp.Outputs {
			if epilogue[v.Node] {
				e.Store(v, c, e.At(v, c))
			}
		}
	})
	e.Emit(kir.Loop(jr, kir.I(0), kir.I(k), kir.I(1), body...))
	return nil
}

// routeSoftmax computes the row's softmax for top-k from its logits (two
// passes: max, then Σ exp), writes it when others read it, and returns the
// softmax of element i.
func routeSoftmax(e *Emitter, grp *passes.Group, p *ir.Value, rc []kir.Expr, w int, mut func(string, kir.Type, kir.Expr) kir.Expr) func(kir.Expr) kir.Expr {
	z := p.Node.Inputs[0]
	rank := len(z.Type.Shape)
	m := mut("m", kir.F32, kir.F(math.Inf(-1)))
	loop := func(body func(i kir.Expr)) {
		iv := e.Temp("i")
		e.Emit(kir.Loop(iv, kir.I(0), kir.I(w), kir.I(1), e.Block(func() { body(kir.V(iv)) })...))
	}
	loop(func(i kir.Expr) { e.Emit(kir.Set(m, maxNaNExpr(m, e.At(z, rowElem(rc, i, rank))))) })
	s := mut("s", kir.F32, kir.F(0))
	loop(func(i kir.Expr) {
		e.Emit(kir.Assign{LHS: s, Op: "+=", RHS: kir.Fn("exp", kir.Sub(e.At(z, rowElem(rc, i, rank)), m))})
	})
	inv := e.Let("inv", kir.F32, kir.Div(kir.F(1), s))
	value := func(i kir.Expr) kir.Expr {
		return kir.Mul(kir.Fn("exp", kir.Sub(e.At(z, rowElem(rc, i, rank)), m)), inv)
	}
	if writes(grp, p) {
		loop(func(i kir.Expr) { e.Store(p, rowElem(rc, i, rank), value(i)) })
	}
	return value
}

// routeRenorm finds the sum over the chosen values fused into a top-k
// kernel (its row epilogue divides by it), or nil.
func routeRenorm(grp *passes.Group, vals *ir.Value) *ir.Node {
	if len(grp.RowEpilogue) == 0 {
		return nil
	}
	for _, n := range grp.Nodes {
		if n.Op == ir.OpReduceSum && n.Inputs[0] == vals {
			return n
		}
	}
	return nil
}

// moeRoute is a stable counting sort of the T·k (token, choice) pairs by
// expert in one threadgroup. Thread i owns a contiguous chunk of pairs; for
// each expert in turn, threads count their chunk's pairs for it, an
// exclusive scan over threads (simd prefix sums, then simdgroup totals in
// threadgroup memory) gives each thread its first row, and the thread writes
// its pairs there in order. Pairs keep (t, j) order within an expert. Cost:
// 2·experts passes over a chunk of ⌈T·k/threads⌉ pairs, two barriers per
// expert. Expert ids outside [0, experts) (an error in the reference) are
// left out: offsets[experts] counts the pairs placed.
func moeRoute(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	idx := n.Inputs[0]
	rowsV, slotsV, offV := n.Outputs[0], n.Outputs[1], n.Outputs[2]
	experts := n.Attrs.Int("experts")
	k := idx.Type.Shape[1]
	pairs := int(idx.Type.Shape.Elems())
	threads := min(1024, rdRound32(pairs))
	chunk := rdCeil(pairs, threads)
	e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{1, 1, 1}
	t := newRedTeam(e, threads, threads)
	lo := e.Let("lo", kir.I32, kir.Mul(t.lid, kir.I(chunk)))
	hi := e.Let("hi", kir.I32, kir.Min(kir.Add(lo, kir.I(chunk)), kir.I(pairs)))
	off := t.mut("off", kir.I32, kir.I(0))
	first := kir.Op("==", t.lid, kir.I(0))
	// overChunk emits a loop over the thread's pairs with expert ex.
	overChunk := func(ex kir.Expr, fn func(i kir.Expr)) {
		iv := e.Temp("i")
		body := e.Block(func() {
			i := kir.V(iv)
			choice := e.At(idx, e.Split(idx.Type.Shape, i))
			e.Emit(kir.If{Cond: kir.Op("==", choice, ex), Then: e.Block(func() { fn(i) })})
		})
		e.Emit(kir.Loop(iv, lo, hi, kir.I(1), body...))
	}
	ev := e.Temp("ex")
	perExpert := e.Block(func() {
		ex := kir.V(ev)
		if writes(grp, offV) {
			e.Emit(kir.If{Cond: first, Then: e.Block(func() { e.Store(offV, []kir.Expr{ex}, off) })})
		}
		c := t.mut("c", kir.I32, kir.I(0))
		overChunk(ex, func(kir.Expr) { e.Emit(kir.Assign{LHS: c, Op: "+=", RHS: kir.I(1)}) })
		// Exclusive scan of c over threads; total over all.
		pre := e.Let("pre", kir.I32, kir.Simd{Op: "prefix_sum", X: c})
		sgTot := e.Let("sgt", kir.I32, kir.Simd{Op: "sum", X: c})
		nsg := threads / 32
		base := pre
		total := sgTot
		if nsg > 1 {
			sh := t.newShared(kir.I32, nsg)
			e.Emit(kir.If{Cond: kir.Op("==", t.l32, kir.I(0)), Then: []kir.Stmt{kir.Set(kir.At(sh, t.sg), sgTot)}}, kir.Barrier{})
			b := t.mut("base", kir.I32, pre)
			tot := t.mut("tot", kir.I32, kir.I(0))
			s := e.Temp("s")
			v := kir.At(sh, kir.V(s))
			e.Emit(kir.Loop(s, kir.I(0), kir.I(nsg), kir.I(1),
				kir.Assign{LHS: b, Op: "+=", RHS: kir.Select{Cond: kir.Lt(kir.V(s), t.sg), A: v, B: kir.I(0)}},
				kir.Assign{LHS: tot, Op: "+=", RHS: v}))
			e.Emit(kir.Barrier{})
			base, total = b, tot
		}
		if writes(grp, rowsV) || writes(grp, slotsV) {
			pos := t.mut("pos", kir.I32, kir.Add(off, base))
			overChunk(ex, func(i kir.Expr) {
				if writes(grp, rowsV) {
					e.Store(rowsV, []kir.Expr{pos}, kir.Div(i, kir.I(k)))
				}
				if writes(grp, slotsV) {
					e.Store(slotsV, []kir.Expr{pos}, i)
				}
				e.Emit(kir.Assign{LHS: pos, Op: "+=", RHS: kir.I(1)})
			})
		}
		e.Emit(kir.Assign{LHS: off, Op: "+=", RHS: total})
	})
	e.Emit(kir.Loop(ev, kir.I(0), kir.I(experts), kir.I(1), perExpert...))
	if writes(grp, offV) {
		e.Emit(kir.If{Cond: first, Then: e.Block(func() { e.Store(offV, []kir.Expr{kir.I(experts)}, off) })})
	}
	t.finish()
	return nil
}

// scatterTarget is about how many threads scatter_add spreads over: columns
// of the rows times blocks of output rows.
const scatterTarget = 8192

// scatterAdd: out[idx[i], c] += src[i, c] in index order, without atomics.
// Thread (b, c) owns column c of output rows block b and scans every index
// in order, adding the source rows that land in its block, so each output
// element has one writer and a fixed order of additions. Threads are
// columns × ⌈8192/columns⌉ row blocks (at most one block per row): enough
// parallelism for wide rows (embedding gradients, the MoE combine), one
// thread per output element for narrow ones. Cost: every thread reads all
// N indices (neighbouring threads read the same one), and sources are read
// once in total; with one row per block (always for f16/bf16 outputs) the
// sum stays in a register, otherwise it accumulates in the f32 output.
func scatterAdd(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	idx, src, out := n.Inputs[0], n.Inputs[1], n.Out()
	rows := out.Type.Shape[0]
	rowShape := out.Type.Shape[1:]
	width := int(rowShape.Elems())
	idxShape := idx.Type.Shape
	count := int(idxShape.Elems())
	blocks := min(rows, max(1, rdCeil(scatterTarget, width)))
	if out.Type.DType != ir.F32 {
		blocks = rows // sum in a register and round once, as the reference does
	}
	per := rdCeil(rows, blocks)
	blocks = rdCeil(rows, per)
	total := blocks * width
	threads := min(256, rdRound32(total))
	e.K.Threads, e.K.Groups = [3]int{threads, 1, 1}, [3]int{rdCeil(total, threads), 1, 1}
	tid := e.Let("t", kir.I32, kir.Thread(0))
	if total%threads != 0 {
		e.Emit(kir.If{Cond: kir.Op(">=", tid, kir.I(total)), Then: []kir.Stmt{kir.Return{}}})
	}
	block, col := tid, kir.Expr(kir.I(0))
	if width > 1 {
		block, col = kir.Div(tid, kir.I(width)), kir.Mod(tid, kir.I(width))
	}
	cc := e.Split(rowShape, col)
	if per > 1 {
		block = kir.Mul(block, kir.I(per))
	}
	lo := e.Let("lo", kir.I32, block)
	at := func(r kir.Expr) []kir.Expr { return append([]kir.Expr{r}, cc...) }
	srcAt := func(i kir.Expr) []kir.Expr { return append(e.Split(idxShape, i), cc...) }
	iv := e.Temp("i")
	if per == 1 {
		acc := e.Temp("acc")
		e.Emit(kir.Decl{Name: acc, Type: kir.F32, Init: kir.F(0), Mutable: true})
		body := e.Block(func() {
			r := e.At(idx, e.Split(idxShape, kir.V(iv)))
			e.Emit(kir.If{Cond: kir.Op("==", r, lo), Then: e.Block(func() {
				e.Emit(kir.Assign{LHS: kir.V(acc), Op: "+=", RHS: e.At(src, srcAt(kir.V(iv)))})
			})})
		})
		e.Emit(kir.Loop(iv, kir.I(0), kir.I(count), kir.I(1), body...))
		e.Store(out, at(lo), kir.V(acc))
		return nil
	}
	hi := e.Let("hi", kir.I32, kir.Min(kir.Add(lo, kir.I(per)), kir.I(rows)))
	rv := e.Temp("r")
	e.Emit(kir.Loop(rv, lo, hi, kir.I(1), e.Block(func() { e.Store(out, at(kir.V(rv)), kir.F(0)) })...))
	body := e.Block(func() {
		r := e.At(idx, e.Split(idxShape, kir.V(iv)))
		e.Emit(kir.If{Cond: kir.Op("&&", kir.Op(">=", r, lo), kir.Lt(r, hi)), Then: e.Block(func() {
			c := at(r)
			e.Store(out, c, kir.Add(e.Load(out, c), e.At(src, srcAt(kir.V(iv)))))
		})})
	})
	e.Emit(kir.Loop(iv, kir.I(0), kir.I(count), kir.I(1), body...))
	return nil
}
