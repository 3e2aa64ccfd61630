package gen

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/hf"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
)

const fixture = "../hf/testdata/hf-mamba-tiny"

func load(t *testing.T, path string, batch, context int) *ir.Graph {
	t.Helper()
	g, err := lang.Load(path, lang.Options{Overrides: map[string]int{"batch": batch, "context": context}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// importFixture imports the Hugging Face fixture; it returns the model
// file and its weights.
func importFixture(t *testing.T) (string, map[string]safetensors.Tensor) {
	t.Helper()
	m, err := hf.Import(fixture, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Write(dir, fixture); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, m.Name+".graph"), m.Weights
}

func weightsFor(t *testing.T, g *ir.Graph, w map[string]safetensors.Tensor) map[string]*ref.Tensor {
	t.Helper()
	params := map[string]*ref.Tensor{}
	for _, p := range g.Params {
		st, ok := w[p.Name]
		if !ok {
			continue
		}
		var err error
		if params[p.Name], err = train.FromSafetensors(p.Name, st, p.Value.Type); err != nil {
			t.Fatal(err)
		}
	}
	return params
}

// stepVersusForward runs the sequence forward on dev and the decode step
// token by token on dev, and returns the largest difference of their
// logits relative to the largest logit.
func stepVersusForward(t *testing.T, path string, weights map[string]safetensors.Tensor, batch, seq int, dev device.Device) float64 {
	t.Helper()
	full := load(t, path, batch, seq)
	params, err := ref.InitParams(full, 3)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range weightsFor(t, full, weights) {
		params[k] = v
	}
	vocab := full.Consts["vocab"]
	r := rand.New(rand.NewPCG(5, 6))
	ids := make([]int, batch*seq)
	for i := range ids {
		ids[i] = r.IntN(vocab)
	}
	tok, _ := ref.FromInts([]int{batch, seq}, ids)
	tgt, _ := ref.FromInts([]int{batch, seq}, make([]int, batch*seq))
	u, err := pipeline.Compile(full, &pipeline.Config{Passes: passes.Config{Mode: "full"}, Target: dev.Target()})
	if err != nil {
		t.Fatal(err)
	}
	out, err := train.RunGraph(dev, u, map[string]*ref.Tensor{"tokens": tok, "targets": tgt}, params)
	if err != nil {
		t.Fatal(err)
	}
	want := out["logits"]

	prog, err := Compile(load(t, path, batch, 1), passes.Config{Mode: "full"}, dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d launches per decode step", full.Name, prog.Launches())
	d, err := prog.Start(params)
	if err != nil {
		t.Fatal(err)
	}
	var diff, scale float64
	for pos := range seq {
		col := make([]int, batch)
		for b := range batch {
			col[b] = ids[b*seq+pos]
		}
		got, err := d.Step(col)
		if err != nil {
			t.Fatal(err)
		}
		for b := range batch {
			for v := range vocab {
				w := want.At(b, pos, v)
				diff = math.Max(diff, math.Abs(got[b*vocab+v]-w))
				scale = math.Max(scale, math.Abs(w))
			}
		}
	}
	return diff / scale
}

func TestStepMatchesForwardOnSim(t *testing.T) {
	dev := sim.New()
	defer dev.Close()
	path, w := importFixture(t)
	for _, tc := range []struct {
		name, path string
		w          map[string]safetensors.Tensor
		batch, seq int
	}{
		{"tiny", "../models/tiny.graph", nil, 2, 12},
		{"imported", path, w, 2, 12},
		{"tinytext", "../models/tinytext.graph", nil, 1, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := stepVersusForward(t, tc.path, tc.w, tc.batch, tc.seq, dev)
			t.Logf("relative difference %.3g", e)
			if e > 1e-5 {
				t.Fatalf("step-by-step logits differ from the forward's by %.3g (relative) > 1e-5", e)
			}
		})
	}
}
