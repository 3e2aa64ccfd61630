package codegen

import (
	"fmt"
	"math"
	"slices"
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
// While launches merge, keys and shared cache what its parts bind and
// their hoisted threadgroup arrays, so a join test costs the joining
// launch's size, not this one's.
type launch struct {
	parts    []*part
	keys     []bindingKey
	shared   []kir.Shared
	sharedOK bool
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
// a launch may move costs its own bindings, not the launches it passes; a
// joinIndex finds the latest launch it can join without trying each.
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
	idx := newJoinIndex(len(ls))
	for _, l := range ls {
		l.cache()
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
		at := idx.latest(out, l, lo)
		var added []bindingKey
		if at < 0 {
			at = len(out)
			out = append(out, l)
			added = l.keys
		} else {
			added = out[at].join(l)
		}
		idx.update(out[at], at, added)
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

// cache fills the launch's keys and shared from its parts.
func (l *launch) cache() {
	l.keys = bindingsOf(l.parts)
	l.shared, l.sharedOK = hoistShared(l.parts)
}

// join appends b's parts to l and returns the buffers b adds to l's.
func (l *launch) join(b *launch) []bindingKey {
	var added []bindingKey
	for _, k := range b.keys {
		if !slices.Contains(l.keys, k) {
			added = append(added, k)
		}
	}
	l.parts = append(l.parts, b.parts...)
	l.keys = append(l.keys, added...)
	l.shared, l.sharedOK = joinShared(l.shared, b.shared)
	l.sharedOK = l.sharedOK && b.sharedOK
	return added
}

// canJoin reports whether b's parts fit in one kernel with a's: one
// threadgroup size for the parts that are not flat, at most MaxBuffers
// buffers, shared memory within the limit. Both are cached.
func canJoin(a, b *launch) bool {
	if !a.allFlat() && !b.allFlat() && a.threads() != b.threads() {
		return false
	}
	n := len(a.keys)
	for _, k := range b.keys {
		if !slices.Contains(a.keys, k) {
			n++
		}
	}
	if n > passes.MaxBuffers || !a.sharedOK || !b.sharedOK {
		return false
	}
	shared, ok := joinShared(a.shared, b.shared)
	return ok && sharedSize(shared) <= sharedLimit
}

// hotUsers is how many launches may bind a buffer before a joinIndex stops
// trying each of them and relies on its free-slot trees instead.
const hotUsers = 16

// joinIndex finds, for a new launch, the latest launch of out it can join.
// A launch that binds none of the new one's buffers can take it only with as
// many free buffer slots as those buffers: free slots are kept in max-trees,
// one for all-flat launches and one per threadgroup size, which find the
// latest such launch in log time. Launches that share a buffer with the new
// one are listed by buffer and tried each, unless the buffer is bound by many
// (a scalar every update reads): such shared buffers only lower the free
// slots asked of a tree's launch.
type joinIndex struct {
	n     int
	users map[bindingKey][]int // launches of out binding each buffer
	flat  *maxTree
	sized map[[3]int]*maxTree
}

func newJoinIndex(n int) *joinIndex {
	return &joinIndex{n: n, users: map[bindingKey][]int{}, flat: newMaxTree(n), sized: map[[3]int]*maxTree{}}
}

// tree is the free-slot tree of non-flat launches of one threadgroup size.
func (x *joinIndex) tree(threads [3]int) *maxTree {
	t, ok := x.sized[threads]
	if !ok {
		t = newMaxTree(x.n)
		x.sized[threads] = t
	}
	return t
}

// update records launch a, at index at of out, after it took buffers added.
func (x *joinIndex) update(a *launch, at int, added []bindingKey) {
	for _, k := range added {
		x.users[k] = append(x.users[k], at)
	}
	free := passes.MaxBuffers - len(a.keys)
	if a.allFlat() {
		x.flat.set(at, free)
		return
	}
	x.flat.set(at, noneFree) // it may have been flat before this join
	x.tree(a.threads()).set(at, free)
}

// latest is the largest index j ≥ lo with canJoin(out[j], l), or -1: the
// same answer as trying each launch from the last back to lo.
func (x *joinIndex) latest(out []*launch, l *launch, lo int) int {
	best := lo - 1
	hot := 0
	for _, k := range l.keys {
		us := x.users[k]
		if len(us) > hotUsers {
			hot++
			continue
		}
		for _, j := range us {
			if j > best && canJoin(out[j], l) {
				best = j
			}
		}
	}
	// Any other launch shares at most the hot buffers with l.
	need := len(l.keys) - hot
	trees := []*maxTree{x.flat}
	if l.allFlat() {
		for _, t := range x.sized {
			trees = append(trees, t)
		}
	} else if t, ok := x.sized[l.threads()]; ok {
		trees = append(trees, t)
	}
	hi := len(out)
	for {
		j := -1
		for _, t := range trees {
			j = max(j, t.last(best+1, hi, need))
		}
		if j < 0 || canJoin(out[j], l) {
			best = max(best, j)
			break
		}
		hi = j
	}
	if best < lo {
		return -1
	}
	return best
}

// noneFree marks an index a maxTree holds no launch at.
const noneFree = math.MinInt32

// maxTree holds a value per index and finds the last index of a range
// whose value is at least a bound, in log time.
type maxTree struct {
	size int
	v    []int32 // v[1] is the root; the leaves are v[size:]
}

func newMaxTree(n int) *maxTree {
	size := 1
	for size < n {
		size *= 2
	}
	t := &maxTree{size: size, v: make([]int32, 2*size)}
	for i := range t.v {
		t.v[i] = noneFree
	}
	return t
}

func (t *maxTree) set(i, x int) {
	i += t.size
	t.v[i] = int32(x)
	for i > 1 {
		i /= 2
		t.v[i] = max(t.v[2*i], t.v[2*i+1])
	}
}

// last is the largest index in [lo, hi) whose value is ≥ x, or -1.
func (t *maxTree) last(lo, hi, x int) int {
	return t.find(1, 0, t.size, lo, hi, int32(x))
}

func (t *maxTree) find(node, l, r, lo, hi int, x int32) int {
	if r <= lo || hi <= l || t.v[node] < x {
		return -1
	}
	if r-l == 1 {
		return l
	}
	m := (l + r) / 2
	if i := t.find(2*node+1, m, r, lo, hi, x); i >= 0 {
		return i
	}
	return t.find(2*node, l, m, lo, hi, x)
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
	ok := true
	for _, p := range ps {
		var own []kir.Shared
		kir.Walk(p.k.Body, func(kir.Expr) {}, func(s kir.Stmt) {
			if sh, isShared := s.(kir.Shared); isShared {
				own = append(own, sh)
			}
		})
		var okP bool
		out, okP = joinShared(out, own)
		ok = ok && okP
	}
	return out, ok
}

// joinShared adds the arrays b to the hoisted arrays a (into a copy), as
// hoistShared does.
func joinShared(a, b []kir.Shared) ([]kir.Shared, bool) {
	out := slices.Clone(a)
	ok := true
	for _, sh := range b {
		i := slices.IndexFunc(out, func(o kir.Shared) bool { return o.Name == sh.Name })
		switch {
		case i < 0:
			out = append(out, sh)
		case out[i].Type != sh.Type:
			ok = false
		default:
			out[i].Len = max(out[i].Len, sh.Len)
		}
	}
	return out, ok
}

// sharedSize is the threadgroup memory of hoisted arrays.
func sharedSize(shared []kir.Shared) int {
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
