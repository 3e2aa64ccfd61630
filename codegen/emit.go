// Package codegen lowers fused kernel groups of a graph to kernel IR
// (codegen/kir), which a renderer (codegen/msl) prints as a .metal file.
package codegen

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
	"github.com/scm-magellano/magc/passes"
)

// Binding says what a kernel parameter is bound to: a value's memory, at a
// byte offset into it (NF4 weights bind one parameter per section).
type Binding struct {
	Value  *ir.Value
	Offset int64
}

// Emitter builds one kernel: it declares a buffer parameter for each value
// the kernel reads or writes in memory, and computes values of the graph at
// given coordinates as kernel expressions, fusing the chain of element-wise
// and layout ops that leads to them. Each (value, coordinates) pair is
// computed once per block and kept in a local.
type Emitter struct {
	K        *kir.Kernel
	Bindings []Binding
	// inside holds the nodes computed in this kernel; any other value is read from memory.
	inside map[*ir.Node]bool
	params map[string]string // value key → parameter name
	out    *[]kir.Stmt
	memo   map[string]kir.Expr
	split  map[string]kir.Expr // coordinates → the offset they were split from
	// exact records values read only at the offset they were split from: a
	// kernel may overwrite such a value with an output of the same layout.
	exact map[*ir.Value]bool
	tmp   int
	// storeAt holds values to write wherever the kernel computes them, under
	// a condition (a contraction stores its lhs's producers this way); stored
	// records the values written.
	storeAt map[*ir.Value]kir.Expr
	stored  map[*ir.Value]bool
	// nf4 records that the kernel dequantises: it stages the NF4 code table
	// in threadgroup memory (see StageTables).
	nf4 bool
}

// NewEmitter starts a kernel that computes the given nodes.
func NewEmitter(name, doc string, inside []*ir.Node) *Emitter {
	e := &Emitter{K: &kir.Kernel{Name: name, Doc: doc}, inside: map[*ir.Node]bool{}, params: map[string]string{}, memo: map[string]kir.Expr{}, split: map[string]kir.Expr{}, exact: map[*ir.Value]bool{},
		storeAt: map[*ir.Value]kir.Expr{}, stored: map[*ir.Value]bool{}}
	for _, n := range inside {
		e.inside[n] = true
	}
	e.out = &e.K.Body
	return e
}

// Emit appends statements to the current block.
func (e *Emitter) Emit(s ...kir.Stmt) { *e.out = append(*e.out, s...) }

// Block runs fn with statements going to a fresh block, returned; values
// computed inside are not reused outside.
func (e *Emitter) Block(fn func()) []kir.Stmt {
	var body []kir.Stmt
	savedOut, savedMemo := e.out, e.memo
	e.out, e.memo = &body, map[string]kir.Expr{}
	for k, v := range savedMemo {
		e.memo[k] = v // outer values stay visible inside
	}
	fn()
	e.out, e.memo = savedOut, savedMemo
	return body
}

// Temp returns a fresh local name with the given prefix.
func (e *Emitter) Temp(prefix string) string {
	e.tmp++
	return fmt.Sprintf("%s%d", prefix, e.tmp)
}

// Let declares a local holding x and returns it.
func (e *Emitter) Let(prefix string, t kir.Type, x kir.Expr) kir.Expr {
	name := e.Temp(prefix)
	e.Emit(kir.Decl{Name: name, Type: t, Init: x})
	return kir.V(name)
}

// elemType is how a dtype is stored in a buffer.
func elemType(d ir.DType) kir.Type {
	switch d {
	case ir.F16:
		return kir.F16
	case ir.BF16:
		return kir.BF16
	case ir.I32:
		return kir.I32
	case ir.U8, ir.NF4:
		return kir.U8
	}
	return kir.F32
}

// computeType is the type arithmetic on a dtype uses: f32 for floats.
func computeType(d ir.DType) kir.Type {
	if d == ir.I32 {
		return kir.I32
	}
	return kir.F32
}

// Buffer declares (once) a parameter bound to v's memory at offset and returns its name.
func (e *Emitter) Buffer(v *ir.Value, suffix string, elem kir.Type, offset int64, readOnly bool) string {
	key := fmt.Sprintf("%d%s", v.ID, suffix)
	if name, ok := e.params[key]; ok {
		if !readOnly {
			e.markWritten(name)
		}
		return name
	}
	// Names are positional, so kernels that differ only in which values they
	// bind have identical code and are emitted once.
	name := fmt.Sprintf("p%d%s", len(e.K.Params), suffix)
	e.params[key] = name
	e.K.Params = append(e.K.Params, kir.Param{Name: name, Elem: elem, ReadOnly: readOnly})
	e.Bindings = append(e.Bindings, Binding{Value: v, Offset: offset})
	return name
}

func (e *Emitter) markWritten(name string) {
	for i := range e.K.Params {
		if e.K.Params[i].Name == name {
			e.K.Params[i].ReadOnly = false
		}
	}
}

// ReadExactly reports whether every read of v was at the offset being
// written (so an output of v's layout may overwrite it in place).
func (e *Emitter) ReadExactly(v *ir.Value) bool { return e.exact[v] }

// In reports whether v is computed by this kernel rather than read from memory.
func (e *Emitter) In(v *ir.Value) bool { return e.inside[v.Node] }

// Linear is the row-major offset of coords in shape: the emitter's own
// offset when coords were split from it (see Split), else the sum of strides.
func (e *Emitter) Linear(shape ir.Shape, coords []kir.Expr) kir.Expr {
	if x, ok := e.split[fmt.Sprint(shape, coords)]; ok {
		return x
	}
	return Linear(shape, coords)
}

// Split declares the coordinates of a row-major offset in shape as locals,
// remembering the offset so reads at the same coordinates index by it directly.
func (e *Emitter) Split(shape ir.Shape, linear kir.Expr) []kir.Expr {
	c := Coords(shape, linear)
	for k := range c {
		if _, simple := c[k].(kir.Var); !simple {
			c[k] = e.Let("c", kir.I32, c[k])
		}
	}
	e.split[fmt.Sprint(shape, c)] = linear
	return c
}

// Linear is the row-major offset of coords in shape.
func Linear(shape ir.Shape, coords []kir.Expr) kir.Expr {
	if len(shape) == 0 {
		return kir.I(0)
	}
	idx := coords[0]
	for i := 1; i < len(shape); i++ {
		idx = kir.Add(kir.Mul(idx, kir.I(shape[i])), coords[i])
	}
	return idx
}

// Coords splits a row-major offset into coordinates of shape.
func Coords(shape ir.Shape, linear kir.Expr) []kir.Expr {
	out := make([]kir.Expr, len(shape))
	stride := 1
	for i := len(shape) - 1; i >= 0; i-- {
		c := linear
		if stride > 1 {
			c = kir.Div(c, kir.I(stride))
		}
		if i > 0 {
			c = kir.Mod(c, kir.I(shape[i]))
		}
		out[i] = c
		stride *= shape[i]
	}
	return out
}

// Load reads v from memory at coords, converted to its compute type.
func (e *Emitter) Load(v *ir.Value, coords []kir.Expr) kir.Expr {
	elem := elemType(v.Stored().DType)
	buf := e.Buffer(v, "", elem, 0, true)
	idx := e.Linear(v.Type.Shape, coords)
	_, split := e.split[fmt.Sprint(v.Type.Shape, coords)]
	prev, seen := e.exact[v]
	e.exact[v] = split && (prev || !seen)
	x := kir.At(buf, idx)
	if ct := computeType(v.Type.DType); ct != elem {
		return kir.Convert{Type: ct, X: x}
	}
	return x
}

// Store writes x (in v's compute type) to v's memory at coords.
func (e *Emitter) Store(v *ir.Value, coords []kir.Expr, x kir.Expr) {
	elem := elemType(v.Stored().DType)
	buf := e.Buffer(v, "", elem, 0, false)
	if elem != computeType(v.Type.DType) {
		x = kir.Convert{Type: elem, X: x}
	}
	e.Emit(kir.Set(kir.At(buf, e.Linear(v.Type.Shape, coords)), x))
}

// StoreThrough writes element coords of a kernel's result v, whose value
// there is x: to memory when others read v, and through the group's
// epilogue on v (which reads v at the same elements, so it sees x) to the
// epilogue's results.
func (e *Emitter) StoreThrough(grp *passes.Group, v *ir.Value, coords []kir.Expr, x kir.Expr) {
	if grp.Root == grp.Anchor {
		e.Store(v, coords, x)
		return
	}
	if _, simple := x.(kir.Var); !simple {
		x = e.Let("acc", computeType(v.Type.DType), x)
	}
	e.Bind(v, coords, x)
	finished := grp.Finished(v)
	for _, w := range grp.Outputs {
		if finished[w] {
			e.Store(w, coords, e.At(w, coords))
		}
	}
}

// Bind makes x the value of v at coords for what the kernel computes next
// in this block: how a template hands its result to an epilogue.
func (e *Emitter) Bind(v *ir.Value, coords []kir.Expr, x kir.Expr) {
	e.memo[fmt.Sprint(v.ID, coords)] = asStored(v, x)
}

// asStored is x, a value of v computed in the kernel, as v is in memory:
// rounded through its storage type when that is narrower. A value is the
// same everywhere, so what this kernel computes from v sees what later
// kernels load (and what the reference computes).
func asStored(v *ir.Value, x kir.Expr) kir.Expr {
	if v.Store == ir.Invalid {
		return x
	}
	return kir.Convert{Type: computeType(v.Type.DType), X: kir.Convert{Type: elemType(v.Store), X: x}}
}

// StoreWhereComputed makes fn's code write each of vs, under cond, wherever
// it computes one (each element once: see passes.mergeLHSProducers). It
// fails when fn's code does not compute one of them.
func (e *Emitter) StoreWhereComputed(vs []*ir.Value, cond kir.Expr, fn func()) error {
	for _, v := range vs {
		e.storeAt[v] = cond
	}
	fn()
	for _, v := range vs {
		delete(e.storeAt, v)
		if !e.stored[v] {
			return fmt.Errorf("the kernel does not compute %v, which it must write", v)
		}
	}
	return nil
}

// writes reports whether a kernel computing v must: v is in memory after it,
// or its epilogue on v is (a result nobody reads has no buffer to write).
func writes(grp *passes.Group, v *ir.Value) bool {
	finished := grp.Finished(v)
	for _, o := range grp.Outputs {
		if finished[o] {
			return true
		}
	}
	return false
}

// At is the value of v at coords: loaded when v lives in memory, else
// computed from its operands.
func (e *Emitter) At(v *ir.Value, coords []kir.Expr) kir.Expr {
	key := fmt.Sprint(v.ID, coords)
	if x, ok := e.memo[key]; ok {
		return x
	}
	var x kir.Expr
	if e.In(v) {
		x = asStored(v, e.compute(v, coords))
	} else {
		x = e.Load(v, coords)
	}
	switch x.(type) {
	case kir.Lit, kir.Var:
	default:
		x = e.Let("t", computeType(v.Type.DType), x)
	}
	e.memo[key] = x
	if cond, ok := e.storeAt[v]; ok && e.In(v) {
		e.Emit(kir.If{Cond: cond, Then: e.Block(func() { e.Store(v, coords, x) })})
		e.stored[v] = true
	}
	return x
}

// elemKernels computes each element-wise op with scalar maths (ir.Elem) in
// kernel IR, from its operands' values x at the element: the one fact of
// such an op that ir cannot hold. Every op with an ir.Elem has one
// (TestElementwiseKernels runs each on the sim against the reference).
var elemKernels = map[ir.Op]func(n *ir.Node, x ...kir.Expr) kir.Expr{
	ir.OpNeg:    func(_ *ir.Node, x ...kir.Expr) kir.Expr { return kir.Neg{X: x[0]} },
	ir.OpExp:    call("exp"),
	ir.OpLog:    call("log"),
	ir.OpSqrt:   call("sqrt"),
	ir.OpRsqrt:  call("rsqrt"),
	ir.OpTanh:   call("tanh"),
	ir.OpSquare: func(_ *ir.Node, x ...kir.Expr) kir.Expr { return kir.Mul(x[0], x[0]) },
	ir.OpSigmoid: func(_ *ir.Node, x ...kir.Expr) kir.Expr {
		return kir.Div(kir.F(1), kir.Add(kir.F(1), kir.Fn("exp", kir.Neg{X: x[0]})))
	},
	ir.OpSiLU: func(_ *ir.Node, x ...kir.Expr) kir.Expr {
		return kir.Div(x[0], kir.Add(kir.F(1), kir.Fn("exp", kir.Neg{X: x[0]})))
	},
	// max(x, 0) + log1p(u), u = e^-|x|: no overflow for large |x|, and
	// precise for x ≪ 0, where log(1 + u) loses u's digits (4e-4 relative
	// error at x = −9, 0 below −16.7). Kernel languages lack log1p, so it is
	// computed as Goldberg's log(w)·u/(w − 1), w = 1 + u (w − 1 is exact),
	// and u itself where w rounds to 1. Correct only under IEEE arithmetic:
	// no device may compile kernels with fast maths (Metal's is off).
	ir.OpSoftplus: func(_ *ir.Node, x ...kir.Expr) kir.Expr {
		u := kir.Fn("exp", kir.Neg{X: kir.Fn("abs", x[0])})
		w := kir.Add(kir.F(1), u)
		d := kir.Sub(w, kir.F(1))
		log1p := kir.Select{Cond: kir.Op("==", d, kir.F(0)), A: u, B: kir.Mul(kir.Fn("log", w), kir.Div(u, d))}
		return kir.Add(kir.Max(x[0], kir.F(0)), log1p)
	},
	ir.OpScale: func(n *ir.Node, x ...kir.Expr) kir.Expr { return kir.Mul(x[0], kir.F(n.Attrs.Float("factor"))) },
	ir.OpCast: func(n *ir.Node, x ...kir.Expr) kir.Expr {
		return castExpr(x[0], n.Inputs[0].Type.DType, n.Attrs.DType("to"))
	},
	ir.OpAdd: infix("+"),
	ir.OpSub: infix("-"),
	ir.OpMul: infix("*"),
	ir.OpDiv: infix("/"),
	ir.OpMax: infix("max"),
	ir.OpMin: infix("min"),
	ir.OpGE: func(_ *ir.Node, x ...kir.Expr) kir.Expr {
		return kir.Select{Cond: kir.Op(">=", x[0], x[1]), A: kir.F(1), B: kir.F(0)}
	},
	ir.OpIsFinite: func(_ *ir.Node, x ...kir.Expr) kir.Expr {
		return kir.Select{Cond: kir.Fn("isfinite", x[0]), A: kir.F(1), B: kir.F(0)}
	},
}

// call applies a math function (see kir.Call) to the one operand.
func call(fn string) func(*ir.Node, ...kir.Expr) kir.Expr {
	return func(_ *ir.Node, x ...kir.Expr) kir.Expr { return kir.Fn(fn, x[0]) }
}

// infix applies a binary operator (see kir.Bin) to the two operands.
func infix(op string) func(*ir.Node, ...kir.Expr) kir.Expr {
	return func(_ *ir.Node, x ...kir.Expr) kir.Expr { return kir.Op(op, x[0], x[1]) }
}

func (e *Emitter) compute(v *ir.Value, c []kir.Expr) kir.Expr {
	n := v.Node
	if k, ok := elemKernels[n.Op]; ok {
		x := make([]kir.Expr, len(n.Inputs))
		for i, in := range n.Inputs {
			x[i] = e.At(in, c)
		}
		return k(n, x...)
	}
	switch n.Op {
	case ir.OpConst:
		return kir.Lit{Type: computeType(v.Type.DType), V: n.Attrs.Float("value")}
	case ir.OpReshape:
		// Same elements, same order: the operand's offset is ours.
		src := n.Inputs[0]
		lin := e.Linear(v.Type.Shape, c)
		sc := Coords(src.Type.Shape, lin)
		e.split[fmt.Sprint(src.Type.Shape, sc)] = lin
		return e.At(src, sc)
	case ir.OpTranspose:
		perm := n.Attrs.Ints("perm")
		src := make([]kir.Expr, len(c))
		for i, p := range perm {
			src[p] = c[i]
		}
		return e.At(n.Inputs[0], src)
	case ir.OpBroadcast:
		s := n.Inputs[0].Type.Shape
		off := len(c) - len(s)
		src := make([]kir.Expr, len(s))
		for i, d := range s {
			src[i] = c[off+i]
			if d == 1 && v.Type.Shape[off+i] != 1 {
				src[i] = kir.I(0)
			}
		}
		return e.At(n.Inputs[0], src)
	case ir.OpSlice:
		src := append([]kir.Expr(nil), c...)
		ax := n.Attrs.Int("axis")
		if start := n.Attrs.Int("start"); start != 0 {
			src[ax] = kir.Add(c[ax], kir.I(start))
		}
		return e.At(n.Inputs[0], src)
	case ir.OpConcat:
		return e.concat(n, c)
	case ir.OpGather:
		// The index is clamped into the table: the host refuses bad indices
		// (plan.IndexRange), and no index, however it got there, makes a
		// kernel read outside its buffer.
		idx := n.Inputs[1]
		k := len(idx.Type.Shape)
		rows := n.Inputs[0].Type.Shape[0]
		row := kir.Min(kir.Max(e.At(idx, c[:k]), kir.I(0)), kir.I(rows-1))
		src := append([]kir.Expr{row}, c[k:]...)
		return e.At(n.Inputs[0], src)
	case ir.OpOneHot:
		last := len(c) - 1
		return kir.Select{Cond: kir.Op("==", c[last], e.At(n.Inputs[0], c[:last])), A: kir.F(1), B: kir.F(0)}
	case ir.OpDequant:
		return e.dequant(n.Inputs[0], e.Linear(v.Type.Shape, c))
	case ir.OpAdamW:
		return e.adamw(n, v.Index, c)
	case ir.OpConv: // a stencil of K taps: cheap enough to compute where read
		return convAt(e, n, c)
	case ir.OpConvBwd:
		if v.Index == 0 {
			return convDXAt(e, n, c)
		}
	}
	panic(fmt.Sprintf("codegen: the emitter cannot compute %s (an op with scalar maths needs an entry in elemKernels)", n.Op))
}

func castExpr(x kir.Expr, from, to ir.DType) kir.Expr {
	switch to {
	case ir.F16, ir.BF16:
		// Round through the narrow type, as storing it would.
		return kir.Convert{Type: kir.F32, X: kir.Convert{Type: elemType(to), X: x}}
	case ir.I32:
		return kir.Convert{Type: kir.I32, X: x}
	case ir.F32:
		if from == ir.I32 {
			return kir.Convert{Type: kir.F32, X: x}
		}
	}
	return x
}

// concat reads the operand that holds element c: an if/else chain, so that
// only that operand is loaded (a hoisted load of another would read outside it).
func (e *Emitter) concat(n *ir.Node, c []kir.Expr) kir.Expr {
	ax := n.Attrs.Int("axis")
	r := e.Temp("cat")
	e.Emit(kir.Decl{Name: r, Type: computeType(n.Out().Type.DType), Init: kir.Lit{Type: computeType(n.Out().Type.DType)}, Mutable: true})
	var chain []kir.Stmt
	start := 0
	for i, in := range n.Inputs {
		src := append([]kir.Expr(nil), c...)
		src[ax] = kir.Sub(c[ax], kir.I(start))
		body := e.Block(func() { e.Emit(kir.Set(kir.V(r), e.At(in, src))) })
		start += in.Type.Shape[ax]
		if i == len(n.Inputs)-1 {
			chain = append(chain, kir.If{Cond: kir.Lit{Type: kir.Bool, V: 1}, Then: body})
			break
		}
		chain = append(chain, kir.If{Cond: kir.Lt(c[ax], kir.I(start)), Then: body})
	}
	// Nest: if (c < s1) {...} else if (c < s2) {...} else {...}
	for i := len(chain) - 2; i >= 0; i-- {
		st := chain[i].(kir.If)
		last := chain[i+1].(kir.If)
		if i == len(chain)-2 {
			st.Else = last.Then
		} else {
			st.Else = []kir.Stmt{last}
		}
		chain[i] = st
	}
	e.Emit(chain[0])
	return kir.V(r)
}

// NF4 tables shared by every kernel that dequantises.
const (
	nf4CodeTable = "NF4_CODE"
	nf4MapTable  = "NF4_ABSMAX_MAP"
	// nf4CodeShared is a kernel's threadgroup copy of the code table.
	nf4CodeShared = "nf4_code"
)

// StageTables starts the kernel by copying the NF4 code table into
// threadgroup memory, when it dequantises. The code index is a weight's
// nibble, different in each thread: reads of a constant array at divergent
// indices serialise on Apple GPUs (and on NVIDIA's constant cache), while
// threadgroup memory serves them in one pass. The absmax lookup stays in
// constant memory: threads of a simdgroup read one or two 64-element blocks
// in every staging loop of the contraction templates (rows of 16 or 32
// consecutive k, or 32 consecutive columns of one row), so that read is all
// but uniform and the constant cache broadcasts it. Call it after the
// template, which has set the threadgroup size; the copy and its barrier
// come before any thread can return.
func (e *Emitter) StageTables() {
	if !e.nf4 {
		return
	}
	t := e.K.Threads
	lid := kir.Local(0)
	if t[1] > 1 || t[2] > 1 {
		lid = kir.Add(lid, kir.Mul(kir.I(t[0]), kir.Add(kir.Local(1), kir.Mul(kir.I(t[1]), kir.Local(2)))))
	}
	n := len(nf4.Code)
	li := e.Temp("lc")
	copyCode := kir.Loop(li, lid, kir.I(n), kir.I(t[0]*t[1]*t[2]),
		kir.Set(kir.At(nf4CodeShared, kir.V(li)), kir.At(nf4CodeTable, kir.V(li))))
	pro := []kir.Stmt{kir.Shared{Name: nf4CodeShared, Type: kir.F32, Len: n}, copyCode, kir.Barrier{}}
	e.K.Body = append(pro, e.K.Body...)
}

// Tables returns the constant tables kernels may read.
func Tables() []kir.Table {
	code := make([]float64, 16)
	for i, v := range nf4.Code {
		code[i] = float64(v)
	}
	dm := nf4.DynamicMap()
	dyn := make([]float64, 256)
	for i, v := range dm {
		dyn[i] = float64(v)
	}
	return []kir.Table{{Name: nf4CodeTable, Type: kir.F32, Values: code}, {Name: nf4MapTable, Type: kir.F32, Values: dyn}}
}

// dequant reads element i of an NF4 weight: code nibble × decoded block absmax.
func (e *Emitter) dequant(w *ir.Value, i kir.Expr) kir.Expr {
	l, err := nf4.NewLayout(int(w.Type.Shape.Elems()), nf4.DefaultBlockSize, true)
	if err != nil {
		panic(err)
	}
	codes := e.Buffer(w, "_codes", kir.U8, l.Codes.Off, true)
	qabs := e.Buffer(w, "_qabsmax", kir.U8, l.QAbsmax.Off, true)
	scales := e.Buffer(w, "_scales", kir.F32, l.Scales.Off, true)
	offset := e.Buffer(w, "_offset", kir.F32, l.Offset.Off, true)
	// Element 2k is the high nibble of byte k.
	b := kir.Convert{Type: kir.I32, X: kir.At(codes, kir.Div(i, kir.I(2)))}
	code := kir.Op("&", kir.Op(">>", b, kir.Select{Cond: kir.Op("==", kir.Mod(i, kir.I(2)), kir.I(0)), A: kir.I(4), B: kir.I(0)}), kir.I(15))
	block := kir.Div(i, kir.I(nf4.DefaultBlockSize))
	q := kir.Convert{Type: kir.I32, X: kir.At(qabs, block)}
	absmax := kir.Add(kir.Mul(kir.At(nf4MapTable, q), kir.At(scales, kir.Div(block, kir.I(nf4.DoubleBlockSize)))), kir.At(offset, kir.I(0)))
	e.nf4 = true
	return kir.Mul(kir.At(nf4CodeShared, code), absmax)
}

// adamw computes output k (θ', m' or v') of a decoupled AdamW step; θ'
// reads m' and v' through At so each is computed once.
func (e *Emitter) adamw(n *ir.Node, k int, c []kir.Expr) kir.Expr {
	x := e.adamwStep(n, k, c)
	if len(n.Inputs) < 7 {
		return x
	}
	// Gated: an apply flag of 0 keeps θ, m, v (operands 0, 2, 3) as they are.
	old := e.At(n.Inputs[[]int{0, 2, 3}[k]], c)
	return kir.Select{Cond: kir.Op("!=", e.At(n.Inputs[6], nil), kir.F(0)), A: x, B: old}
}

// adamwStep is output k of the AdamW step applied.
func (e *Emitter) adamwStep(n *ir.Node, k int, c []kir.Expr) kir.Expr {
	a := n.Attrs
	b1, b2, eps, wd := a.Float("beta1"), a.Float("beta2"), a.Float("eps"), a.Float("weight_decay")
	g := e.At(n.Inputs[1], c)
	switch k {
	case 1:
		return kir.Add(kir.Mul(kir.F(b1), e.At(n.Inputs[2], c)), kir.Mul(kir.F(1-b1), g))
	case 2:
		return kir.Add(kir.Mul(kir.F(b2), e.At(n.Inputs[3], c)), kir.Mul(kir.Mul(kir.F(1-b2), g), g))
	}
	m, v := e.At(n.Outputs[1], c), e.At(n.Outputs[2], c)
	lr, t := e.At(n.Inputs[4], nil), e.At(n.Inputs[5], nil)
	c1 := kir.Sub(kir.F(1), kir.Fn("pow", kir.F(b1), t))
	c2 := kir.Sub(kir.F(1), kir.Fn("pow", kir.F(b2), t))
	p := e.At(n.Inputs[0], c)
	p = kir.Sub(p, kir.Mul(kir.Mul(lr, kir.F(wd)), p))
	return kir.Sub(p, kir.Div(kir.Mul(lr, kir.Div(m, c1)), kir.Add(kir.Fn("sqrt", kir.Div(v, c2)), kir.F(eps))))
}
