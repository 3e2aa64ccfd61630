package codegen_test

import (
	"slices"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Every op of the catalogue has a kernel path: element-wise and layout ops
// through the pointwise template, every other op through its own.
func TestEveryOpHasAKernel(t *testing.T) {
	have := codegen.Templates()
	for _, d := range ir.Ops() {
		if d.Op == ir.OpInput || d.Op == ir.OpParam {
			continue
		}
		kind := string(d.Op)
		if passes.Pointwise(d.Op) {
			kind = "pointwise"
		}
		if !slices.Contains(have, kind) {
			t.Errorf("op %s has no kernel template (%s)", d.Op, kind)
		}
	}
}
