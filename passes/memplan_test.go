package passes

import (
	"cmp"
	"errors"
	"fmt"
	"github.com/scm-magellano/magc/ir"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// memPlanOK plans bufs and fails the test on any error.
func memPlanOK(t *testing.T, bufs []Buffer, kernels int, opt MemOptions) *MemPlan {
	t.Helper()
	p, err := PlanMemory(bufs, kernels, opt)
	if err != nil {
		t.Fatalf("PlanMemory: %v", err)
	}
	if err := p.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return p
}

func memByName(p *MemPlan, name string) *Placed {
	for i := range p.Buffers {
		if p.Buffers[i].Name == name {
			return &p.Buffers[i]
		}
	}
	panic("no buffer " + name)
}

func TestPlanMemoryKnownOptimum(t *testing.T) {
	cases := []struct {
		name    string
		bufs    []Buffer
		kernels int
		arena   int64
	}{
		{"disjoint lifetimes share", []Buffer{
			{Name: "a", Bytes: 1024, Start: 0, End: 1},
			{Name: "b", Bytes: 1024, Start: 2, End: 3},
		}, 4, 1024},
		{"three live at once", []Buffer{
			{Name: "a", Bytes: 256, Start: 0, End: 2},
			{Name: "b", Bytes: 512, Start: 1, End: 3},
			{Name: "c", Bytes: 768, Start: 2, End: 4},
		}, 5, 1536},
		// a and c never meet, so c can reuse a's bytes: max(a+b, b+c).
		{"chain of three", []Buffer{
			{Name: "a", Bytes: 512, Start: 0, End: 1},
			{Name: "b", Bytes: 256, Start: 1, End: 2},
			{Name: "c", Bytes: 512, Start: 2, End: 3},
		}, 4, 768},
		// The small late buffers fit in the gap the big early one leaves.
		{"gap reuse", []Buffer{
			{Name: "w", Bytes: 256, Persistent: true},
			{Name: "big", Bytes: 2048, Start: 0, End: 2},
			{Name: "s1", Bytes: 1024, Start: 3, End: 4},
			{Name: "s2", Bytes: 1024, Start: 4, End: 5},
			{Name: "s3", Bytes: 512, Start: 5, End: 5},
		}, 6, 2304},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := memPlanOK(t, c.bufs, c.kernels, MemOptions{})
			if p.ArenaBytes != c.arena || p.LowerBound != c.arena {
				t.Errorf("arena %d, lower bound %d; want both %d\n%s", p.ArenaBytes, p.LowerBound, c.arena, p)
			}
		})
	}
	p := memPlanOK(t, []Buffer{{Name: "a", Bytes: 1024, Start: 0, End: 1}, {Name: "b", Bytes: 1024, Start: 2, End: 3}}, 4, MemOptions{})
	if a, b := p.Buffers[0], p.Buffers[1]; a.Offset != b.Offset || a.Segment != b.Segment {
		t.Errorf("disjoint buffers at %d/%d and %d/%d, want one offset", a.Segment, a.Offset, b.Segment, b.Offset)
	}
}

func TestPlanMemoryAlignment(t *testing.T) {
	bufs := []Buffer{
		{Name: "a", Bytes: 1, Start: 0, End: 2},
		{Name: "b", Bytes: 300, Start: 0, End: 2},
		{Name: "c", Bytes: 257, Start: 1, End: 2},
		{Name: "d", Bytes: 0, Start: 1, End: 1},
	}
	for _, align := range []int64{256, 4096} {
		p := memPlanOK(t, bufs, 3, MemOptions{Align: align})
		for _, b := range p.Buffers {
			if b.Offset%align != 0 {
				t.Errorf("align %d: %s at offset %d", align, b.Name, b.Offset)
			}
		}
		want := align * 3 // each rounds up to one unit...
		if align == 256 {
			want = 256 + 512 + 512 // ...except 300 and 257, two units of 256
		}
		if p.ArenaBytes != want || p.LowerBound != want {
			t.Errorf("align %d: arena %d, lower bound %d, want %d", align, p.ArenaBytes, p.LowerBound, want)
		}
	}
}

func TestPlanMemorySegments(t *testing.T) {
	// 1,792 bytes live at kernel 1 cannot fit one 1,024-byte segment; the
	// second 512 would straddle the boundary, so it goes to segment 1.
	bufs := []Buffer{
		{Name: "a", Bytes: 768, Start: 0, End: 2},
		{Name: "b", Bytes: 512, Start: 1, End: 2},
		{Name: "c", Bytes: 512, Start: 1, End: 3},
	}
	opt := MemOptions{MaxSegment: 1024}
	p := memPlanOK(t, bufs, 4, opt)
	if len(p.Segments) != 2 {
		t.Fatalf("segments %v, want 2", p.Segments)
	}
	for _, b := range p.Buffers {
		if b.Offset+b.Bytes > p.Segments[b.Segment] || p.Segments[b.Segment] > opt.MaxSegment {
			t.Errorf("%s [%d, %d) straddles segment %d of %d bytes", b.Name, b.Offset, b.Offset+b.Bytes, b.Segment, p.Segments[b.Segment])
		}
	}
	if p.ArenaBytes != 1792 {
		t.Errorf("arena %d, want 1792 (%v)", p.ArenaBytes, p.Segments)
	}
	// Persistent buffers are packed at the bottom of the segments too.
	p = memPlanOK(t, []Buffer{
		{Name: "w1", Bytes: 768, Persistent: true},
		{Name: "w2", Bytes: 768, Persistent: true},
		{Name: "x", Bytes: 256, Start: 0, End: 0},
	}, 1, opt)
	if len(p.Segments) != 2 || p.ArenaBytes != 1792 {
		t.Errorf("segments %v, want two totalling 1792", p.Segments)
	}
	// A buffer that runs past its segment is refused.
	p.Buffers[2].Offset = p.Segments[p.Buffers[2].Segment]
	if err := p.Verify(); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("Verify of a straddling buffer: %v", err)
	}
}

func TestPlanMemoryBadInput(t *testing.T) {
	ok := Buffer{Name: "ok", Bytes: 256, Start: 0, End: 1}
	cases := []struct {
		name    string
		bufs    []Buffer
		kernels int
		opt     MemOptions
		want    string
	}{
		{"larger than a segment", []Buffer{ok, {Name: "huge", Bytes: 2048, Start: 0, End: 0}}, 2, MemOptions{MaxSegment: 1024}, `"huge"`},
		{"negative size", []Buffer{{Name: "neg", Bytes: -1, Start: 0, End: 0}}, 2, MemOptions{}, `"neg" has negative size`},
		{"end before start", []Buffer{{Name: "rev", Bytes: 1, Start: 1, End: 0}}, 2, MemOptions{}, `"rev" has lifetime [1, 0]`},
		{"past the last kernel", []Buffer{{Name: "late", Bytes: 1, Start: 0, End: 2}}, 2, MemOptions{}, `"late"`},
		{"negative start", []Buffer{{Name: "early", Bytes: 1, Start: -1, End: 0}}, 2, MemOptions{}, `"early"`},
		{"unknown in-place", []Buffer{ok, {Name: "x", Bytes: 1, Start: 1, End: 1, InPlace: "ghost"}}, 2, MemOptions{}, `"ghost", which is not a buffer`},
		{"duplicate name", []Buffer{ok, ok}, 2, MemOptions{}, `two buffers are named "ok"`},
		{"no name", []Buffer{{Bytes: 1}}, 2, MemOptions{}, "has no name"},
		{"no kernels", []Buffer{ok}, 0, MemOptions{}, "0 kernels"},
		{"bad alignment", []Buffer{ok}, 2, MemOptions{Align: 100}, "not a power of two"},
		{"negative budget", []Buffer{ok}, 2, MemOptions{Budget: -1}, "negative budget"},
		{"segment below alignment", []Buffer{ok}, 2, MemOptions{MaxSegment: 128}, "smaller than the alignment"},
		{"overflow", []Buffer{{Name: "a", Bytes: math.MaxInt64 / 2, Start: 0, End: 0}, {Name: "b", Bytes: math.MaxInt64 / 2, Start: 0, End: 0}},
			1, MemOptions{MaxSegment: math.MaxInt64}, "2^61"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := PlanMemory(c.bufs, c.kernels, c.opt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if p != nil {
				t.Errorf("got a plan with error %v", err)
			}
		})
	}
}

func TestPlanMemoryEmpty(t *testing.T) {
	p := memPlanOK(t, nil, 0, DefaultMemOptions())
	if p.ArenaBytes != 0 || len(p.Segments) != 0 {
		t.Errorf("empty plan: %v", p)
	}
}

func TestPlanMemoryInPlace(t *testing.T) {
	// b overwrites a at kernel 2; without the hint a and b would both need
	// their bytes at kernel 2 (arena 2,560).
	bufs := []Buffer{
		{Name: "a", Bytes: 1024, Start: 0, End: 2},
		{Name: "b", Bytes: 1024, Start: 2, End: 4, InPlace: "a"},
		{Name: "c", Bytes: 512, Start: 0, End: 4},
	}
	p := memPlanOK(t, bufs, 5, MemOptions{})
	a, b := memByName(p, "a"), memByName(p, "b")
	if a.Offset != b.Offset || a.Segment != b.Segment {
		t.Errorf("b at %d/%d, a at %d/%d: want b in place over a", b.Segment, b.Offset, a.Segment, a.Offset)
	}
	if p.ArenaBytes != 1536 || p.LowerBound != 1536 {
		t.Errorf("arena %d, lower bound %d, want 1536", p.ArenaBytes, p.LowerBound)
	}
	// The same overlap without the hint is refused.
	p.Buffers[1].InPlace = ""
	if err := p.Verify(); err == nil || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("Verify without the in-place hint: %v", err)
	}
	// ...and so is a hint whose lifetimes do not meet end to start.
	p.Buffers[1].InPlace, p.Buffers[1].Start = "a", 1
	if err := p.Verify(); err == nil {
		t.Error("Verify accepted an in-place pair live together for two kernels")
	}

	// Hints that are not safe are ignored; the plans stay valid.
	for name, bufs := range map[string][]Buffer{
		"lifetimes do not meet": {
			{Name: "a", Bytes: 1024, Start: 0, End: 2},
			{Name: "b", Bytes: 1024, Start: 1, End: 4, InPlace: "a"},
		},
		"two take one": {
			{Name: "a", Bytes: 1024, Start: 0, End: 2},
			{Name: "b", Bytes: 1024, Start: 2, End: 4, InPlace: "a"},
			{Name: "c", Bytes: 1024, Start: 2, End: 3, InPlace: "a"},
		},
		"one-kernel middle": { // a, b and c are all live at kernel 2
			{Name: "a", Bytes: 1024, Start: 0, End: 2},
			{Name: "b", Bytes: 1024, Start: 2, End: 2, InPlace: "a"},
			{Name: "c", Bytes: 1024, Start: 2, End: 4, InPlace: "b"},
		},
		"cycle": {
			{Name: "a", Bytes: 1024, Start: 2, End: 2, InPlace: "b"},
			{Name: "b", Bytes: 1024, Start: 2, End: 2, InPlace: "a"},
		},
		"self": {{Name: "a", Bytes: 1024, Start: 0, End: 0, InPlace: "a"}},
		"chain": {
			{Name: "a", Bytes: 512, Start: 0, End: 1},
			{Name: "b", Bytes: 1024, Start: 1, End: 3, InPlace: "a"},
			{Name: "c", Bytes: 256, Start: 3, End: 4, InPlace: "b"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := memPlanOK(t, bufs, 5, MemOptions{})
			if name == "chain" && (p.ArenaBytes != 1024 || p.Buffers[2].Offset != p.Buffers[0].Offset) {
				t.Errorf("chain: arena %d, offsets %d %d %d", p.ArenaBytes, p.Buffers[0].Offset, p.Buffers[1].Offset, p.Buffers[2].Offset)
			}
		})
	}
}

// memPlanned is a valid plan of a small train step, for tests that break it.
func memPlanned(t *testing.T) *MemPlan {
	bufs, kernels := memTrainStep(rand.New(rand.NewPCG(7, 7)), 3, 1)
	return memPlanOK(t, bufs, kernels, MemOptions{})
}

func TestVerifyCatchesOverlap(t *testing.T) {
	// Move a buffer x onto a buffer y live at the same time (no in-place
	// partner of x), at y's offset or one alignment unit above it, inside y.
	for _, shift := range []int64{0, DefaultMemAlign} {
		p := memPlanned(t)
		x, y := memOverlapPair(p, shift)
		if x == nil {
			t.Fatal("found no pair to overlap")
		}
		x.Segment, x.Offset = y.Segment, y.Offset+shift
		err := p.Verify()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", x.Name)) || !strings.Contains(err.Error(), fmt.Sprintf("%q", y.Name)) {
			t.Fatalf("Verify with %s moved onto %s+%d: %v", x.Name, y.Name, shift, err)
		}
		t.Log(err)
	}
}

// Verify finds an overlap exactly when comparing the moved buffer with
// every other does, on a valid plan with one buffer moved to another's
// offset or near it.
func TestVerifyMatchesPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	valid := memPlanned(t)
	clashes := 0
	for range 500 {
		p := *valid
		p.Buffers = slices.Clone(valid.Buffers)
		x, y := &p.Buffers[rng.IntN(len(p.Buffers))], &p.Buffers[rng.IntN(len(p.Buffers))]
		x.Segment, x.Offset = y.Segment, max(0, y.Offset+DefaultMemAlign*int64(rng.IntN(5)-2))
		if x.Offset+x.Bytes > p.Segments[x.Segment] {
			continue // outside the segment: another check's error
		}
		clash := false
		for i := range p.Buffers {
			a := &p.Buffers[i]
			if a != x && a.Bytes > 0 && x.Bytes > 0 && a.Segment == x.Segment && a.Offset < x.Offset+x.Bytes && x.Offset < a.Offset+a.Bytes &&
				a.Start <= x.End && x.Start <= a.End && !memInPlacePair(a, x) && !memInPlacePair(x, a) {
				clash = true
			}
		}
		if err := p.Verify(); (err != nil) != clash {
			t.Fatalf("%s moved to %s: Verify says %v, the pairs say overlap %v", x.where(), y.where(), err, clash)
		}
		if clash {
			clashes++
		}
	}
	if clashes < 10 || clashes > 490 {
		t.Fatalf("%d of 500 moves overlap: the test exercises too little", clashes)
	}
}

func memOverlapPair(p *MemPlan, shift int64) (x, y *Placed) {
	for i := range p.Buffers {
		for j := range p.Buffers {
			x, y := &p.Buffers[i], &p.Buffers[j]
			// y starts first, so the sweep meets x with y already live, below it.
			if i != j && x.Bytes > 0 && x.Bytes+shift <= y.Bytes && y.Start < x.Start && x.Start <= y.End &&
				x.InPlace != y.Name && y.InPlace != x.Name && (x.Segment != y.Segment || x.Offset != y.Offset+shift) {
				return x, y
			}
		}
	}
	return nil, nil
}

func TestVerifyCatchesMisalignment(t *testing.T) {
	p := memPlanned(t)
	b := &p.Buffers[len(p.Buffers)/2]
	b.Offset += 64
	err := p.Verify()
	if err == nil || !strings.Contains(err.Error(), "not aligned") || !strings.Contains(err.Error(), fmt.Sprintf("%q", b.Name)) {
		t.Fatalf("Verify of a misaligned %s: %v", b.Name, err)
	}
	p = memPlanned(t)
	p.Segments[0] = p.MaxSegment + 256
	p.ArenaBytes = memSum(p.Segments)
	if err := p.Verify(); err == nil || !strings.Contains(err.Error(), "segment 0") {
		t.Fatalf("Verify of a segment larger than MaxSegment: %v", err)
	}
}

func TestPlanMemoryBudget(t *testing.T) {
	// Twelve buffers live at kernel 5, the peak; "early" ends before it.
	var bufs []Buffer
	for i := range 12 {
		bufs = append(bufs, Buffer{Name: fmt.Sprintf("act%02d", i), Bytes: int64(i+1) * 100e6, Role: ir.Activation, Start: 3, End: 6})
	}
	bufs = append(bufs, Buffer{Name: "early", Bytes: 5e9, Role: ir.Activation, Start: 0, End: 2})
	names := []string{"embed", "k1", "k2", "fused_matmul_3", "k4", "k5", "k6", "k7"}
	p, err := PlanMemory(bufs, 8, MemOptions{Budget: 2e9, KernelNames: names})
	var be *BudgetError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a *BudgetError", err)
	}
	if p == nil || p.ArenaBytes != be.Arena {
		t.Fatalf("plan %v with the budget error, want it returned", p)
	}
	if be.PeakKernel != 3 || be.LiveCount != 12 || len(be.Live) != 10 {
		t.Errorf("peak kernel %d, %d live, %d listed", be.PeakKernel, be.LiveCount, len(be.Live))
	}
	msg := err.Error()
	t.Log(msg)
	for i := 2; i < 12; i++ {
		if name := fmt.Sprintf("act%02d", i); !strings.Contains(msg, name) || be.Live[11-i].Name != name {
			t.Errorf("the largest live buffers should list %s at %d", name, 11-i)
		}
	}
	for _, want := range []string{"act00", "act01", "early"} {
		if strings.Contains(msg, want) {
			t.Errorf("message lists %s, which is not among the ten largest live at the peak", want)
		}
	}
	for _, want := range []string{"7.80 GB", "7.26 GiB", "2.00 GB", "1.86 GiB", "1200.0 MB  activation", "no placement can fit",
		"kernel 3 (fused_matmul_3)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q", want)
		}
	}
	// A lower bound under the budget means a better placement could fit.
	be.LowerBound = 1e9
	if msg := be.Error(); strings.Contains(msg, "no placement can fit") || !strings.Contains(msg, "lower bound fits") {
		t.Errorf("lower bound under the budget, yet: %s", msg)
	}
	// Under the budget, no error.
	if _, err := PlanMemory(bufs, 8, MemOptions{Budget: 8e9}); err != nil {
		t.Errorf("within budget: %v", err)
	}
}

// memRandom is a random workload: some buffers persistent, some with
// in-place hints (valid or not), sizes from zero up.
func memRandom(rng *rand.Rand) ([]Buffer, int) {
	kernels := 1 + rng.IntN(40)
	bufs := make([]Buffer, rng.IntN(60))
	for i := range bufs {
		b := &bufs[i]
		b.Name = fmt.Sprint("b", i)
		b.Bytes = rng.Int64N(5000)
		if rng.IntN(10) == 0 {
			b.Bytes = 0
		}
		b.Start = rng.IntN(kernels)
		b.End = b.Start + rng.IntN(min(kernels-b.Start, 1+rng.IntN(10)))
		b.Persistent = rng.IntN(12) == 0
		if i > 0 && rng.IntN(4) == 0 {
			a := &bufs[rng.IntN(i)]
			b.InPlace = a.Name
			if rng.IntN(3) > 0 && !a.Persistent { // make it one that meets
				b.Start = a.End
				b.End = max(b.End, b.Start)
			}
		}
	}
	return bufs, kernels
}

func TestPlanMemoryRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for n := range 2000 {
		bufs, kernels := memRandom(rng)
		opt := MemOptions{}
		if n%2 == 0 {
			opt.MaxSegment = 8192 // several segments
		}
		p, err := PlanMemory(bufs, kernels, opt)
		if err != nil {
			t.Fatalf("workload %d: %v", n, err)
		}
		if err := p.Verify(); err != nil {
			t.Fatalf("workload %d: %v", n, err)
		}
		if p.ArenaBytes < p.LowerBound {
			t.Fatalf("workload %d: arena %d under the lower bound %d", n, p.ArenaBytes, p.LowerBound)
		}
		pr, err := newMemProblem(bufs, kernels, opt)
		if err != nil {
			t.Fatal(err)
		}
		best := int64(math.MaxInt64)
		for _, o := range memOrders {
			r := pr.place(o)
			best = min(best, r.arena)
			if o.byStart { // the sweep must agree with the index
				order := slices.Clone(pr.rest)
				slices.SortFunc(order, func(a, b int32) int { return cmp.Or(o.less(&pr.blocks[a], &pr.blocks[b]), cmp.Compare(a, b)) })
				addr := slices.Clone(r.addr)
				pr.placeIndexed(order, addr)
				if !slices.Equal(addr, r.addr) {
					t.Fatalf("workload %d: placeSweep and placeIndexed differ for order %s", n, o.name)
				}
			}
		}
		if p.ArenaBytes != best {
			t.Fatalf("workload %d: arena %d from order %s, but the best order gives %d", n, p.ArenaBytes, p.Order, best)
		}
	}
}

func TestPlanMemoryDeterministic(t *testing.T) {
	bufs, kernels := memTrainStep(rand.New(rand.NewPCG(3, 4)), 4, 1)
	a := memPlanOK(t, bufs, kernels, MemOptions{})
	b := memPlanOK(t, bufs, kernels, MemOptions{})
	if !reflect.DeepEqual(a, b) {
		t.Error("two plans of one workload differ")
	}
}

func TestPlanMemoryTrainStep(t *testing.T) {
	bufs, kernels := memTrainStep(rand.New(rand.NewPCG(1, 2)), 40, 1)
	p := memPlanOK(t, bufs, kernels, DefaultMemOptions())
	t.Log(p)
	if p.Ratio() > 1.02 {
		t.Errorf("arena %.2f%% over the lower bound, want within 2%%", 100*(p.Ratio()-1))
	}
	if len(p.Segments) < 2 {
		t.Errorf("%v: a 10 GB step should need two 8 GiB segments", p.Segments)
	}
}

// Past memIndexedMax blocks only the sweep's orders are tried; under it
// the size order still is.
func TestPlanMemoryManyBlocks(t *testing.T) {
	bufs, kernels := memTrainStep(rand.New(rand.NewPCG(1, 2)), 250, 1)
	if len(bufs) <= memIndexedMax {
		t.Fatalf("%d buffers: the workload does not pass memIndexedMax", len(bufs))
	}
	opt := MemOptions{MaxSegment: 1 << 40}
	if p := memPlanOK(t, bufs, kernels, opt); p.Order != "start" {
		t.Errorf("%d blocks placed in %s order, want start", len(bufs), p.Order)
	}
	bufs, kernels = memTrainStep(rand.New(rand.NewPCG(1, 2)), 2, 1)
	if p := memPlanOK(t, bufs, kernels, opt); p.Order != "size" {
		t.Errorf("%d blocks placed in %s order, want size (it wins on this workload)", len(bufs), p.Order)
	}
}

func TestLifetimes(t *testing.T) {
	info := map[string]BufferInfo{
		"w":      {Bytes: 4096, Role: ir.Frozen, Persistent: true},
		"idle":   {Bytes: 512, Role: ir.Frozen, Persistent: true},
		"unused": {Bytes: 512, Role: ir.Activation},
		"tokens": {Bytes: 256, Role: ir.HostInput},
		"h":      {Bytes: 1024, Role: ir.Activation},
		"g":      {Bytes: 1024, Role: ir.Activation},
		"y":      {Bytes: 1024, Role: ir.Activation},
		"loss":   {Bytes: 4, Role: ir.Activation, Output: true},
	}
	steps := []MemStep{
		{Name: "embed", Reads: []string{"w"}, Writes: []string{"h"}},
		{Name: "gelu", Reads: []string{"h"}, Writes: []string{"g"}, InPlace: map[string]string{"g": "h"}},
		{Name: "mul", Reads: []string{"g", "tokens"}, Writes: []string{"y"}, InPlace: map[string]string{"y": "tokens"}},
		{Name: "loss", Reads: []string{"y", "g"}, Writes: []string{"loss"}},
		{Name: "opt", Reads: []string{"w"}, Writes: []string{"w"}},
	}
	bufs, err := Lifetimes(steps, info)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Buffer{}
	var order []string
	for _, b := range bufs {
		got[b.Name] = b
		order = append(order, b.Name)
	}
	if want := []string{"w", "h", "g", "tokens", "y", "loss", "idle"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	for name, want := range map[string][2]int{"w": {0, 4}, "idle": {0, 4}, "h": {0, 1}, "g": {1, 3}, "tokens": {0, 2}, "y": {2, 3}, "loss": {3, 4}} {
		if b := got[name]; b.Start != want[0] || b.End != want[1] {
			t.Errorf("%s lives [%d, %d], want %v", name, b.Start, b.End, want)
		}
	}
	if got["g"].InPlace != "h" || got["y"].InPlace != "tokens" || got["h"].Role != ir.Activation || !got["w"].Persistent {
		t.Errorf("g %+v, y %+v", got["g"], got["y"])
	}
	p := memPlanOK(t, bufs, len(steps), MemOptions{})
	if g, h := memByName(p, "g"), memByName(p, "h"); g.Offset != h.Offset || g.Segment != h.Segment {
		t.Errorf("g not in place over h: %+v %+v", g, h)
	}

	// Hints that do not hold are dropped: g is read again later.
	steps[2].InPlace = map[string]string{"y": "g"}
	if bufs, err = Lifetimes(steps, info); err != nil || bufs[4].InPlace != "" {
		t.Errorf("in place over a buffer read later: %+v, %v", bufs[4], err)
	}
	for _, c := range []struct {
		step MemStep
		want string
	}{
		{MemStep{Name: "k", Reads: []string{"ghost"}}, `step 0 (k) reads "ghost", which has no BufferInfo`},
		{MemStep{Name: "k", Writes: []string{"ghost"}}, `writes "ghost"`},
		{MemStep{Name: "k", Reads: []string{"h"}, Writes: []string{"g"}, InPlace: map[string]string{"g": "y"}}, `over "y"`},
	} {
		if _, err := Lifetimes([]MemStep{c.step}, info); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", err, c.want)
		}
	}
}

const memMB = 1 << 20

// memTrainStep builds a synthetic train step of kernels: persistent weights
// (1,500 totalling 4.5 GB); per layer a forward of 40 kernels saving 30
// activations (1 MB to 300 MB, mostly small) until that layer's backward;
// the loss; the backward in reverse layer order, 80 kernels a layer, with
// short-lived gradients (some overwriting the previous one in place) and
// LoRA gradients that live until the optimizer at the end. scratch is the
// number of short scratch buffers per kernel.
func memTrainStep(rng *rand.Rand, layers, scratch int) ([]Buffer, int) {
	const fwdK, bwdK, acts = 40, 80, 30
	var bufs []Buffer
	add := func(b Buffer) int {
		b.Name = fmt.Sprintf("%s.%d", b.Role, len(bufs))
		bufs = append(bufs, b)
		return len(bufs) - 1
	}
	between := func(lo, hi int64) int64 { // log-uniform
		return int64(float64(lo) * math.Pow(float64(hi)/float64(lo), rng.Float64()))
	}
	actSize := func() int64 { return int64(memMB * math.Pow(300, math.Pow(rng.Float64(), 24))) }
	addScratch := func(at int) {
		for range scratch {
			add(Buffer{Role: ir.Activation, Bytes: between(memMB, 64*memMB), Start: at, End: at + rng.IntN(2)})
		}
	}
	k := 0
	saved := make([][]int, layers)
	for l := range layers {
		for j := range acts {
			saved[l] = append(saved[l], add(Buffer{Role: ir.Activation, Bytes: actSize(), Start: k + j*fwdK/acts}))
		}
		for t := range fwdK {
			addScratch(k + t)
		}
		k += fwdK
	}
	add(Buffer{Role: ir.Activation, Bytes: between(100*memMB, 300*memMB), Start: k, End: k + 10}) // logits
	k += 20
	var lora []int
	for l := layers - 1; l >= 0; l-- {
		for j, i := range saved[l] {
			bufs[i].End = k + (acts-1-j)*bwdK/acts + rng.IntN(3)
		}
		prev := -1
		for t := range bwdK {
			g := Buffer{Role: ir.Gradient, Bytes: actSize(), Start: k + t, End: k + t + 1 + rng.IntN(10)}
			if prev >= 0 && rng.IntN(10) < 3 { // an elementwise kernel overwriting the previous gradient
				bufs[prev].End = k + t
				g.InPlace = bufs[prev].Name
			}
			prev = add(g)
			addScratch(k + t)
		}
		for range 20 {
			lora = append(lora, add(Buffer{Role: ir.Trainable, Bytes: between(64<<10, memMB), Start: k + rng.IntN(bwdK)}))
		}
		k += bwdK
	}
	for _, i := range lora {
		bufs[i].End = k + rng.IntN(50)
	}
	k += 50
	var weights []int
	var total int64
	for range 1500 {
		i := add(Buffer{Role: ir.Frozen, Bytes: between(256<<10, 16*memMB), Persistent: true})
		weights = append(weights, i)
		total += bufs[i].Bytes
	}
	for _, i := range weights { // scale to 4.5 GB
		bufs[i].Bytes = int64(float64(bufs[i].Bytes) * 4.5e9 / float64(total))
	}
	for i := range bufs {
		bufs[i].End = min(bufs[i].End, k-1)
	}
	return bufs, k
}

func BenchmarkPlanMemory(b *testing.B) {
	for _, c := range []struct {
		name    string
		scratch int
	}{{"scratch=1", 1}, {"scratch=3", 3}} {
		b.Run(c.name, func(b *testing.B) {
			bufs, kernels := memTrainStep(rand.New(rand.NewPCG(1, 2)), 40, c.scratch)
			var plan *MemPlan
			for b.Loop() {
				var err error
				if plan, err = PlanMemory(bufs, kernels, MemOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(plan.Ratio(), "arena/lb")
			b.ReportMetric(float64(len(bufs)), "buffers")
			b.ReportMetric(float64(kernels), "kernels")
			b.Log(plan)
		})
	}
}
