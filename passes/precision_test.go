package passes_test

import (
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

// TestPrecisionRule: in tiny's f16 and bf16 train steps, activations and the
// gradients between layers are stored in the half type, and nothing the
// rule keeps f32 is: the optimizer's values (the clip factor of a
// loss-scaled f16 step is 2^-16 or less, among f16's subnormals),
// scalars, sums, the scan's states, parameter gradients and outputs.
func TestPrecisionRule(t *testing.T) {
	for _, prec := range []string{"f16", "bf16"} {
		g, err := lang.Load("../models/tiny.graph", lang.Options{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := pipeline.Run(g, &pipeline.Config{Passes: passes.Config{Mode: "full", Train: true, Precision: prec}, Verify: true}, "precision")
		if err != nil {
			t.Fatal(err)
		}
		half := map[ir.Op]int{}
		for _, n := range u.Graph.Nodes {
			for _, v := range n.Outputs {
				if v.Store == ir.Invalid {
					continue
				}
				half[n.Op]++
				switch {
				case n.Scope == "optimizer", v.Type.Shape.Elems() == 1, n.Op == ir.OpReduceSum, n.Op == ir.OpAdamW,
					n.Op == ir.OpScan && v.Index == 1, n.Op == ir.OpSoftmax:
					t.Errorf("%s: %v (%s in %q) is stored in %v", prec, v, n.Op, n.Scope, v.Store)
				}
			}
		}
		for _, n := range u.Graph.Nodes {
			if n.Op == ir.OpAdamW && n.Inputs[1].Store != ir.Invalid {
				t.Errorf("%s: the gradient %v AdamW reads is stored in %v", prec, n.Inputs[1], n.Inputs[1].Store)
			}
		}
		for _, op := range []ir.Op{ir.OpRMSNorm, ir.OpMatmul, ir.OpScan, ir.OpScanBwd, ir.OpCrossEntropyBwd} {
			if half[op] == 0 {
				t.Errorf("%s: no result of %s is stored in the half type (%v)", prec, op, half)
			}
		}
		if u.Precision.HalfValues == 0 || u.Precision.BytesSaved <= 0 {
			t.Errorf("%s: stats %+v", prec, u.Precision)
		}
	}
}
