package hf_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

const fixture = "testdata/hf-mamba-tiny"

// imported imports the fixture into a temporary directory and loads the
// model at the given batch and context with its weights.
func imported(t *testing.T, batch, context int) (*ir.Graph, map[string]*ref.Tensor, string) {
	t.Helper()
	m, err := hf.Import(fixture, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Write(dir, fixture); err != nil {
		t.Fatal(err)
	}
	g, params := loadImported(t, filepath.Join(dir, m.Name+".graph"), filepath.Join(dir, hf.WeightsFile), batch, context)
	return g, params, dir
}

func loadImported(t *testing.T, graphPath, weights string, batch, context int) (*ir.Graph, map[string]*ref.Tensor) {
	t.Helper()
	g, err := lang.Load(graphPath, lang.Options{Overrides: map[string]int{"batch": batch, "context": context}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Read(weights)
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]*ref.Tensor{}
	for _, p := range g.Params {
		st, ok := f.Tensors[p.Name]
		if !ok {
			t.Fatalf("weights lack %s", p.Name)
		}
		if params[p.Name], err = train.FromSafetensors(p.Name, st, p.Value.Type); err != nil {
			t.Fatal(err)
		}
	}
	return g, params
}

// expected reads a tensor of the fixture's expected.safetensors.
func expected(t *testing.T, name string) safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Read(filepath.Join(fixture, "expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return f.Tensors[name]
}

func expectedInts(t *testing.T, name string) ([]int, []int) {
	st := expected(t, name)
	v, err := st.Int32s()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out, st.Shape
}

// fixtureInputs are the fixture's input_ids (and zero targets).
func fixtureInputs(t *testing.T) map[string]*ref.Tensor {
	ids, shape := expectedInts(t, "input_ids")
	tok, err := ref.FromInts(shape, ids)
	if err != nil {
		t.Fatal(err)
	}
	tgt, _ := ref.FromInts(shape, make([]int, len(ids)))
	return map[string]*ref.Tensor{"tokens": tok, "targets": tgt}
}

// relErr is max |got − want| over max |want|.
func relErr(got []float64, want []float32) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(got[i]-float64(want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	return diff / scale
}

func wantLogits(t *testing.T) []float32 {
	w, err := expected(t, "logits").Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestImportMatchesTransformersOnRef(t *testing.T) {
	g, params, _ := imported(t, 2, 12)
	res, err := ref.Eval(g, fixtureInputs(t), params)
	if err != nil {
		t.Fatal(err)
	}
	got := res.Outputs["logits"]
	if !got.Type.Shape.Equal(ir.Shape{2, 12, 1008}) {
		t.Fatalf("logits %v", got.Type)
	}
	if e := relErr(got.Data, wantLogits(t)); e > 1e-4 {
		t.Fatalf("ref logits differ from transformers': relative error %.3g > 1e-4", e)
	} else {
		t.Logf("ref: relative error %.3g", e)
	}
}

func TestImportMatchesTransformersOnSim(t *testing.T) {
	g, params, _ := imported(t, 2, 12)
	dev := sim.New()
	defer dev.Close()
	u, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Mode: "full"}, Target: dev.Target()})
	if err != nil {
		t.Fatal(err)
	}
	out, err := train.RunGraph(dev, u, fixtureInputs(t), params)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(out["logits"].Data, wantLogits(t)); e > 1e-4 {
		t.Fatalf("sim logits differ from transformers': relative error %.3g > 1e-4", e)
	} else {
		t.Logf("sim: relative error %.3g", e)
	}
}

func TestImportWritesAStandaloneModel(t *testing.T) {
	_, _, dir := imported(t, 1, 4)
	for _, f := range []string{"hf_mamba_tiny.graph", hf.WeightsFile, "config.json", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("import wrote no %s: %v", f, err)
		}
	}
	src, _ := os.ReadFile(filepath.Join(dir, "hf_mamba_tiny.graph"))
	if strings.Contains(string(src), "\nimport ") {
		t.Errorf("the model file imports another file:\n%s", src)
	}
}

// copyFixture copies the fixture's checkpoint into a temporary directory,
// with config.json edited by edit and the weights by editW.
func copyFixture(t *testing.T, edit func(map[string]any), editW func(map[string]safetensors.Tensor)) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		b, err := os.ReadFile(filepath.Join(fixture, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		var c map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		edit(c)
		b, _ = json.Marshal(c)
		os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	}
	if editW != nil {
		f, err := safetensors.Read(filepath.Join(dir, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		editW(f.Tensors)
		if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), f.Tensors, f.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestImportRefusesWhatItCannotRepresent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(map[string]any)
		editW  func(map[string]safetensors.Tensor)
		errHas string
	}{
		{"mamba2", func(c map[string]any) { c["model_type"] = "mamba2"; c["architectures"] = []string{"Mamba2ForCausalLM"} }, nil, `model_type "mamba2" is not supported`},
		{"llama", func(c map[string]any) { c["model_type"] = "llama" }, nil, `model_type "llama"`},
		{"biases", func(c map[string]any) { c["use_bias"] = true }, nil, "use_bias"},
		{"missing", nil, func(w map[string]safetensors.Tensor) { delete(w, "backbone.layers.1.mixer.A_log") }, "missing tensor backbone.layers.1.mixer.A_log"},
		{"shape", nil, func(w map[string]safetensors.Tensor) {
			x := w["backbone.layers.0.mixer.x_proj.weight"]
			x.Shape = []int{128, 36}
			w["backbone.layers.0.mixer.x_proj.weight"] = x
		}, "tensor backbone.layers.0.mixer.x_proj.weight has shape [128 36], config.json implies [36 128]"},
		{"extra", nil, func(w map[string]safetensors.Tensor) {
			w["backbone.layers.0.mixer.in_proj.bias"] = w["backbone.layers.0.mixer.D"]
		}, "no place for: backbone.layers.0.mixer.in_proj.bias"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFixture(t, tc.edit, tc.editW)
			_, err := hf.Import(dir, "")
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("got %v, want an error with %q", err, tc.errHas)
			}
		})
	}
}

func TestImportReadsShards(t *testing.T) {
	dir := copyFixture(t, nil, nil)
	f, err := safetensors.Read(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "model.safetensors"))
	shards := [2]map[string]safetensors.Tensor{{}, {}}
	index := map[string]string{}
	for i, name := range f.Names() {
		file := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i%2]
		shards[i%2][name] = f.Tensors[name]
		index[name] = file
	}
	for i, s := range shards {
		if err := safetensors.WriteFile(filepath.Join(dir, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i]), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": index})
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644)
	m, err := hf.Import(dir, "sharded")
	if err != nil {
		t.Fatal(err)
	}
	whole, err := hf.Import(fixture, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Weights) != len(whole.Weights) {
		t.Fatalf("%d weights from shards, %d from one file", len(m.Weights), len(whole.Weights))
	}
	for name, w := range whole.Weights {
		if string(m.Weights[name].Data) != string(w.Data) {
			t.Errorf("%s differs between shards and one file", name)
		}
	}
}
