package codegen_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Codegen has a template for every kind of kernel fusion makes, and none
// for a kind it does not.
func TestEveryKindHasATemplate(t *testing.T) {
	kinds := slices.Sorted(maps.Keys(passes.Kinds))
	if have := codegen.Templates(); !slices.Equal(have, kinds) {
		t.Errorf("templates %v, kinds %v", have, kinds)
	}
}

// Every op of the catalogue has a kernel path: element-wise and layout ops
// through the pointwise template, every other op through its own.
func TestEveryOpHasAKernel(t *testing.T) {
	have := codegen.Templates()
	for _, d := range ir.Ops() {
		if d.Op == ir.OpInput || d.Op == ir.OpParam {
			continue
		}
		if kind := passes.KindOf(d.Op); !slices.Contains(have, kind) {
			t.Errorf("op %s has no kernel template (%s)", d.Op, kind)
		}
	}
}
