package golden

import (
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/pipeline"
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
			out, err := pipeline.Run(g, &pipeline.Config{Verify: true}, "remat")
			if err != nil {
				t.Fatal(err)
			}
			text := out.Graph.String()
			again, err := lang.Load("../models/"+m+".graph", lang.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out2, err := pipeline.Run(again, &pipeline.Config{}, "remat")
			if err != nil || out2.Graph.String() != text {
				t.Fatal("printing the same model twice gave different text")
			}
			check(t, "ir/"+m+".ir", []byte(text))
		})
	}
}
