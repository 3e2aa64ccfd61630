package codegen_test

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
)

// The emitted softplus is precise where log(1 + e^x) is not: for x ≪ 0 it
// is e^x to f32 precision (Mamba's dt floor sits near −9), not 0 below −16.7.
func TestSoftplusPreciseForNegativeInputs(t *testing.T) {
	xs := []float64{-100, -87, -50, -30, -20, -17, -16.7, -12, -9, -5, -1, -1e-3, 0, 1e-3, 1, 5, 9, 17, 30, 80}
	src := "model sp\ninput x: f32[20]\noutput y = softplus(x)\n"
	g, err := lang.Build("sp.graph", []byte(src), lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range devices(t) {
		u, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{}, Target: dev.Target()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := plan.NewRunner(dev, u.Plan, u.Source)
		if err != nil {
			t.Fatal(err)
		}
		in := make([]float32, len(xs))
		for i, x := range xs {
			in[i] = float32(x)
		}
		if err := r.WriteFloat32("x", in); err != nil {
			t.Fatal(err)
		}
		if err := r.Step(); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadFloat32("y")
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range in {
			xf := float64(x)
			want := math.Max(xf, 0) + math.Log1p(math.Exp(-math.Abs(xf)))
			if want < math.SmallestNonzeroFloat32*(1<<23) { // f32 denormals: exactness not asked
				continue
			}
			if e := math.Abs(float64(got[i])-want) / want; e > 1e-6 {
				t.Errorf("%s: softplus(%g) = %g, want %g (relative error %.2g)", dev.Name(), xf, got[i], want, e)
			}
		}
	}
}
