package codegen

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// mergeLaunches with its join index picks the same launch for every part as
// trying each earlier launch from the last back, on random launches: buffers
// a few launches share and some nearly all do (the clip scale of AdamW),
// flat parts and three threadgroup sizes, large and small writes, and
// threadgroup arrays that overflow the limit or clash in type.
func TestMergeLaunchesMatchesScan(t *testing.T) {
	for seed := range uint64(6) {
		r := rand.New(rand.NewPCG(seed, 7))
		hot := []*ir.Value{value(1), value(1), value(1)}
		var written []*ir.Value
		var parts []*part
		for range 3000 {
			p := &part{k: &kir.Kernel{Threads: [3]int{[]int{64, 128, 256}[r.IntN(3)], 1, 1}}, flat: r.IntN(3) == 0}
			for range 1 + r.IntN(2) {
				n := 1 + r.IntN(64)
				if r.IntN(8) == 0 {
					n = 1 << 19 // a write over smallBytes keeps the launch in its window
				}
				v := value(n)
				p.d.Writes = append(p.d.Writes, v)
				p.d.Bindings = append(p.d.Bindings, Binding{Value: v})
			}
			for range r.IntN(12) {
				if len(written) > 0 {
					v := written[len(written)-1-r.IntN(min(len(written), 200))]
					p.d.Bindings = append(p.d.Bindings, Binding{Value: v, Offset: int64(r.IntN(2))})
				}
			}
			for _, v := range hot {
				if r.IntN(2) == 0 {
					p.d.Bindings = append(p.d.Bindings, Binding{Value: v})
				}
			}
			for range r.IntN(3) {
				ty := []kir.Type{kir.F32, kir.F16}[r.IntN(2)]
				p.k.Body = append(p.k.Body, kir.Shared{Name: []string{"a", "b", "c"}[r.IntN(3)], Type: ty, Len: r.IntN(5000)})
			}
			written = append(written, p.d.Writes...)
			parts = append(parts, p)
		}
		launches := func() []*launch {
			var ls []*launch
			for _, p := range parts {
				ls = append(ls, &launch{parts: []*part{p}})
			}
			return ls
		}
		got, want := mergeLaunches(launches(), nil), scanMerge(launches())
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d launches, want %d", seed, len(got), len(want))
		}
		joined := 0
		for i := range got {
			if !slices.Equal(got[i].parts, want[i].parts) {
				t.Fatalf("seed %d: launch %d has other parts than the scan's", seed, i)
			}
			joined += len(got[i].parts) - 1
		}
		if joined < len(parts)/4 {
			t.Fatalf("seed %d: only %d of %d parts joined: the test exercises too little", seed, joined, len(parts))
		}
	}
}

func value(n int) *ir.Value { return &ir.Value{Type: ir.T(ir.F32, n)} }

// scanMerge is mergeLaunches trying every launch back from the last, with
// the join test computed from the parts each time.
func scanMerge(ls []*launch) []*launch {
	lastWrite, lastBind := map[*ir.Value]int{}, map[*ir.Value]int{}
	var out []*launch
	for _, l := range ls {
		lo := max(len(out)-horizontalWindow, 0)
		if l.writesSmall() {
			lo = 0
		}
		for _, p := range l.parts {
			for _, b := range p.d.Bindings {
				if k, ok := lastWrite[b.Value]; ok {
					lo = max(lo, k+1)
				}
			}
			for _, v := range p.d.Writes {
				if k, ok := lastBind[v]; ok {
					lo = max(lo, k+1)
				}
			}
		}
		at := -1
		for j := len(out) - 1; j >= lo && at < 0; j-- {
			a := out[j]
			ps := append(slices.Clone(a.parts), l.parts...)
			shared, ok := hoistShared(ps)
			if (a.allFlat() || l.allFlat() || a.threads() == l.threads()) &&
				len(bindingsOf(ps)) <= passes.MaxBuffers && ok && sharedSize(shared) <= sharedLimit {
				at = j
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
				lastBind[b.Value] = max(lastBind[b.Value], at)
			}
			for _, v := range p.d.Writes {
				lastWrite[v] = max(lastWrite[v], at)
			}
		}
	}
	return out
}
