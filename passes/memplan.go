package passes

// Static memory planning: every buffer of the train step gets a fixed offset
// in one arena, split into segments because Metal caps a single MTLBuffer
// (maxBufferLength) below the working set we want.
//
// The planner follows the TFLite arena planner and XLA's heap simulator:
// place buffers one by one, each into the smallest free gap that stays free
// over its whole lifetime (else on top), try more than one order, keep the
// smaller arena, and compare with the lower bound (most bytes live at once).
// Buffers that live for the whole step are packed first at the bottom of the
// segments: they overlap everything, so a gap below one could never be used.

import (
	"cmp"

	"errors"
	"fmt"
	"github.com/scm-magellano/magc/ir"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// Defaults for MemOptions, from the target (an Apple M4 with 16 GB).
const (
	DefaultMemAlign   = 256            // Metal buffer offsets
	DefaultMaxSegment = 8 << 30        // maxBufferLength of 16 GB Apple GPUs
	M4ArenaBudget     = 10_600_000_000 // under recommendedMaxWorkingSetSize (10.67 GiB)
)

// Buffer is one buffer to place. Start and End are the indices (inclusive)
// of the first and last kernel of the schedule that touch it.
type Buffer struct {
	Name  string
	Bytes int64
	// Role colours the picture and reports.
	Role       ir.Role
	Start, End int
	// Persistent buffers live for the whole step (weights, optimizer
	// state); the planner sets Start=0 and End=last kernel.
	Persistent bool
	// InPlace names a buffer whose last reader is this buffer's first
	// writer and which may be overwritten by it (an elementwise kernel
	// writing over an input it last reads). The planner takes the hint when
	// that buffer ends at this buffer's Start and no other buffer took it
	// first; the two then share an offset. A name that is not a buffer is
	// an error.
	InPlace string
}

// Placed is a buffer with its place in the arena.
type Placed struct {
	Buffer
	Segment int
	Offset  int64 // within the segment
}

// MemOptions configures PlanMemory. Zero Align and MaxSegment take the
// defaults; zero Budget means unlimited (DefaultMemOptions sets the M4's).
type MemOptions struct {
	Align      int64 // a power of two
	MaxSegment int64 // largest segment (one MTLBuffer)
	Budget     int64 // largest arena; over it PlanMemory returns *BudgetError
	// KernelNames, when set, names kernels in error messages.
	KernelNames []string
}

// DefaultMemOptions is the Apple M4 16 GB target.
func DefaultMemOptions() MemOptions {
	return MemOptions{Align: DefaultMemAlign, MaxSegment: DefaultMaxSegment, Budget: M4ArenaBudget}
}

// MemPlan is the result of PlanMemory.
type MemPlan struct {
	// Buffers are in the order given to PlanMemory, persistent ones with
	// their lifetime set to the whole step.
	Buffers    []Placed
	Segments   []int64 // segment sizes, each at most MaxSegment
	ArenaBytes int64   // sum of Segments
	// LowerBound is the most aligned bytes live at one kernel (an in-place
	// chain counts once): no placement can use less.
	LowerBound int64
	PeakKernel int    // a kernel where LowerBound is reached
	Order      string // the placement order that won
	// The planning options Verify checks against.
	Kernels    int
	Align      int64
	MaxSegment int64
}

// Ratio is ArenaBytes/LowerBound: 1 is optimal.
func (p *MemPlan) Ratio() float64 {
	if p.LowerBound == 0 {
		return 1
	}
	return float64(p.ArenaBytes) / float64(p.LowerBound)
}

// String summarises the plan in one line.
func (p *MemPlan) String() string {
	segs := make([]string, len(p.Segments))
	for i, s := range p.Segments {
		segs[i] = memGB(s)
	}
	return fmt.Sprintf("arena %s in %d segment(s) [%s], lower bound %s at kernel %d (+%.2f%%), %d buffers, order %s",
		memGB(p.ArenaBytes), len(p.Segments), strings.Join(segs, ", "), memGB(p.LowerBound), p.PeakKernel,
		100*(p.Ratio()-1), len(p.Buffers), p.Order)
}

// BudgetError is returned (with the plan) when the arena exceeds the budget.
type BudgetError struct {
	Arena, Budget, LowerBound int64
	PeakKernel                int
	PeakKernelName            string   // empty unless MemOptions.KernelNames was set
	Live                      []Placed // the largest buffers live at PeakKernel, largest first (at most 10)
	LiveCount                 int      // how many buffers are live there
}

// LowerBoundFits says whether a better placement alone could fit the budget.
func (e *BudgetError) LowerBoundFits() bool { return e.LowerBound <= e.Budget }

func (e *BudgetError) Error() string {
	var b strings.Builder
	kernel := fmt.Sprint(e.PeakKernel)
	if e.PeakKernelName != "" {
		kernel += " (" + e.PeakKernelName + ")"
	}
	fmt.Fprintf(&b, "memory plan needs %s, over the budget of %s; the lower bound is %s, at kernel %s",
		memGB(e.Arena), memGB(e.Budget), memGB(e.LowerBound), kernel)
	if e.LowerBoundFits() {
		fmt.Fprintf(&b, "\nthe lower bound fits the budget: the placement wastes %s on fragmentation", memGB(e.Arena-e.LowerBound))
	} else {
		fmt.Fprintf(&b, "\neven the lower bound exceeds the budget: no placement can fit; less must be live at kernel %s", kernel)
	}
	fmt.Fprintf(&b, "\nthe %d largest of %d buffers live at kernel %s:", len(e.Live), e.LiveCount, kernel)
	for _, l := range e.Live {
		fmt.Fprintf(&b, "\n  %-40s %10.1f MB  %s", l.Name, float64(l.Bytes)/1e6, l.Role)
	}
	return b.String()
}

func memGB(b int64) string {
	return fmt.Sprintf("%.2f GB (%.2f GiB)", float64(b)/1e9, float64(b)/(1<<30))
}

// PlanMemory places bufs, whose lifetimes are kernel indices in [0, kernels),
// into an arena of segments. The returned plan has passed Verify. When the
// arena exceeds opt.Budget the plan is returned together with a
// *BudgetError, so that callers can still report or draw it.
func PlanMemory(bufs []Buffer, kernels int, opt MemOptions) (*MemPlan, error) {
	pr, err := newMemProblem(bufs, kernels, opt)
	if err != nil {
		return nil, err
	}
	orders := memOrders
	if len(pr.rest) > memIndexedMax {
		orders = slices.DeleteFunc(slices.Clone(orders), func(o memOrder) bool { return !o.byStart })
	}
	// The orders are independent; place them at once, keep the first smallest.
	results := make([]*memResult, len(orders))
	var wg sync.WaitGroup
	for i, o := range orders {
		wg.Go(func() { results[i] = pr.place(o) })
	}
	wg.Wait()
	best := results[0]
	for _, r := range results[1:] {
		if r.arena < best.arena {
			best = r
		}
	}
	plan := pr.plan(best)
	if err := plan.Verify(); err != nil {
		return nil, fmt.Errorf("memplan: internal error, the plan is invalid: %w", err)
	}
	if pr.opt.Budget > 0 && plan.ArenaBytes > pr.opt.Budget {
		return plan, pr.budgetError(plan)
	}
	return plan, nil
}

// memBlock is one allocation: a buffer, or an in-place chain of buffers
// that share an offset.
type memBlock struct {
	size int64 // aligned; the largest member
	s, e int32 // union of the members' lifetimes
}

type memProblem struct {
	opt     MemOptions
	seg     int64 // usable segment size: MaxSegment rounded down to Align
	kernels int
	bufs    []Buffer // validated, persistent lifetimes filled in
	succ    []int32  // the buffer that overwrites this one in place, or -1
	blocks  []memBlock
	block   []int32 // buffer → its block
	full    []int32 // blocks live at every kernel, placed once by packFull
	rest    []int32 // the others
	fullAt  []int64 // packFull's addresses, indexed like full
	walls   []int64 // bytes used by full blocks at the bottom of each segment
}

func (o MemOptions) normalize() (MemOptions, error) {
	if o.Align == 0 {
		o.Align = DefaultMemAlign
	}
	if o.MaxSegment == 0 {
		o.MaxSegment = DefaultMaxSegment
	}
	switch {
	case o.Align < 0 || o.Align&(o.Align-1) != 0:
		return o, fmt.Errorf("memplan: alignment %d is not a power of two", o.Align)
	case o.MaxSegment < o.Align:
		return o, fmt.Errorf("memplan: segment size %d is smaller than the alignment %d", o.MaxSegment, o.Align)
	case o.Budget < 0:
		return o, fmt.Errorf("memplan: negative budget %d", o.Budget)
	}
	return o, nil
}

func newMemProblem(in []Buffer, kernels int, opt MemOptions) (*memProblem, error) {
	opt, err := opt.normalize()
	if err != nil {
		return nil, err
	}
	if len(in) > 0 && kernels <= 0 {
		return nil, fmt.Errorf("memplan: %d buffers but %d kernels", len(in), kernels)
	}
	if kernels > math.MaxInt32 || len(in) > math.MaxInt32 {
		return nil, errors.New("memplan: too many kernels or buffers")
	}
	pr := &memProblem{opt: opt, seg: opt.MaxSegment &^ (opt.Align - 1), kernels: kernels,
		bufs: slices.Clone(in), succ: make([]int32, len(in)), block: make([]int32, len(in))}
	index := make(map[string]int, len(in))
	var total int64
	for i := range pr.bufs {
		b := &pr.bufs[i]
		if b.Persistent {
			b.Start, b.End = 0, kernels-1
		}
		switch _, dup := index[b.Name]; {
		case b.Name == "":
			return nil, fmt.Errorf("memplan: buffer %d has no name", i)
		case dup:
			return nil, fmt.Errorf("memplan: two buffers are named %q", b.Name)
		case b.Bytes < 0:
			return nil, fmt.Errorf("memplan: buffer %q has negative size %d", b.Name, b.Bytes)
		case b.Bytes > pr.seg:
			return nil, fmt.Errorf("memplan: buffer %q (%s) is larger than a segment (%s): split it or raise the segment size",
				b.Name, memGB(b.Bytes), memGB(pr.seg))
		case b.Start < 0 || b.End < b.Start || b.End >= kernels:
			return nil, fmt.Errorf("memplan: buffer %q has lifetime [%d, %d], outside [0, %d) or reversed",
				b.Name, b.Start, b.End, kernels)
		}
		index[b.Name] = i
		total += pr.size(b.Bytes)
		if total > math.MaxInt64/4 { // keeps every address computation far from overflow
			return nil, errors.New("memplan: buffers total more than 2^61 bytes")
		}
		pr.succ[i] = -1
	}
	pred, err := pr.chain(index)
	if err != nil {
		return nil, err
	}
	pr.makeBlocks(pred)
	if slices.Contains(pr.block, -1) {
		return nil, errors.New("memplan: internal error, an in-place chain has no head")
	}
	pr.packFull()
	return pr, nil
}

func (pr *memProblem) size(bytes int64) int64 {
	return (bytes + pr.opt.Align - 1) &^ (pr.opt.Align - 1)
}

// chain takes the in-place hints that are safe: the overwritten buffer ends
// where the new one starts, each buffer is overwritten at most once, and no
// chain gets a one-kernel buffer in its middle (its neighbours would both be
// live at that kernel at the same offset).
func (pr *memProblem) chain(index map[string]int) ([]int32, error) {
	pred := make([]int32, len(pr.bufs))
	for i := range pred {
		pred[i] = -1
	}
	for q := range pr.bufs {
		b := &pr.bufs[q]
		if b.InPlace == "" {
			continue
		}
		p, ok := index[b.InPlace]
		if !ok {
			return nil, fmt.Errorf("memplan: buffer %q is in place over %q, which is not a buffer", b.Name, b.InPlace)
		}
		a := &pr.bufs[p]
		if p == q || a.End != b.Start || pr.succ[p] >= 0 ||
			(pred[p] >= 0 && a.Start == a.End) || (pr.succ[q] >= 0 && b.Start == b.End) {
			continue
		}
		pr.succ[p], pred[q] = int32(q), int32(p)
	}
	// No cycles: closing one needs its last link's overwritten buffer to
	// have a predecessor and be one kernel long, which is refused above.
	return pred, nil
}

// makeBlocks makes one block per chain, starting at the chain heads.
func (pr *memProblem) makeBlocks(pred []int32) {
	last := int32(pr.kernels - 1)
	for i := range pr.block {
		pr.block[i] = -1
	}
	for i := range pr.bufs {
		if pred[i] >= 0 {
			continue
		}
		bl := memBlock{s: int32(pr.bufs[i].Start)}
		id := int32(len(pr.blocks))
		for j := int32(i); j >= 0; j = pr.succ[j] {
			pr.block[j] = id
			bl.size = max(bl.size, pr.size(pr.bufs[j].Bytes))
			bl.e = int32(pr.bufs[j].End)
		}
		pr.blocks = append(pr.blocks, bl)
		if bl.s == 0 && bl.e == last {
			pr.full = append(pr.full, id)
		} else {
			pr.rest = append(pr.rest, id)
		}
	}
}

// packFull packs the whole-step blocks first-fit by decreasing size into
// the bottom of the segments.
func (pr *memProblem) packFull() {
	slices.SortFunc(pr.full, func(a, b int32) int {
		return cmp.Or(cmp.Compare(pr.blocks[b].size, pr.blocks[a].size), cmp.Compare(a, b))
	})
	pr.fullAt = make([]int64, len(pr.full))
	for i, b := range pr.full {
		size := pr.blocks[b].size
		k := 0
		for k < len(pr.walls) && pr.walls[k]+size > pr.seg {
			k++
		}
		if k == len(pr.walls) {
			pr.walls = append(pr.walls, 0)
		}
		pr.fullAt[i] = int64(k)*pr.seg + pr.walls[k]
		pr.walls[k] += size
	}
}

// A placement order of the blocks that are not whole-step.
type memOrder struct {
	name string
	less func(a, b *memBlock) int
	// byStart: the order sorts by start, so placeSweep may place it.
	byStart bool
}

var memOrders = []memOrder{
	// Big buffers first: they are the hardest to fit into gaps.
	{"size", func(a, b *memBlock) int {
		return cmp.Or(cmp.Compare(b.size, a.size), cmp.Compare(b.e-b.s, a.e-a.s), cmp.Compare(a.s, b.s))
	}, false},
	// By start, longest first: long-lived buffers (saved activations) stack
	// up in forward order, and backward buffers fill what they free.
	{"start", func(a, b *memBlock) int {
		return cmp.Or(cmp.Compare(a.s, b.s), cmp.Compare(b.e, a.e), cmp.Compare(b.size, a.size))
	}, true},
}

// memIndexedMax is the most blocks an order placeIndexed places is tried
// for. Its query costs the address spans taken across a block's lifetime,
// which on a model of thousands of layers stay fragmented into a number
// that grows with the layers, so such an order grows with the square of
// the blocks (3.6 s of CPU for 16,000 small layers, 145,000 blocks; over
// two minutes at 100,000); placeSweep's orders stay linear. The shipped
// models have under 3,000 blocks.
const memIndexedMax = 1 << 15

type memResult struct {
	order string
	addr  []int64 // per block, in the global address space (segment k starts at k*seg)
	arena int64
}

func (pr *memProblem) place(o memOrder) *memResult {
	r := &memResult{order: o.name, addr: make([]int64, len(pr.blocks))}
	for i, b := range pr.full {
		r.addr[b] = pr.fullAt[i]
	}
	order := slices.Clone(pr.rest)
	slices.SortFunc(order, func(a, b int32) int { return cmp.Or(o.less(&pr.blocks[a], &pr.blocks[b]), cmp.Compare(a, b)) })
	if o.byStart {
		pr.placeSweep(order, r.addr)
	} else {
		pr.placeIndexed(order, r.addr)
	}
	r.arena = memSum(pr.segments(r.addr))
	return r
}

// placeIndexed places blocks in any order, asking a memIndex which
// addresses are taken during each block's lifetime.
func (pr *memProblem) placeIndexed(order []int32, addr []int64) {
	idx := newMemIndex(pr.kernels)
	last := int32(pr.kernels - 1)
	for k, w := range pr.walls {
		if w > 0 {
			idx.add(0, last, memSpan{int64(k) * pr.seg, int64(k)*pr.seg + w})
		}
	}
	for _, b := range order {
		bl := &pr.blocks[b]
		if bl.size == 0 {
			continue // takes no space; stays at address 0
		}
		a := pr.fit(idx.occupied(bl.s, bl.e), bl.size)
		addr[b] = a
		idx.add(bl.s, bl.e, memSpan{a, a + bl.size})
	}
}

// placeSweep places blocks sorted by start. Each one then overlaps exactly
// the placed blocks still live at its start, so a free list kept while
// sweeping over time gives placeIndexed's placement, faster.
func (pr *memProblem) placeSweep(order []int32, addr []int64) {
	var free []memSpan // sorted; the last runs to the top of the address space
	lo := int64(0)
	for k, w := range pr.walls {
		if base := int64(k) * pr.seg; w > 0 {
			if base > lo {
				free = append(free, memSpan{lo, base})
			}
			lo = base + w
		}
	}
	free = append(free, memSpan{lo, math.MaxInt64})
	byEnd := slices.Clone(order)
	slices.SortFunc(byEnd, func(a, b int32) int { return cmp.Or(cmp.Compare(pr.blocks[a].e, pr.blocks[b].e), cmp.Compare(a, b)) })
	next := 0
	for _, b := range order {
		bl := &pr.blocks[b]
		for ; next < len(byEnd) && pr.blocks[byEnd[next]].e < bl.s; next++ {
			if d := byEnd[next]; pr.blocks[d].size > 0 {
				free = memUnionAdd(free, memSpan{addr[d], addr[d] + pr.blocks[d].size})
			}
		}
		if bl.size == 0 {
			continue
		}
		// Best fit among the bounded gaps, else the top one.
		g, bestGap := len(free)-1, int64(math.MaxInt64)
		for i, f := range free[:len(free)-1] {
			if gap := f.hi - f.lo; gap >= bl.size && gap < bestGap && pr.bump(f.lo, bl.size)+bl.size <= f.hi {
				g, bestGap = i, gap
			}
		}
		f := free[g]
		a := pr.bump(f.lo, bl.size)
		addr[b] = a
		rest := make([]memSpan, 0, 2) // what is left of the gap, below and above
		if a > f.lo {
			rest = append(rest, memSpan{f.lo, a})
		}
		if a+bl.size < f.hi {
			rest = append(rest, memSpan{a + bl.size, f.hi})
		}
		free = slices.Replace(free, g, g+1, rest...)
	}
}

// fit returns the address of the smallest gap between the occupied spans
// that holds size bytes without crossing a segment boundary, else the
// lowest address above them all.
func (pr *memProblem) fit(occ []memSpan, size int64) int64 {
	best, bestGap := int64(-1), int64(math.MaxInt64)
	prev := int64(0)
	for _, sp := range occ {
		if gap := sp.lo - prev; gap >= size && gap < bestGap { // bump only when it might fit
			if a := pr.bump(prev, size); a+size <= sp.lo {
				best, bestGap = a, gap
			}
		}
		prev = sp.hi
	}
	if best >= 0 {
		return best
	}
	return pr.bump(prev, size)
}

// bump moves a to the next segment when [a, a+size) would straddle.
func (pr *memProblem) bump(a, size int64) int64 {
	if end := (a/pr.seg + 1) * pr.seg; a+size > end {
		return end
	}
	return a
}

func (pr *memProblem) segments(addr []int64) []int64 {
	var segs []int64
	if len(pr.blocks) > 0 {
		segs = []int64{0}
	}
	for b, a := range addr {
		size := pr.blocks[b].size
		if size == 0 {
			continue
		}
		k := int(a / pr.seg)
		for len(segs) <= k {
			segs = append(segs, 0)
		}
		segs[k] = max(segs[k], a+size-int64(k)*pr.seg)
	}
	return segs
}

func memSum(xs []int64) (s int64) {
	for _, x := range xs {
		s += x
	}
	return s
}

func (pr *memProblem) plan(r *memResult) *MemPlan {
	p := &MemPlan{Buffers: make([]Placed, len(pr.bufs)), Segments: pr.segments(r.addr), Order: r.order,
		Kernels: pr.kernels, Align: pr.opt.Align, MaxSegment: pr.opt.MaxSegment}
	p.ArenaBytes = memSum(p.Segments)
	for i, b := range pr.bufs {
		a := r.addr[pr.block[i]]
		k := a / pr.seg
		p.Buffers[i] = Placed{Buffer: b, Segment: int(k), Offset: a - k*pr.seg}
	}
	p.LowerBound, p.PeakKernel = pr.lowerBound()
	return p
}

// lowerBound is the most block bytes live at one kernel, and that kernel.
func (pr *memProblem) lowerBound() (int64, int) {
	if pr.kernels <= 0 {
		return 0, 0
	}
	delta := make([]int64, pr.kernels+1)
	for _, b := range pr.blocks {
		delta[b.s] += b.size
		delta[b.e+1] -= b.size
	}
	var live, peak int64
	at := 0
	for k := 0; k < pr.kernels; k++ {
		live += delta[k]
		if live > peak {
			peak, at = live, k
		}
	}
	return peak, at
}

func (pr *memProblem) budgetError(p *MemPlan) *BudgetError {
	e := &BudgetError{Arena: p.ArenaBytes, Budget: pr.opt.Budget, LowerBound: p.LowerBound, PeakKernel: p.PeakKernel}
	if p.PeakKernel < len(pr.opt.KernelNames) {
		e.PeakKernelName = pr.opt.KernelNames[p.PeakKernel]
	}
	for _, b := range p.Buffers {
		if b.Start <= p.PeakKernel && p.PeakKernel <= b.End {
			e.Live = append(e.Live, b)
		}
	}
	e.LiveCount = len(e.Live)
	slices.SortStableFunc(e.Live, func(a, b Placed) int { return cmp.Compare(b.Bytes, a.Bytes) }) // ties in plan order
	e.Live = e.Live[:min(10, len(e.Live))]
	return e
}

// Verify checks that the plan is safe to run: every buffer is aligned and
// inside its segment, segments are at most MaxSegment, and no two buffers
// live at the same kernel share a byte, except a buffer and the one it
// overwrites in place (InPlace, ending where it starts, at the same offset).
func (p *MemPlan) Verify() error {
	align, maxSeg := cmp.Or(p.Align, DefaultMemAlign), cmp.Or(p.MaxSegment, DefaultMaxSegment)
	var sum int64
	for k, s := range p.Segments {
		if s < 0 || s > maxSeg {
			return fmt.Errorf("memplan: segment %d has size %d, outside [0, %d]", k, s, maxSeg)
		}
		sum += s
	}
	if sum != p.ArenaBytes {
		return fmt.Errorf("memplan: segments total %d bytes but the arena is %d", sum, p.ArenaBytes)
	}
	names := make(map[string]bool, len(p.Buffers))
	var order []int
	for i, b := range p.Buffers {
		switch {
		case names[b.Name]:
			return fmt.Errorf("memplan: two buffers are named %q", b.Name)
		case b.Bytes < 0 || b.Start < 0 || b.End < b.Start || (p.Kernels > 0 && b.End >= p.Kernels):
			return fmt.Errorf("memplan: buffer %q has size %d and lifetime [%d, %d]", b.Name, b.Bytes, b.Start, b.End)
		case b.Offset%align != 0:
			return fmt.Errorf("memplan: buffer %q at offset %d is not aligned to %d", b.Name, b.Offset, align)
		case b.Segment < 0 || b.Segment >= len(p.Segments) || b.Offset < 0 || b.Offset > p.Segments[b.Segment] ||
			b.Bytes > p.Segments[b.Segment]-b.Offset:
			return fmt.Errorf("memplan: buffer %q [%d, %d) is outside its segment %d", b.Name, b.Offset, b.Offset+b.Bytes, b.Segment)
		}
		names[b.Name] = true
		if b.Bytes > 0 {
			order = append(order, i)
		}
	}
	// Sweep over kernels, keeping the live buffers sorted by address.
	// Buffers live together may not overlap (bar in-place pairs, which share
	// an offset), so a new buffer need only be compared with those at the
	// nearest lower address and those that start below its end.
	type at struct {
		seg    int
		lo, hi int64
	}
	key := func(i int) at { b := &p.Buffers[i]; return at{b.Segment, b.Offset, b.Offset + b.Bytes} }
	less := func(a, b at) int { return cmp.Or(cmp.Compare(a.seg, b.seg), cmp.Compare(a.lo, b.lo)) }
	byEnd := slices.Clone(order)
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(cmp.Compare(p.Buffers[i].Start, p.Buffers[j].Start), cmp.Compare(i, j))
	})
	slices.SortFunc(byEnd, func(i, j int) int { return cmp.Or(cmp.Compare(p.Buffers[i].End, p.Buffers[j].End), cmp.Compare(i, j)) })
	// The live buffers in address order, the later inserted first among
	// equal addresses (as inserting each before its equals would leave them).
	inserted := make([]int, len(p.Buffers))
	for n, i := range order {
		inserted[i] = n
	}
	live := newMemLive(slices.Clone(order), func(i, j int) int {
		return cmp.Or(less(key(i), key(j)), cmp.Compare(inserted[j], inserted[i]))
	})
	find := func(k at) int {
		r, _ := slices.BinarySearchFunc(live.byRank, k, func(i int, k at) int { return less(key(i), k) })
		return live.before(r)
	}
	next := 0
	for _, i := range order {
		b := &p.Buffers[i]
		for ; next < len(byEnd) && p.Buffers[byEnd[next]].End < b.Start; next++ {
			live.remove(byEnd[next])
		}
		k := key(i)
		n := find(k)
		clash := func(j int) error {
			a := &p.Buffers[j]
			if memInPlacePair(a, b) || memInPlacePair(b, a) {
				return nil
			}
			return fmt.Errorf("memplan: buffers overlap: %s and %s", a.where(), b.where())
		}
		for j := n; j < live.n && key(live.at(j)).seg == k.seg && key(live.at(j)).lo < k.hi; j++ {
			if err := clash(live.at(j)); err != nil {
				return err
			}
		}
		for j := n - 1; j >= 0 && key(live.at(j)).lo == key(live.at(n-1)).lo; j-- {
			if a := key(live.at(j)); a.seg == k.seg && a.hi > k.lo {
				if err := clash(live.at(j)); err != nil {
					return err
				}
			}
		}
		live.insert(i)
	}
	return nil
}

// memLive is an ordered set of buffers whose order is known beforehand: a
// Fenwick tree of presence over their ranks, so inserting, removing and
// finding the n-th member cost log time, where a sorted slice of the live
// buffers costs their number (thousands on a deep model, at every kernel).
type memLive struct {
	byRank []int // the buffers in order
	rank   map[int]int
	tree   []int // Fenwick tree of presence, 1-based
	n      int   // members
}

func newMemLive(bufs []int, order func(i, j int) int) *memLive {
	slices.SortFunc(bufs, order)
	l := &memLive{byRank: bufs, rank: make(map[int]int, len(bufs)), tree: make([]int, len(bufs)+1)}
	for r, i := range bufs {
		l.rank[i] = r
	}
	return l
}

func (l *memLive) add(r, d int) {
	l.n += d
	for r++; r < len(l.tree); r += r & -r {
		l.tree[r] += d
	}
}

func (l *memLive) insert(i int) { l.add(l.rank[i], 1) }
func (l *memLive) remove(i int) { l.add(l.rank[i], -1) }

// before is how many members rank below r.
func (l *memLive) before(r int) int {
	c := 0
	for ; r > 0; r -= r & -r {
		c += l.tree[r]
	}
	return c
}

// at is the member at position m (0-based) in order.
func (l *memLive) at(m int) int {
	r := 0
	for step := 1 << bits.Len(uint(len(l.tree))); step > 0; step >>= 1 {
		if r+step < len(l.tree) && l.tree[r+step] <= m {
			r += step
			m -= l.tree[r]
		}
	}
	return l.byRank[r]
}

// memInPlacePair says whether b overwrites a in place, the one overlap allowed.
func memInPlacePair(a, b *Placed) bool {
	return b.InPlace == a.Name && a.End == b.Start && a.Segment == b.Segment && a.Offset == b.Offset
}

func (b *Placed) where() string {
	return fmt.Sprintf("%q kernels [%d, %d] segment %d bytes [%d, %d)", b.Name, b.Start, b.End, b.Segment, b.Offset, b.Offset+b.Bytes)
}

// memIndex finds the address spans occupied during a range of kernels. It
// is a segment tree over kernels, memFanout children a node, whose nodes
// hold unions of address spans (sorted, disjoint): cover[v] for blocks whose
// lifetime covers node v's kernels (and not its parent's), all[v] for every
// block that touches v's kernels and is stored at v or below. A block's
// lifetime splits into O(log kernels) nodes, and a query merges O(log
// kernels) unions. Unions stay short because neighbouring blocks touch and
// merge, so the cost does not grow with the number of blocks live at once.
type memIndex struct {
	width      int32       // kernels under the root, a power of memFanout
	cover, all [][]memSpan // by node; the root is 0, v's children memFanout*v+1...
	u, tmp     []memSpan   // the union being built, and scratch
}

type memSpan struct{ lo, hi int64 }

// memFanout trades the depth of the tree (unions merged by a short query)
// against the nodes a long lifetime splits into.
const memFanout = 4

func newMemIndex(kernels int) *memIndex {
	w, nodes := int32(1), 1
	for int(w) < kernels {
		w *= memFanout
		nodes = nodes*memFanout + 1
	}
	return &memIndex{width: w, cover: make([][]memSpan, nodes), all: make([][]memSpan, nodes)}
}

// add records that addresses sp are taken during kernels [s, e].
func (x *memIndex) add(s, e int32, sp memSpan) { x.addAt(0, 0, x.width, s, e, sp) }

// addAt adds sp at node v, which holds kernels [lo, lo+w).
func (x *memIndex) addAt(v, lo, w, s, e int32, sp memSpan) {
	x.all[v] = memUnionAdd(x.all[v], sp)
	if s <= lo && lo+w-1 <= e {
		x.cover[v] = memUnionAdd(x.cover[v], sp)
		return
	}
	w /= memFanout
	for c := max(0, (s-lo)/w); c < memFanout && lo+c*w <= e; c++ {
		x.addAt(memFanout*v+1+c, lo+c*w, w, s, e, sp)
	}
}

// occupied returns the union of the address spans taken at some kernel in
// [s, e], sorted and disjoint. It is valid until the next call.
func (x *memIndex) occupied(s, e int32) []memSpan {
	x.u = x.u[:0]
	x.query(0, 0, x.width, s, e)
	return x.u
}

func (x *memIndex) query(v, lo, w, s, e int32) {
	if s <= lo && lo+w-1 <= e {
		x.merge(x.all[v])
		return
	}
	x.merge(x.cover[v])
	w /= memFanout
	for c := max(0, (s-lo)/w); c < memFanout && lo+c*w <= e; c++ {
		x.query(memFanout*v+1+c, lo+c*w, w, s, e)
	}
}

// merge adds spans to the union x.u: one by one when they are few, else in
// one pass over both.
func (x *memIndex) merge(spans []memSpan) {
	switch {
	case len(spans) == 0:
	case len(x.u) == 0:
		x.u = append(x.u, spans...)
	case len(spans) <= 4:
		for _, sp := range spans {
			x.u = memUnionAdd(x.u, sp)
		}
	default:
		out, u := x.tmp[:0], x.u
		i := 0
		for _, sp := range spans {
			for ; i < len(u) && u[i].lo <= sp.lo; i++ {
				out = memPushSpan(out, u[i])
			}
			out = memPushSpan(out, sp)
		}
		for ; i < len(u); i++ {
			out = memPushSpan(out, u[i])
		}
		x.u, x.tmp = out, u[:0]
	}
}

// memPushSpan appends sp to spans sorted by lo, merging overlapping or touching spans.
func memPushSpan(out []memSpan, sp memSpan) []memSpan {
	if n := len(out); n > 0 && sp.lo <= out[n-1].hi {
		out[n-1].hi = max(out[n-1].hi, sp.hi)
		return out
	}
	return append(out, sp)
}

// memUnionAdd adds sp to the sorted disjoint spans u, merging what it
// overlaps or touches.
func memUnionAdd(u []memSpan, sp memSpan) []memSpan {
	// i: the first span that ends at or after sp starts; j: the first that
	// starts after sp ends. Spans i..j-1 merge with sp.
	i, n := 0, len(u)
	for i < n {
		if m := int(uint(i+n) >> 1); u[m].hi < sp.lo {
			i = m + 1
		} else {
			n = m
		}
	}
	j := i
	for j < len(u) && u[j].lo <= sp.hi {
		j++
	}
	if i == j {
		return slices.Insert(u, i, sp)
	}
	sp.lo, sp.hi = min(sp.lo, u[i].lo), max(sp.hi, u[j-1].hi)
	u[i] = sp
	return slices.Delete(u, i+1, j)
}

// MemStep is one kernel of a schedule, as Lifetimes sees it.
type MemStep struct {
	Name          string
	Reads, Writes []string
	// InPlace maps a buffer this kernel writes to one it reads and may
	// overwrite (an elementwise kernel). Lifetimes passes the hint on when
	// this kernel is the read buffer's last use and the written one's first.
	InPlace map[string]string
}

// BufferInfo describes a buffer that steps name.
type BufferInfo struct {
	Bytes      int64
	Role       ir.Role
	Persistent bool // lives for the whole step
	Output     bool // read by the host after the step: lives to the last kernel
}

// Lifetimes turns a kernel schedule into buffers for PlanMemory. A buffer
// lives from the first step that touches it to the last; one whose first
// use is a read holds a value from before the step (an input), so it lives
// from kernel 0. Buffers are returned in order of first use, then the
// persistent buffers no step touches, by name; other untouched buffers need
// no memory and are left out.
func Lifetimes(steps []MemStep, info map[string]BufferInfo) ([]Buffer, error) {
	index := map[string]int{}
	var bufs []Buffer
	touch := func(k int, name, verb string, read bool) error {
		in, ok := info[name]
		if !ok {
			return fmt.Errorf("memplan: step %d (%s) %s %q, which has no BufferInfo", k, steps[k].Name, verb, name)
		}
		i, seen := index[name]
		if !seen {
			i = len(bufs)
			index[name] = i
			bufs = append(bufs, Buffer{Name: name, Bytes: in.Bytes, Role: in.Role, Start: k, Persistent: in.Persistent})
			if read {
				bufs[i].Start = 0
			}
		}
		bufs[i].End = k
		return nil
	}
	for k, st := range steps {
		for _, n := range st.Reads {
			if err := touch(k, n, "reads", true); err != nil {
				return nil, err
			}
		}
		for _, n := range st.Writes {
			if err := touch(k, n, "writes", false); err != nil {
				return nil, err
			}
		}
	}
	var idle []string
	for name, in := range info {
		if _, ok := index[name]; !ok && in.Persistent {
			idle = append(idle, name)
		}
	}
	slices.Sort(idle)
	for _, name := range idle {
		in := info[name]
		bufs = append(bufs, Buffer{Name: name, Bytes: in.Bytes, Role: in.Role, Persistent: true})
	}
	last := max(len(steps)-1, 0)
	for i := range bufs {
		b := &bufs[i]
		if in := info[b.Name]; in.Persistent || in.Output {
			b.End = last
		}
		if b.Persistent {
			b.Start = 0
		}
	}
	for k, st := range steps {
		for out, in := range st.InPlace {
			if !slices.Contains(st.Writes, out) || !slices.Contains(st.Reads, in) {
				return nil, fmt.Errorf("memplan: step %d (%s) writes %q in place over %q, but does not write the one or read the other",
					k, st.Name, out, in)
			}
			o, i := &bufs[index[out]], &bufs[index[in]]
			if o.Start == k && i.End == k && !i.Persistent && !info[in].Output {
				o.InPlace = in
			}
		}
	}
	return bufs, nil
}
