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
