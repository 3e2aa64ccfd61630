package codegen_test

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train"
)

// A gather's index is clamped into its table in the kernel: with the host's
// range check taken out of the plan, out-of-range token ids (negative, past
// the vocabulary, huge) give the rows of the clamped ids, on every device,
// through the gathers fused into RMSNorm and the matmuls, instead of reads
// outside the embedding.
func TestGatherClampsBadIndices(t *testing.T) {
	g, err := lang.Load("../models/tiny.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vocab := g.Consts["vocab"]
	for _, dev := range devices(t) {
		u, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{}, Target: dev.Target()})
		if err != nil {
			t.Fatal(err)
		}
		p := *u.Plan
		p.Buffers = append([]plan.Buffer(nil), p.Buffers...)
		for i := range p.Buffers {
			p.Buffers[i].Index = nil // as a hand-edited plan.json might
		}
		r, err := plan.NewRunner(dev, &p, u.Source)
		if err != nil {
			t.Fatal(err)
		}
		params, err := ref.InitParams(u.Graph, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, prm := range u.Graph.Params {
			b, err := train.Encode(params[prm.Name])
			if err == nil {
				err = r.WriteBytes(prm.Name, b)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		inputs, clamped := map[string]*ref.Tensor{}, map[string]*ref.Tensor{}
		bad := []float64{-1, float64(vocab), -1 << 31, 1<<31 - 1, 7, float64(vocab + 1000)}
		for _, in := range u.Graph.Inputs {
			v, c := ref.New(in.Value.Type), ref.New(in.Value.Type)
			for i := range v.Data {
				if in.Name == "tokens" {
					v.Data[i] = bad[i%len(bad)]
					c.Data[i] = math.Min(math.Max(v.Data[i], 0), float64(vocab-1))
				} else {
					v.Data[i], c.Data[i] = -100, -100
				}
			}
			inputs[in.Name], clamped[in.Name] = v, c
			b, err := plan.Encode(in.Value.Type, v.Data)
			if err == nil {
				err = r.WriteBytes(in.Name, b)
			}
			if err != nil {
				t.Fatalf("%s: writing %s: %v", dev.Name(), in.Name, err)
			}
		}
		if err := r.Step(); err != nil {
			t.Fatalf("%s: %v", dev.Name(), err)
		}
		got, err := r.ReadFloat32("logits")
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.Eval(u.Graph, clamped, params)
		if err != nil {
			t.Fatal(err)
		}
		w := want.Outputs["logits"].Data
		for i := range w {
			if math.Abs(float64(got[i])-w[i]) > 1e-3*(1+math.Abs(w[i])) {
				t.Fatalf("%s: logits[%d] = %v, the clamped ids give %v", dev.Name(), i, got[i], w[i])
			}
		}
		if _, err := ref.Eval(u.Graph, inputs, params); err == nil {
			t.Error("the reference interpreter took out-of-range ids")
		}
	}
}
