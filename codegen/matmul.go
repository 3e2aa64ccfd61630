package codegen

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Contraction templates: matmul, grouped_matmul (MoE experts) and
// grouped_matmul_wgrad share one tiled kernel in the manner of llama.cpp's
// kernel_mul_mm and MLX's steel GEMM. A threadgroup of 128 threads (4
// simdgroups in a 2×2 grid) owns a BM×BN output tile. For each K step the
// threads stage a BM×BK slice of the lhs and a BN×BK slice of the rhs into
// threadgroup memory, reading every element through Emitter.At so fused
// producers (NF4 dequant, transposes, slices) are computed while staging;
// then each simdgroup multiplies 8×8 tiles out of threadgroup memory into
// fp32 accumulators. The output tile goes back through threadgroup memory so
// that rows and columns past the edges are masked.

func init() {
	templates["matmul"] = matmul
	templates["grouped_matmul"] = groupedMatmul
	templates["grouped_matmul_wgrad"] = groupedMatmulWgrad
}

const (
	mmThreads = 128 // 4 simdgroups, 2×2 over the output tile
	// mmPad spreads the rows of staged tiles over threadgroup memory banks
	// (MLX pads by 16 bytes).
	mmPad = 4
)

// mmBound is a limit along one axis of a contraction: indices ≥ X are outside.
// Exact means no tile crosses it, so no guard is emitted.
type mmBound struct {
	X     kir.Expr
	Exact bool
}

// mmOperand is one side of a contraction seen as rows × inner: the lhs has M
// rows, the rhs N rows, both K inner elements.
type mmOperand struct {
	v *ir.Value
	// at maps (row, inner) to coordinates of v.
	at func(row, k kir.Expr) []kir.Expr
	// kMajor: consecutive inner indices are adjacent in memory, so threads
	// stage along the inner axis (coalesced reads); else along rows.
	kMajor bool
	// keep are results of fused producers the kernel also writes where it
	// computes them while staging, from the threadgroups of the first column
	// of tiles (each operand element is staged there once).
	keep []*ir.Value
}

// mmContraction is one threadgroup's share of out[i, j] = Σ_t s_t·Σ_k
// a_t[i, k]·b_t[j, k] over a bm×bn tile at (m0, n0): one term t usually,
// two when a fused sum (LoRA) runs both K loops into one accumulator.
type mmContraction struct {
	bm, bn, bk int
	terms      []mmTerm
	m0, n0     kir.Expr
	mEnd, nEnd mmBound
	// store writes the finished element (i, j) of the output.
	store func(i, j, x kir.Expr)
	tid   kir.Expr // thread index in the threadgroup
	err   error    // from emit
	// mv runs the contraction as matrix-vector products (emitMV): set for
	// a few rows, where 8×8 tiles would mostly multiply padding.
	mv bool
}

// mmTerm is one product of a contraction: k runs over [kFrom, kEnd.X), and
// the lhs is scaled by scale while staged.
type mmTerm struct {
	a, b  mmOperand
	kFrom kir.Expr
	kEnd  mmBound
	scale float64
}

// mmTileSize picks the tile extent for an axis of the given (typical) size:
// 64 where there is enough work, 32 for small axes so fewer lanes idle.
func mmTileSize(n int) int {
	if n >= 64 {
		return 64
	}
	return 32
}

// newMMContraction sizes the tile: K step 16 for 64×64 tiles (as MLX does, to
// keep threadgroup memory at about 17 KB), else 32.
func newMMContraction(m, n int) *mmContraction {
	c := &mmContraction{bm: mmTileSize(m), bn: mmTileSize(n), bk: 32}
	if c.bm == 64 && c.bn == 64 {
		c.bk = 16
	}
	return c
}

func mmCeil(a, b int) int { return (a + b - 1) / b }

// mmPlus is x + n, or x itself for n = 0 (tidier kernels).
func mmPlus(x kir.Expr, n int) kir.Expr {
	if n == 0 {
		return x
	}
	return kir.Add(x, kir.I(n))
}

// stagedLen is the threadgroup floats a staged rows×bk slice takes.
func (c *mmContraction) stagedLen(op mmOperand, rows int) int {
	if op.kMajor {
		return rows * (c.bk + mmPad)
	}
	return c.bk * (rows + mmPad)
}

// emit writes the kernel body: staging loop, simdgroup MMAs, masked store.
func (c *mmContraction) emit(e *Emitter) {
	if c.mv {
		c.emitMV(e)
		return
	}
	cStride := c.bn + mmPad
	size := c.bm * cStride
	for _, t := range c.terms {
		size = max(size, c.stagedLen(t.a, c.bm)+c.stagedLen(t.b, c.bn))
	}
	e.Emit(kir.Shared{Name: "sh", Type: kir.F32, Len: size})
	// Fresh names: the MSL renderer's builtin parameters are tid, lid, gid, lane, sg.
	c.tid = e.Let("ti", kir.I32, kir.Local(0))
	sg := e.Let("sgi", kir.I32, kir.Builtin{Kind: "simdgroup"})
	// Each simdgroup owns a (bm/2)×(bn/2) quarter of the tile: fm×fn 8×8 tiles.
	fm, fn := c.bm/16, c.bn/16
	sgRow := e.Let("sr", kir.I32, kir.Mul(kir.Div(sg, kir.I(2)), kir.I(c.bm/2)))
	sgCol := e.Let("sc", kir.I32, kir.Mul(kir.Mod(sg, kir.I(2)), kir.I(c.bn/2)))
	acc := func(i, j int) string { return fmt.Sprintf("acc%d_%d", i, j) }
	for i := 0; i < fm; i++ {
		for j := 0; j < fn; j++ {
			e.Emit(kir.Tile{Name: acc(i, j), Type: kir.F32})
		}
	}

	for _, t := range c.terms {
		c.emitTerm(e, t, sgRow, sgCol, acc)
	}

	// The accumulators go to threadgroup memory (the staging area is free
	// after the loop's last barrier), then out with edges masked.
	for i := 0; i < fm; i++ {
		for j := 0; j < fn; j++ {
			off := kir.Add(kir.Mul(mmPlus(sgRow, 8*i), kir.I(cStride)), mmPlus(sgCol, 8*j))
			e.Emit(kir.TileStore{Tile: acc(i, j), Dst: "sh", Off: off, Stride: kir.I(cStride)})
		}
	}
	e.Emit(kir.Barrier{})
	s := e.Temp("s")
	out := e.Block(func() {
		l := e.Let("l", kir.I32, kir.Add(kir.Mul(kir.V(s), kir.I(mmThreads)), c.tid))
		i := e.Let("i", kir.I32, kir.Div(l, kir.I(c.bn)))
		j := e.Let("j", kir.I32, kir.Mod(l, kir.I(c.bn)))
		gi := e.Let("gi", kir.I32, kir.Add(c.m0, i))
		gj := e.Let("gj", kir.I32, kir.Add(c.n0, j))
		x := kir.At("sh", kir.Add(kir.Mul(i, kir.I(cStride)), j))
		e.mmGuarded(append(mmWithin(gi, c.mEnd), mmWithin(gj, c.nEnd)...), func() { c.store(gi, gj, x) }, nil)
	})
	e.Emit(kir.Loop(s, kir.I(0), kir.I(c.bm*c.bn/mmThreads), kir.I(1), out...))
}

// emitTerm runs one term's K loop: stage both slices, then each simdgroup
// multiplies its 8×8 tiles into the accumulators.
func (c *mmContraction) emitTerm(e *Emitter, t mmTerm, sgRow, sgCol kir.Expr, acc func(i, j int) string) {
	fm, fn := c.bm/16, c.bn/16
	aLen := c.stagedLen(t.a, c.bm)
	k0 := kir.V("k0")
	body := e.Block(func() {
		c.stage(e, t.a, t.scale, c.bm, c.m0, c.mEnd, t.kEnd, k0, 0)
		c.stage(e, t.b, 1, c.bn, c.n0, c.nEnd, t.kEnd, k0, aLen)
		e.Emit(kir.Barrier{})
		inner := e.Block(func() {
			kk := kir.V("kk")
			for i := 0; i < fm; i++ {
				row := mmPlus(sgRow, 8*i)
				e.Emit(kir.Tile{Name: fmt.Sprintf("fa%d", i), Type: kir.F32})
				e.Emit(c.fragLoad(fmt.Sprintf("fa%d", i), t.a, c.bm, 0, row, kk, false))
			}
			for j := 0; j < fn; j++ {
				col := mmPlus(sgCol, 8*j)
				e.Emit(kir.Tile{Name: fmt.Sprintf("fb%d", j), Type: kir.F32})
				e.Emit(c.fragLoad(fmt.Sprintf("fb%d", j), t.b, c.bn, aLen, col, kk, true))
			}
			for i := 0; i < fm; i++ {
				for j := 0; j < fn; j++ {
					e.Emit(kir.TileMMA{D: acc(i, j), A: fmt.Sprintf("fa%d", i), B: fmt.Sprintf("fb%d", j), C: acc(i, j)})
				}
			}
		})
		e.Emit(kir.Loop("kk", kir.I(0), kir.I(c.bk), kir.I(8), inner...))
		// Nobody restages until every simdgroup has read this step's tiles.
		e.Emit(kir.Barrier{})
	})
	e.Emit(kir.Loop("k0", t.kFrom, t.kEnd.X, kir.I(c.bk), body...))
}

// mmWithin is the run-time check x < b, none when no tile crosses b.
func mmWithin(x kir.Expr, b mmBound) []kir.Expr {
	if b.Exact {
		return nil
	}
	return []kir.Expr{kir.Lt(x, b.X)}
}

// mmGuarded emits then() under the conjunction of conds (directly when there
// are none), and otherwise() in the else branch.
func (e *Emitter) mmGuarded(conds []kir.Expr, then, otherwise func()) {
	if len(conds) == 0 {
		then()
		return
	}
	cond := conds[0]
	for _, x := range conds[1:] {
		cond = kir.Op("&&", cond, x)
	}
	var els []kir.Stmt
	if otherwise != nil {
		els = e.Block(otherwise)
	}
	e.Emit(kir.If{Cond: cond, Then: e.Block(then), Else: els})
}

// stage copies the rows×bk slice of op at (r0, k0) into threadgroup memory
// at base, scaled, zero outside the bounds (a zero K tail keeps the sums exact).
// Element reads sit under the guard, so nothing outside an operand (or a
// fused producer's operands) is touched.
func (c *mmContraction) stage(e *Emitter, op mmOperand, scale float64, rows int, r0 kir.Expr, rEnd mmBound, kEnd mmBound, k0 kir.Expr, base int) {
	s := e.Temp("s")
	body := e.Block(func() {
		l := e.Let("l", kir.I32, kir.Add(kir.Mul(kir.V(s), kir.I(mmThreads)), c.tid))
		var i, k, at kir.Expr
		if op.kMajor {
			i = e.Let("i", kir.I32, kir.Div(l, kir.I(c.bk)))
			k = e.Let("k", kir.I32, kir.Mod(l, kir.I(c.bk)))
			at = kir.Add(kir.Mul(i, kir.I(c.bk+mmPad)), k)
		} else {
			k = e.Let("k", kir.I32, kir.Div(l, kir.I(rows)))
			i = e.Let("i", kir.I32, kir.Mod(l, kir.I(rows)))
			at = kir.Add(kir.Mul(k, kir.I(rows+mmPad)), i)
		}
		at = mmPlus(at, base)
		gi := e.Let("gi", kir.I32, kir.Add(r0, i))
		gk := e.Let("gk", kir.I32, kir.Add(k0, k))
		dst := kir.Index{Buf: "sh", I: at}
		e.mmGuarded(append(mmWithin(gi, rEnd), mmWithin(gk, kEnd)...),
			func() {
				var x kir.Expr
				stage := func() { x = e.At(op.v, op.at(gi, gk)) }
				if len(op.keep) == 0 {
					stage()
				} else if err := e.StoreWhereComputed(op.keep, kir.Op("==", c.n0, kir.I(0)), stage); err != nil {
					c.err = err
				}
				if scale != 1 {
					x = kir.Mul(x, kir.F(scale))
				}
				e.Emit(kir.Set(dst, x))
			},
			func() { e.Emit(kir.Set(dst, kir.F(0))) })
	})
	e.Emit(kir.Loop(s, kir.I(0), kir.I(rows*c.bk/mmThreads), kir.I(1), body...))
}

// fragLoad loads the 8×8 tile of a staged operand at (row, kk). The lhs
// tile is (rows, inner); the rhs tile the MMA needs is (inner, rows), so its
// transposition is the opposite.
func (c *mmContraction) fragLoad(tile string, op mmOperand, rows, base int, row, kk kir.Expr, rhs bool) kir.Stmt {
	var off kir.Expr
	var stride int
	transpose := !op.kMajor
	if op.kMajor {
		stride = c.bk + mmPad
		off = kir.Add(kir.Mul(row, kir.I(stride)), kk)
	} else {
		stride = rows + mmPad
		off = kir.Add(kir.Mul(kk, kir.I(stride)), row)
	}
	if rhs {
		transpose = !transpose
	}
	off = mmPlus(off, base)
	return kir.TileLoad{Tile: tile, Src: "sh", Off: off, Stride: kir.I(stride), Transpose: transpose}
}

// mmResults returns the value a contraction kernel's accumulator holds:
// the anchor's result, or the sum of its terms. The kernel writes it and the
// results of its fused epilogue (see StoreThrough); keep are results of its
// lhs's producers that it writes as it stages the lhs.
func mmResults(grp *passes.Group) (*ir.Value, []*ir.Value, error) {
	out := grp.Anchor.Out()
	if grp.Sum != nil {
		out = grp.Sum
	}
	finished := grp.Finished(out)
	var keep []*ir.Value
	for _, v := range grp.Outputs {
		switch {
		case finished[v]:
		case grp.StagesLHS: // computed while staging the lhs (passes.mergeLHSProducers)
			keep = append(keep, v)
		default:
			return nil, nil, fmt.Errorf("a %s kernel writes its result, values computed from it and its lhs's producers, not %v", grp.Kind, v)
		}
	}
	return out, keep, nil
}

// mmTerms lists the contractions a kernel sums: the anchor alone, or the
// terms fusion found.
func mmTerms(grp *passes.Group) []passes.Term {
	if len(grp.Terms) > 0 {
		return grp.Terms
	}
	return []passes.Term{{Node: grp.Anchor, Scale: 1}}
}

// mmInnerContiguous reports whether v's axis ax is adjacent in memory,
// looking through the transposes fused into the kernel (reads of a
// transposed operand are coalesced along the other axis). Only speed
// depends on it.
func (e *Emitter) mmInnerContiguous(v *ir.Value, ax int) bool {
	for e.In(v) && v.Node.Op == ir.OpTranspose {
		ax = v.Node.Attrs.Ints("perm")[ax]
		v = v.Node.Inputs[0]
	}
	return ax == len(v.Type.Shape)-1
}

// matmul: grid (N tiles, M tiles, batch entries); the rhs is shared by the
// batch when it has no batch axes.
func matmul(e *Emitter, grp *passes.Group) error {
	out, keep, err := mmResults(grp)
	if err != nil {
		return err
	}
	shape := out.Type.Shape
	r := len(shape)
	M, N := shape[r-2], shape[r-1]
	batchShape := shape[:r-2]
	batch := int(batchShape.Elems())

	c := newMMContraction(M, N)
	var bc []kir.Expr
	if len(batchShape) > 0 {
		bc = e.Split(batchShape, kir.Group(2))
	}
	withBatch := func(v *ir.Value, x, y kir.Expr) []kir.Expr {
		if len(v.Type.Shape) == 2 {
			return []kir.Expr{x, y}
		}
		return append(append([]kir.Expr(nil), bc...), x, y)
	}
	for _, t := range mmTerms(grp) {
		n := t.Node
		a, b := n.Inputs[0], n.Inputs[1]
		ta, tb := n.Attrs.Bool("ta"), n.Attrs.Bool("tb")
		K := a.Type.Shape[len(a.Type.Shape)-1]
		if ta {
			K = a.Type.Shape[len(a.Type.Shape)-2]
		}
		// The inner axis of a is its last unless ta; of b, its last only with tb.
		ra, rb := len(a.Type.Shape), len(b.Type.Shape)
		c.terms = append(c.terms, mmTerm{
			a: mmOperand{v: a, at: func(i, k kir.Expr) []kir.Expr {
				if ta {
					return withBatch(a, k, i)
				}
				return withBatch(a, i, k)
			}, kMajor: e.mmInnerContiguous(a, map[bool]int{false: ra - 1, true: ra - 2}[ta]), keep: keep},
			b: mmOperand{v: b, at: func(j, k kir.Expr) []kir.Expr {
				if tb {
					return withBatch(b, j, k)
				}
				return withBatch(b, k, j)
			}, kMajor: e.mmInnerContiguous(b, map[bool]int{false: rb - 2, true: rb - 1}[tb])},
			kFrom: kir.I(0), kEnd: mmBound{kir.I(K), K%c.bk == 0}, scale: t.Scale,
		})
	}
	c.tryMV(M)
	e.K.Threads = [3]int{mmThreads, 1, 1}
	e.K.Groups = [3]int{mmCeil(N, c.bn), mmCeil(M, c.bm), batch}
	c.m0 = e.Let("m0", kir.I32, kir.Mul(kir.Group(1), kir.I(c.bm)))
	c.n0 = e.Let("n0", kir.I32, kir.Mul(kir.Group(0), kir.I(c.bn)))
	c.mEnd = mmBound{kir.I(M), M%c.bm == 0}
	c.nEnd = mmBound{kir.I(N), N%c.bn == 0}
	c.store = func(i, j, x kir.Expr) { e.StoreThrough(grp, out, withBatch(out, i, j), x) }
	c.emit(e)
	return c.err
}

// groupedMatmul: grid (N tiles, row tiles, experts + 1). Expert e's rows
// start at offsets[e], known only at run time, so every expert gets enough
// row tiles for all R rows and a threadgroup past its expert's rows exits
// at once (llama.cpp's mul_mat_id). The extra last slice of the grid zeroes
// the rows outside every expert's range. Both exits are uniform over the
// threadgroup and come before any barrier.
func groupedMatmul(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	out, keep, err := mmResults(grp)
	if err != nil {
		return err
	}
	x, w, offsets := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	R := x.Type.Shape[0]
	N := out.Type.Shape[1]
	E := w.Type.Shape[0]

	c := newMMContraction(R/E, N)
	ex := e.Let("ex", kir.I32, kir.Group(2))
	for _, t := range mmTerms(grp) {
		x, w := t.Node.Inputs[0], t.Node.Inputs[1]
		tb := t.Node.Attrs.Bool("tb")
		K := x.Type.Shape[1]
		c.terms = append(c.terms, mmTerm{
			a: mmOperand{v: x, at: func(i, k kir.Expr) []kir.Expr { return []kir.Expr{i, k} }, kMajor: e.mmInnerContiguous(x, 1), keep: keep},
			b: mmOperand{v: w, at: func(j, k kir.Expr) []kir.Expr {
				if tb {
					return []kir.Expr{ex, j, k}
				}
				return []kir.Expr{ex, k, j}
			}, kMajor: e.mmInnerContiguous(w, map[bool]int{false: 1, true: 2}[tb])},
			kFrom: kir.I(0), kEnd: mmBound{kir.I(K), K%c.bk == 0}, scale: t.Scale,
		})
	}
	c.tryMV(R) // each expert has at most R rows
	e.K.Threads = [3]int{mmThreads, 1, 1}
	e.K.Groups = [3]int{mmCeil(N, c.bn), mmCeil(R, c.bm), E + 1}
	c.n0 = e.Let("n0", kir.I32, kir.Mul(kir.Group(0), kir.I(c.bn)))
	c.nEnd = mmBound{kir.I(N), N%c.bn == 0}

	zero := e.Block(func() {
		first, last := e.At(offsets, []kir.Expr{kir.I(0)}), e.At(offsets, []kir.Expr{kir.I(E)})
		s := e.Temp("s")
		body := e.Block(func() {
			l := e.Let("l", kir.I32, kir.Add(kir.Mul(kir.V(s), kir.I(mmThreads)), kir.Local(0)))
			r := e.Let("r", kir.I32, kir.Add(kir.Mul(kir.Group(1), kir.I(c.bm)), kir.Div(l, kir.I(c.bn))))
			j := e.Let("j", kir.I32, kir.Add(c.n0, kir.Mod(l, kir.I(c.bn))))
			conds := append(append(mmWithin(r, mmBound{kir.I(R), R%c.bm == 0}), mmWithin(j, c.nEnd)...),
				kir.Op("||", kir.Lt(r, first), kir.Op(">=", r, last)))
			// A matrix-vector tile has fewer elements than threads.
			conds = append(mmWithin(l, mmBound{kir.I(c.bm * c.bn), c.bm*c.bn%mmThreads == 0}), conds...)
			e.mmGuarded(conds, func() { e.StoreThrough(grp, out, []kir.Expr{r, j}, kir.F(0)) }, nil)
		})
		e.Emit(kir.Loop(s, kir.I(0), kir.I(mmCeil(c.bm*c.bn, mmThreads)), kir.I(1), body...))
		e.Emit(kir.Return{})
	})
	e.Emit(kir.If{Cond: kir.Op("==", ex, kir.I(E)), Then: zero})

	lo := e.At(offsets, []kir.Expr{ex})
	hi := e.At(offsets, []kir.Expr{kir.Add(ex, kir.I(1))})
	c.m0 = e.Let("m0", kir.I32, kir.Add(lo, kir.Mul(kir.Group(1), kir.I(c.bm))))
	e.Emit(kir.If{Cond: kir.Op(">=", c.m0, hi), Then: []kir.Stmt{kir.Return{}}})
	c.mEnd = mmBound{hi, false}
	c.store = func(i, j, v kir.Expr) { e.StoreThrough(grp, out, []kir.Expr{i, j}, v) }
	c.emit(e)
	return c.err
}

// groupedMatmulWgrad: dw[e] = dy[rows of e]ᵀ·x[rows of e], an (N×K) tile
// per threadgroup, grid (K tiles, N tiles, experts); the contraction runs
// over the expert's rows [offsets[e], offsets[e+1]), read at run time, so an
// expert without rows writes zeros.
func groupedMatmulWgrad(e *Emitter, grp *passes.Group) error {
	n := grp.Anchor
	out, keep, err := mmResults(grp)
	if err != nil {
		return err
	}
	if len(keep) > 0 {
		return fmt.Errorf("a grouped_matmul_wgrad kernel writes no producer results, not %v", keep)
	}
	dy, x, offsets := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	N, K := dy.Type.Shape[1], x.Type.Shape[1]
	E := out.Type.Shape[0]

	c := newMMContraction(N, K)
	e.K.Threads = [3]int{mmThreads, 1, 1}
	e.K.Groups = [3]int{mmCeil(K, c.bn), mmCeil(N, c.bm), E}
	ex := e.Let("ex", kir.I32, kir.Group(2))
	c.m0 = e.Let("m0", kir.I32, kir.Mul(kir.Group(1), kir.I(c.bm)))
	c.n0 = e.Let("n0", kir.I32, kir.Mul(kir.Group(0), kir.I(c.bn)))
	c.mEnd = mmBound{kir.I(N), N%c.bm == 0}
	c.nEnd = mmBound{kir.I(K), K%c.bn == 0}
	// Both operands are read row by row (r is the contraction index).
	c.terms = []mmTerm{{
		a:     mmOperand{v: dy, at: func(i, r kir.Expr) []kir.Expr { return []kir.Expr{r, i} }, kMajor: e.mmInnerContiguous(dy, 0)},
		b:     mmOperand{v: x, at: func(j, r kir.Expr) []kir.Expr { return []kir.Expr{r, j} }, kMajor: e.mmInnerContiguous(x, 0)},
		kFrom: e.At(offsets, []kir.Expr{ex}),
		kEnd:  mmBound{e.At(offsets, []kir.Expr{kir.Add(ex, kir.I(1))}), false},
		scale: 1,
	}}
	c.store = func(i, j, v kir.Expr) { e.Store(out, []kir.Expr{ex, i, j}, v) }
	c.emit(e)
	return nil
}

// Matrix-vector contractions. Decoding multiplies one row per sequence by
// each weight, so a 64-row tile would multiply 63 rows of padding and the
// kernel would be bound by arithmetic it throws away. With at most mvRows
// rows, each simdgroup instead owns mvCols output columns: its lanes walk
// the inner axis 32 apart (coalesced where it is contiguous in memory),
// each keeping one partial sum per row, and a simdgroup sum finishes each
// element (as llama.cpp's mul_mv kernels do). Every weight is read once.
const (
	mvRows = 8
	mvCols = 2
)

// tryMV switches a contraction of at most mvRows rows to matrix-vector
// products when every term's rhs is contiguous along the inner axis, which
// the lanes' walk needs to read coalesced. The terms must be set.
func (c *mmContraction) tryMV(rows int) {
	if rows > mvRows {
		return
	}
	for _, t := range c.terms {
		if !t.b.kMajor {
			return
		}
	}
	c.bm, c.bn, c.mv = rows, mvCols*mmThreads/32, true
}

// emitMV writes the matrix-vector body: rows m0 … m0+bm−1 (those below
// mEnd), columns n0 … n0+bn−1, mvCols of them per simdgroup.
func (c *mmContraction) emitMV(e *Emitter) {
	lane := e.Let("lane", kir.I32, kir.Builtin{Kind: "lane"})
	sg := e.Let("sgi", kir.I32, kir.Builtin{Kind: "simdgroup"})
	for cc := 0; cc < mvCols; cc++ {
		j := e.Let("j", kir.I32, kir.Add(c.n0, kir.Add(kir.Mul(sg, kir.I(mvCols)), kir.I(cc))))
		// The column guard is uniform over the simdgroup, as its sums need.
		e.mmGuarded(mmWithin(j, c.nEnd), func() { c.emitColumn(e, j, lane) }, nil)
	}
}

// emitColumn computes column j of the rows.
func (c *mmContraction) emitColumn(e *Emitter, j, lane kir.Expr) {
	acc := make([]string, c.bm)
	for i := range acc {
		acc[i] = e.Temp("acc")
		e.Emit(kir.Decl{Name: acc[i], Type: kir.F32, Init: kir.F(0), Mutable: true})
	}
	rows := make([]kir.Expr, c.bm)
	for i := range rows {
		rows[i] = mmPlus(c.m0, i)
	}
	for _, t := range c.terms {
		k := e.Temp("k")
		body := e.Block(func() {
			kv := kir.V(k)
			b := e.At(t.b.v, t.b.at(j, kv))
			for i, row := range rows {
				e.mmGuarded(mmWithin(row, c.mEnd), func() {
					var a kir.Expr
					load := func() { a = e.At(t.a.v, t.a.at(row, kv)) }
					if len(t.a.keep) == 0 {
						load()
					} else if err := e.StoreWhereComputed(t.a.keep, kir.Op("==", j, kir.I(0)), load); err != nil {
						c.err = err
					}
					if t.scale != 1 {
						a = kir.Mul(a, kir.F(t.scale))
					}
					e.Emit(kir.Assign{LHS: kir.V(acc[i]), Op: "+=", RHS: kir.Mul(a, b)})
				}, nil)
			}
		})
		e.Emit(kir.Loop(k, kir.Add(t.kFrom, lane), t.kEnd.X, kir.I(32), body...))
	}
	for i, row := range rows {
		s := e.Let("s", kir.F32, kir.Simd{Op: "sum", X: kir.V(acc[i])})
		conds := append(mmWithin(row, c.mEnd), kir.Op("==", lane, kir.I(0)))
		e.mmGuarded(conds, func() { c.store(row, j, s) }, nil)
	}
}
