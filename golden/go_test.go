package golden

import (
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

// TestGoPackage pins the Go package that `magc compile --emit-go` writes for
// the tiny model's train step, and checks that emitting it is deterministic.
// The file is stored as .go.golden so that the go tool does not build it.
func TestGoPackage(t *testing.T) {
	emit := func() []byte {
		g, err := lang.Load("../models/tiny.graph", lang.Options{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Train: true}, Mem: passes.DefaultMemOptions()})
		if err != nil {
			t.Fatal(err)
		}
		src, err := codegen.GoSource("tiny", u.Plan, []string{"msl"})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	got := emit()
	if again := emit(); string(again) != string(got) {
		t.Fatal("emitting the same model twice gave different Go code")
	}
	check(t, "go/tiny.go.golden", got)
}
