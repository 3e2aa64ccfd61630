package passes

import (
	"testing"

	"github.com/scm-magellano/magc/ir"
)

// TestEveryOpHasACost: the cost model knows the FLOPs of every op of the
// catalogue: from its scalar maths, a rule of its own (never both), or as
// a layout or source op, which computes nothing.
func TestEveryOpHasACost(t *testing.T) {
	for _, d := range ir.Ops() {
		rule := flops[d.Op] != nil
		switch {
		case d.Elem != nil && rule:
			t.Errorf("op %s counts FLOPs both in its entry and in a rule", d.Op)
		case d.Elem != nil && d.Elem.FLOPs <= 0:
			t.Errorf("element-wise op %s has %d FLOPs per element", d.Op, d.Elem.FLOPs)
		case d.Elem == nil && !rule && d.Category != ir.Layout && d.Category != ir.Source:
			t.Errorf("op %s has no FLOPs rule", d.Op)
		}
	}
	for op := range flops {
		if _, ok := ir.Lookup(op); !ok {
			t.Errorf("FLOPs rule for %q, which the catalogue lacks", op)
		}
	}
}

// TestEveryOpHasAKind: every op that anchors a kernel has a kind, and every
// kind is one an op anchors, with a prologue rule and epilogue results the
// anchor has. (codegen's catalogue test checks that each kind has a template.)
func TestEveryOpHasAKind(t *testing.T) {
	anchored := map[string]bool{}
	for _, d := range ir.Ops() {
		if d.Op == ir.OpInput || d.Op == ir.OpParam {
			continue
		}
		k := KindOf(d.Op)
		anchored[k] = true
		kd, ok := Kinds[k]
		if !ok {
			t.Errorf("op %s anchors kernels of kind %q, which Kinds lacks", d.Op, k)
			continue
		}
		if k == KindPointwise {
			continue
		}
		for _, i := range kd.Epilogue {
			if i < 0 || i >= d.NumResults() {
				t.Errorf("kind %s: epilogue on result %d of %d", k, i, d.NumResults())
			}
		}
		if kd.RowEpilogue && d.Category != ir.Reduction {
			t.Errorf("kind %s has row epilogues but %s is no reduction", k, d.Op)
		}
		if kd.Tiled && d.Category != ir.Contraction {
			t.Errorf("kind %s is tiled but %s is no contraction", k, d.Op)
		}
	}
	for k, kd := range Kinds {
		if !anchored[k] {
			t.Errorf("kind %q: no op anchors it", k)
		}
		if kd.Prologue != ProloguePointwise && kd.Prologue != PrologueIndexMaps {
			t.Errorf("kind %q has no prologue rule", k)
		}
	}
}
