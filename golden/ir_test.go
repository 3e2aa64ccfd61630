package golden

import (
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
)

// Models whose printed IR is pinned.
var models = []string{"tiny", "tinytext", "phase1", "phase2", "phase3", "scm3b"}

func TestGrammar(t *testing.T) {
	check(t, "grammar.ebnf", []byte(lang.Grammar()+"\n"))
}

// TestModelIR pins each model's IR after the pass pipeline, and checks that
// printing is deterministic.
func TestModelIR(t *testing.T) {
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			g, err := lang.Load("../models/"+m+".graph", lang.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := passes.Run(g, &passes.Config{Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			text := out.String()
			again, err := lang.Load("../models/"+m+".graph", lang.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out2, _, _ := passes.Run(again, &passes.Config{})
			if out2.String() != text {
				t.Fatal("printing the same model twice gave different text")
			}
			check(t, "ir/"+m+".ir", []byte(text))
		})
	}
}
