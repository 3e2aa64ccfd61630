package ref

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestCrossEntropy(t *testing.T) {
	ln3 := math.Log(3)
	z := f32(t, sh(2, 2, 3),
		0, ln3, 0, // target 1: ln 5 − ln 3
		1, 1, 1, // ignored
		2, 0, 0, // target 2: ln(e²+2)
		0, 0, 0) // target 0: ln 3
	y := i32(t, sh(2, 2), 1, -100, 2, 0)
	want := (math.Log(5.0/3) + math.Log(math.Exp(2)+2) + ln3) / 3
	expect(t, "ce", run(t, ir.OpCrossEntropy, nil, z, y)[0], nil, 1e-15, want)

	// A custom ignore_index; −100 is then an ordinary (out-of-range) target.
	y0 := i32(t, sh(2, 2), 0, 0, 2, 1)
	want0 := (math.Log(math.Exp(2)+2) + ln3) / 2
	expect(t, "ce ignore 0", run(t, ir.OpCrossEntropy, ir.Attrs{"ignore_index": 0}, z, y0)[0], nil, 1e-15, want0)
	if _, err := EvalOp(ir.OpCrossEntropy, ir.Attrs{"ignore_index": 0}, z, y); err == nil {
		t.Fatal("target −100 with ignore_index 0: no error")
	}

	all := i32(t, sh(2, 2), -100, -100, -100, -100)
	expect(t, "all ignored", run(t, ir.OpCrossEntropy, nil, z, all)[0], nil, 0, 0)

	for _, bad := range []int{3, -1} {
		if _, err := EvalOp(ir.OpCrossEntropy, nil, z, i32(t, sh(2, 2), 0, bad, 0, 0)); err == nil {
			t.Fatalf("target %d: no error", bad)
		}
	}
	// Large logits do not overflow: the max is subtracted first.
	big := f32(t, sh(1, 2), 1000, 1000)
	expect(t, "big", run(t, ir.OpCrossEntropy, nil, big, i32(t, sh(1), 0))[0], nil, 1e-15, math.Ln2)
}
