package ref_test

import (
	"github.com/scm-magellano/magc/pipeline"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
)

// TestTinyModel evaluates the tiny Mamba + MoE model end to end, in full and
// QLoRA mode (NF4 weights): at initialisation the logits are near 0, so the
// loss is near ln(vocab); evaluation is deterministic.
func TestTinyModel(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		g, err := lang.Load("../../models/tiny.graph", lang.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if g, err = graphPasses(g, passes.Config{Mode: mode}); err != nil {
			t.Fatal(err)
		}
		nf4 := 0
		for _, p := range g.Params {
			if p.Role == ir.FrozenNF4 {
				nf4++
			}
		}
		if (mode == "qlora") != (nf4 > 0) {
			t.Fatalf("%s: %d nf4 parameters", mode, nf4)
		}
		params, err := ref.InitParams(g, 1)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		feeds := map[string]*ref.Tensor{}
		for _, in := range g.Inputs {
			s := in.Value.Type.Shape
			toks := make([]int, s.Elems())
			for i := range toks {
				toks[i] = rng.IntN(g.Consts["vocab"])
			}
			if feeds[in.Name], err = ref.FromInts(s, toks); err != nil {
				t.Fatal(err)
			}
		}
		r1, err := ref.Eval(g, feeds, params)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		r2, err := ref.Eval(g, feeds, params)
		if err != nil {
			t.Fatal(err)
		}
		loss := r1.Outputs["loss"].Data[0]
		if math.Abs(loss-math.Log(float64(g.Consts["vocab"]))) > 0.5 || loss != r2.Outputs["loss"].Data[0] {
			t.Fatalf("%s: loss %g, then %g; ln vocab = %g", mode, loss, r2.Outputs["loss"].Data[0], math.Log(float64(g.Consts["vocab"])))
		}
		t.Logf("%s: loss %.6f, %d aux losses %v", mode, loss, len(r1.AuxLosses), r1.AuxLosses)
		for i, a := range r1.AuxLosses {
			if v := a.Data[0]; !(v >= 0 && v < 1) {
				t.Fatalf("%s: aux loss %d = %g", mode, i, v)
			}
		}
	}
}

// graphPasses runs the pipeline's graph phases, verifying after each.
func graphPasses(g *ir.Graph, cfg passes.Config) (*ir.Graph, error) {
	u, err := pipeline.Run(g, &pipeline.Config{Passes: cfg, Verify: true}, "remat")
	if err != nil {
		return nil, err
	}
	return u.Graph, nil
}
