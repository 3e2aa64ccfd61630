package codegen

import (
	"fmt"
	"strings"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Horizontal fusion (XLA's name for it): launches that do not read each
// other's results run as one dispatch, each part on its own range of
// threadgroups: the LoRA matmuls of a backward pass that all read dy, the
// per-parameter AdamW updates, the small reductions of the MoE aux loss. It
// works on lowered kernels, so any template can take part; the parts must
// agree on the threadgroup size, since their barriers and lane arithmetic
// assume it, except flat parts, which any size can run.

// launch is one lowered kernel launch: its parts, in dispatch order.
type launch struct {
	parts []*part
}

// part is one kernel before merging, with its name base ("matmul").
type part struct {
	k    *kir.Kernel
	d    Dispatch
	base string
	// flat parts index only by their thread's position in the grid: no
	// threadgroup memory, barriers or simd-groups. They run in a launch of
	// any threadgroup size, over as many threadgroups as their threads need.
	flat bool
}

// isFlat reports whether a kernel body only uses the thread's grid position.
func isFlat(k *kir.Kernel) bool {
	flat := k.Threads[1] == 1 && k.Threads[2] == 1 && k.Groups[1] == 1 && k.Groups[2] == 1
	kir.Walk(k.Body, func(x kir.Expr) {
		switch x := x.(type) {
		case kir.Builtin:
			flat = flat && x.Kind == "thread" && x.Dim == 0
		case kir.Simd:
			flat = false
		}
	}, func(st kir.Stmt) {
		switch st.(type) {
		case kir.Barrier, kir.Shared, kir.Tile, kir.TileLoad, kir.TileStore, kir.TileMMA:
			flat = false
		}
	})
	return flat
}

// threads is a launch's threadgroup size: its non-flat parts' (they agree),
// else its first part's.
func (l *launch) threads() [3]int {
	for _, p := range l.parts {
		if !p.flat {
			return p.k.Threads
		}
	}
	return l.parts[0].k.Threads
}

func (l *launch) allFlat() bool {
	for _, p := range l.parts {
		if !p.flat {
			return false
		}
	}
	return true
}

// smallBytes is the most a launch may write and still move any distance
// back: the results it then holds longer cost next to nothing.
const smallBytes = 1 << 20

func (l *launch) writesSmall() bool {
	var n int64
	for _, p := range l.parts {
		for _, v := range p.d.Writes {
			n += v.Stored().Bytes()
		}
	}
	return n <= smallBytes
}

const (
	// horizontalWindow is how many launches back a kernel may move to join
	// one: far enough for the LoRA backward matmuls, near enough that the
	// results it moves earlier do not live much longer.
	horizontalWindow = 4
	// sharedLimit is the threadgroup memory of a kernel (Metal's 32 KiB).
	sharedLimit = 32 << 10
)

// mergeLaunches joins each launch into the latest earlier launch it can run
// with: within the window, after every launch that writes what it reads and
// every launch that reads what it writes (only an in-place update can: other
// values are written once, after every reader of theirs). The last launch
// to write and to bind each buffer is kept by index, so finding how far back
// a launch may move costs its own bindings, not the launches it passes.
func mergeLaunches(ls []*launch, alias map[*ir.Value]*ir.Value) []*launch {
	owner := func(v *ir.Value) *ir.Value {
		if o, ok := alias[v]; ok {
			return o
		}
		return v
	}
	lastWrite := map[*ir.Value]int{} // owner → last launch of out writing it
	lastBind := map[*ir.Value]int{}  // owner → last launch of out binding it
	var out []*launch
	for _, l := range ls {
		window := horizontalWindow
		if l.writesSmall() {
			window = len(out)
		}
		lo := max(len(out)-window, 0)
		for _, p := range l.parts {
			for _, b := range p.d.Bindings {
				if k, ok := lastWrite[owner(b.Value)]; ok {
					lo = max(lo, k+1)
				}
			}
			for _, v := range p.d.Writes {
				if k, ok := lastBind[owner(v)]; ok {
					lo = max(lo, k+1)
				}
			}
		}
		at := -1
		for j := len(out) - 1; j >= lo; j-- {
			if canJoin(out[j], l) {
				at = j
				break
			}
		}
		if at < 0 {
			at = len(out)
			out = append(out, l)
		} else {
			out[at].parts = append(out[at].parts, l.parts...)
		}
		for _, p := range l.parts {
			for _, b := range p.d.Bindings {
				lastBind[owner(b.Value)] = max(lastBind[owner(b.Value)], at)
			}
			for _, v := range p.d.Writes {
				lastWrite[owner(v)] = max(lastWrite[owner(v)], at)
			}
		}
	}
	return out
}

// canJoin reports whether b's parts fit in one kernel with a's: one
// threadgroup size for the parts that are not flat, at most MaxBuffers
// buffers, shared memory within the limit.
func canJoin(a, b *launch) bool {
	if !a.allFlat() && !b.allFlat() && a.threads() != b.threads() {
		return false
	}
	ps := append(append([]*part(nil), a.parts...), b.parts...)
	return len(bindingsOf(ps)) <= passes.MaxBuffers && sharedBytes(ps) <= sharedLimit
}

type bindingKey struct {
	v   *ir.Value
	off int64
}

// bindingsOf lists the distinct buffers the parts bind, in first-use order.
func bindingsOf(ps []*part) []bindingKey {
	var keys []bindingKey
	seen := map[bindingKey]bool{}
	for _, p := range ps {
		for _, b := range p.d.Bindings {
			k := bindingKey{b.Value, b.Offset}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// hoistShared collects the threadgroup arrays of the parts, one per name
// (parts never share a threadgroup, so same-named arrays overlay: the
// longest wins), in first-seen order. It fails when two parts give a name
// different types.
func hoistShared(ps []*part) ([]kir.Shared, bool) {
	var out []kir.Shared
	at := map[string]int{}
	ok := true
	for _, p := range ps {
		kir.Walk(p.k.Body, func(kir.Expr) {}, func(s kir.Stmt) {
			sh, isShared := s.(kir.Shared)
			if !isShared {
				return
			}
			i, seen := at[sh.Name]
			switch {
			case !seen:
				at[sh.Name] = len(out)
				out = append(out, sh)
			case out[i].Type != sh.Type:
				ok = false
			default:
				out[i].Len = max(out[i].Len, sh.Len)
			}
		})
	}
	return out, ok
}

// sharedBytes is the threadgroup memory of the parts in one kernel, or
// more than any limit when they cannot share one.
func sharedBytes(ps []*part) int {
	shared, ok := hoistShared(ps)
	if !ok {
		return sharedLimit + 1
	}
	n := 0
	for _, sh := range shared {
		n += sh.Len * typeBytes(sh.Type)
	}
	return n
}

func typeBytes(t kir.Type) int {
	switch t {
	case kir.F16, kir.BF16:
		return 2
	case kir.U8, kir.Bool:
		return 1
	}
	return 4
}

// build makes the launch's kernel and dispatch (its kernel still unnamed).
// One part is returned as it is; several become one kernel over a
// one-dimensional grid: if (group < end₀) { part 0 } else if ...
func (l *launch) build() (*kir.Kernel, Dispatch, string) {
	if len(l.parts) == 1 {
		p := l.parts[0]
		return p.k, p.d, p.base
	}
	keys := bindingsOf(l.parts)
	index := map[bindingKey]int{}
	k := &kir.Kernel{Threads: l.threads()}
	d := Dispatch{Kind: "horizontal"}
	for i, key := range keys {
		index[key] = i
		k.Params = append(k.Params, kir.Param{Name: fmt.Sprintf("p%d", i), ReadOnly: true})
		d.Bindings = append(d.Bindings, Binding{Value: key.v, Offset: key.off})
	}
	shared, _ := hoistShared(l.parts)
	for _, sh := range shared {
		k.Body = append(k.Body, sh)
	}
	var chain []kir.If
	var docs, bases []string
	start := 0
	for _, p := range l.parts {
		names := map[string]string{}
		for i, prm := range p.k.Params {
			j := index[bindingKey{p.d.Bindings[i].Value, p.d.Bindings[i].Offset}]
			names[prm.Name] = k.Params[j].Name
			k.Params[j].Elem = prm.Elem
			k.Params[j].ReadOnly = k.Params[j].ReadOnly && prm.ReadOnly
		}
		g := p.k.Groups
		var guard []kir.Stmt
		if p.flat && p.k.Threads != k.Threads { // as many threadgroups of the launch's size as its threads need
			n := g[0] * p.k.Threads[0]
			g = [3]int{(n + k.Threads[0] - 1) / k.Threads[0], 1, 1}
			if n%k.Threads[0] != 0 {
				guard = []kir.Stmt{kir.If{Cond: kir.Op(">=", kir.Thread(0), kir.I(n)), Then: []kir.Stmt{kir.Return{}}}}
			}
		}
		flat := kir.V(fmt.Sprintf("h%d", len(chain)))
		group := [3]kir.Expr{flat, divBy(flat, g[0]), divBy(flat, g[0]*g[1])}
		if g[1] > 1 || g[2] > 1 {
			group[0] = kir.Mod(flat, kir.I(g[0]))
		}
		if g[2] > 1 {
			group[1] = kir.Mod(group[1], kir.I(g[1]))
		}
		body := kir.Rewrite(append(guard, p.k.Body...), func(x kir.Expr) kir.Expr {
			b, ok := x.(kir.Builtin)
			switch {
			case !ok:
				return x
			case b.Kind == "group":
				return group[b.Dim]
			case b.Kind == "thread":
				return kir.Add(kir.Mul(group[b.Dim], kir.I(k.Threads[b.Dim])), kir.Local(b.Dim))
			}
			return x
		}, func(n string) string {
			if m, ok := names[n]; ok {
				return m
			}
			return n
		})
		body = dropShared(body)
		body = append([]kir.Stmt{kir.Decl{Name: flat.(kir.Var).Name, Type: kir.I32, Init: kir.Sub(kir.Group(0), kir.I(start))}}, body...)
		start += g[0] * g[1] * g[2]
		chain = append(chain, kir.If{Cond: kir.Lt(kir.Group(0), kir.I(start)), Then: body})
		docs = append(docs, fmt.Sprintf("part %d (%s): %s", len(chain)-1, p.base, p.k.Doc))
		bases = append(bases, p.base)
		d.Writes = append(d.Writes, p.d.Writes...)
		d.Fuses = append(d.Fuses, p.d.Fuses...)
	}
	for i := len(chain) - 2; i >= 0; i-- {
		chain[i].Else = []kir.Stmt{chain[i+1]}
	}
	k.Body = append(k.Body, chain[0])
	k.Groups = [3]int{start, 1, 1}
	k.Doc = fmt.Sprintf("%d independent kernels in one launch\n%s", len(l.parts), strings.Join(docs, "\n"))
	return k, d, horizontalBase(bases)
}

// divBy is x / n, or x itself for n = 1 (tidier kernels).
func divBy(x kir.Expr, n int) kir.Expr {
	if n == 1 {
		return x
	}
	return kir.Div(x, kir.I(n))
}

// dropShared removes threadgroup array declarations (hoisted to the kernel's scope).
func dropShared(body []kir.Stmt) []kir.Stmt {
	var out []kir.Stmt
	for _, s := range body {
		switch t := s.(type) {
		case kir.Shared:
			continue
		case kir.For:
			t.Body = dropShared(t.Body)
			s = t
		case kir.If:
			t.Then, t.Else = dropShared(t.Then), dropShared(t.Else)
			s = t
		}
		out = append(out, s)
	}
	return out
}

// horizontalBase names a merged kernel after its parts: "matmul_x3", or
// "adamw_mul_add_x4" when the parts differ.
func horizontalBase(bases []string) string {
	var distinct []string
	seen := map[string]bool{}
	for _, b := range bases {
		if !seen[b] && len(distinct) < 2 {
			seen[b] = true
			distinct = append(distinct, b)
		}
	}
	return fmt.Sprintf("%s_x%d", strings.Join(distinct, "_"), len(bases))
}
