package ir

import (
	"math"
	"testing"
)

// TestElementwiseEntries: every entry with scalar maths is complete: an
// element-wise op of one result over same-shaped operands, with a float64
// function finite on its domain, a gradient exactly when it is
// differentiable, and a cost.
func TestElementwiseEntries(t *testing.T) {
	n := 0
	for _, d := range Ops() {
		e := d.Elem
		if e == nil {
			continue
		}
		n++
		switch {
		case d.Category != Elementwise || d.Inputs < 1 || d.NumResults() != 1 || d.Infer == nil:
			t.Errorf("%s has scalar maths but is not a one-result element-wise op", d.Op)
		case e.Eval == nil:
			t.Errorf("%s has no float64 function", d.Op)
		case (e.Grad != nil) != d.Differentiable:
			t.Errorf("%s: differentiable %v, gradient given %v", d.Op, d.Differentiable, e.Grad != nil)
		case e.FLOPs <= 0:
			t.Errorf("%s: %d FLOPs per element", d.Op, e.FLOPs)
		case !(e.Domain[0] < e.Domain[1]):
			t.Errorf("%s: empty domain %v", d.Op, e.Domain)
		default:
			x := make([]float64, d.Inputs)
			for _, v := range []float64{e.Domain[0], (e.Domain[0] + e.Domain[1]) / 2, e.Domain[1]} {
				for i := range x {
					x[i] = v
				}
				if y := e.Eval(Attrs{"factor": 2.0, "to": F32}, x); math.IsNaN(y) || math.IsInf(y, 0) {
					t.Errorf("%s%v = %g inside its domain", d.Op, x, y)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d ops have scalar maths", n)
	}
}
