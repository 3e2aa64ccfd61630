package hf

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/scm-magellano/magc/safetensors"
)

// WeightsFile is the name of the imported weights in the output directory.
const WeightsFile = "weights.safetensors"

// Model is a Hugging Face Mamba checkpoint as a magc model: the .graph
// source and the weights named as its parameters.
type Model struct {
	Name    string
	Config  *Config
	Source  string                        // the .graph file
	Weights map[string]safetensors.Tensor // magc parameter name → tensor, in the checkpoint's dtype
}

// Import reads a MambaForCausalLM checkpoint directory. name is the magc
// model's name ("" derives it from the directory).
func Import(dir, name string) (*Model, error) {
	c, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = ModelName(dir)
	}
	hf, err := ReadWeights(dir)
	if err != nil {
		return nil, err
	}
	w, err := mapWeights(c, hf)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	return &Model{Name: name, Config: c, Source: GraphSource(c, name, dir), Weights: w}, nil
}

// ModelName turns a directory name into a model identifier
// ("mamba-130m-hf" → "mamba_130m_hf").
func ModelName(dir string) string {
	base := filepath.Base(filepath.Clean(dir))
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9' && b.Len() > 0, r == '_':
			b.WriteRune(r)
		case b.Len() > 0:
			b.WriteByte('_')
		}
	}
	if s := strings.Trim(b.String(), "_"); s != "" {
		return s
	}
	return "imported"
}

// ReadWeights reads model.safetensors, or the shards that
// model.safetensors.index.json lists.
func ReadWeights(dir string) (map[string]safetensors.Tensor, error) {
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		f, err := safetensors.Read(single)
		if err != nil {
			return nil, err
		}
		return f.Tensors, nil
	}
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	b, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("%s has neither model.safetensors nor model.safetensors.index.json (a PyTorch .bin checkpoint must be converted to safetensors first)", dir)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, fmt.Errorf("%s: %v", indexPath, err)
	}
	if len(index.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map", indexPath)
	}
	shards := map[string][]string{}
	for name, file := range index.WeightMap {
		if file != filepath.Base(file) {
			return nil, fmt.Errorf("%s: shard %q of %s is not a file name in %s", indexPath, file, name, dir)
		}
		shards[file] = append(shards[file], name)
	}
	out := map[string]safetensors.Tensor{}
	for _, file := range slices.Sorted(maps.Keys(shards)) {
		f, err := safetensors.Read(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		for _, name := range shards[file] {
			t, ok := f.Tensors[name]
			if !ok {
				return nil, fmt.Errorf("%s: the index puts %s in %s, which does not hold it", indexPath, name, file)
			}
			out[name] = t
		}
	}
	return out, nil
}

// tensorMap is one checkpoint tensor and its magc parameter: the
// checkpoint's shape and the parameter's (the same elements, row-major).
type tensorMap struct {
	hf, magc  string
	hfShape   []int
	magcShape []int
}

// layout lists every tensor the checkpoint must hold.
func layout(c *Config) []tensorMap {
	d, e, n, k, r, v := c.HiddenSize, c.IntermediateSize, c.StateSize, c.ConvKernel, c.DTRank(), c.VocabSize
	same := func(hf, magc string, shape ...int) tensorMap { return tensorMap{hf, magc, shape, shape} }
	ms := []tensorMap{same("backbone.embeddings.weight", "embed", v, d)}
	for i := range c.NumHiddenLayers {
		hp, mp := fmt.Sprintf("backbone.layers.%d.", i), fmt.Sprintf("mamba.%d.", i)
		ms = append(ms,
			same(hp+"norm.weight", mp+"norm", d),
			same(hp+"mixer.in_proj.weight", mp+"in_proj", 2*e, d),
			// Depthwise conv1d stores [channels, 1, kernel]; magc's conv_w is [channels, kernel].
			tensorMap{hp + "mixer.conv1d.weight", mp + "conv_w", []int{e, 1, k}, []int{e, k}},
		)
		if c.ConvBias() {
			ms = append(ms, same(hp+"mixer.conv1d.bias", mp+"conv_b", e))
		}
		ms = append(ms,
			same(hp+"mixer.x_proj.weight", mp+"x_proj", r+2*n, e),
			same(hp+"mixer.dt_proj.weight", mp+"dt_proj", e, r),
			same(hp+"mixer.dt_proj.bias", mp+"dt_bias", e),
			same(hp+"mixer.A_log", mp+"A_log", e, n),
			same(hp+"mixer.D", mp+"D", e),
			same(hp+"mixer.out_proj.weight", mp+"out_proj", d, e),
		)
	}
	ms = append(ms, same("backbone.norm_f.weight", "norm_f", d))
	if !c.Tied() {
		ms = append(ms, same("lm_head.weight", "lm_head", v, d))
	}
	return ms
}

// mapWeights renames (and for conv1d reshapes) the checkpoint's tensors
// to magc's parameters, refusing a missing, misshapen or unknown tensor.
func mapWeights(c *Config, hf map[string]safetensors.Tensor) (map[string]safetensors.Tensor, error) {
	out := map[string]safetensors.Tensor{}
	used := map[string]bool{}
	for _, m := range layout(c) {
		t, ok := hf[m.hf]
		if !ok {
			return nil, fmt.Errorf("missing tensor %s (for %s %v)", m.hf, m.magc, m.hfShape)
		}
		used[m.hf] = true
		if !slices.Equal(t.Shape, m.hfShape) {
			return nil, fmt.Errorf("tensor %s has shape %v, config.json implies %v", m.hf, t.Shape, m.hfShape)
		}
		if !isFloatDType(t.DType) {
			return nil, fmt.Errorf("tensor %s has dtype %s, want a float type", m.hf, t.DType)
		}
		t.Shape = slices.Clone(m.magcShape)
		out[m.magc] = t
	}
	if !c.ConvBias() {
		e := c.IntermediateSize
		for i := range c.NumHiddenLayers {
			zero, _ := safetensors.FromFloat32("F32", []int{e}, make([]float32, e))
			out[fmt.Sprintf("mamba.%d.conv_b", i)] = zero
		}
	}
	var unknown []string
	for name := range hf {
		if !used[name] && !(name == "lm_head.weight" && c.Tied()) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fmt.Errorf("tensors magc's Mamba layer has no place for: %s", strings.Join(unknown, ", "))
	}
	return out, nil
}

func isFloatDType(d string) bool {
	switch d {
	case "F32", "F16", "BF16", "F64":
		return true
	}
	return false
}

// GraphSource writes the model file of a checkpoint. The layer is the
// Mamba mixer of transformers' MambaBlock/MambaMixer (slow path) as magc
// ops; it is also models/blocks.graph's layer, written out so the file
// stands alone.
func GraphSource(c *Config, name, from string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# %s: a Hugging Face MambaForCausalLM imported by magc import from %s.", name, filepath.Base(filepath.Clean(from)))
	p("# Weights: %s, named as this file's parameters. Tokenizer: tokenizer.json.", WeightsFile)
	p("model %s", name)
	p("")
	p("const batch = 1")
	p("const context = 512")
	p("const vocab = %d", c.VocabSize)
	p("const d_model = %d", c.HiddenSize)
	p("const d_inner = %d", c.IntermediateSize)
	p("const d_state = %d", c.StateSize)
	p("const d_conv = %d", c.ConvKernel)
	p("const dt_rank = %d", c.DTRank())
	p("const n_layers = %d", c.NumHiddenLayers)
	p("const scan_chunk = 64")
	p("")
	p("train qlora(rank = 16, alpha = 16, lr = 2e-4)")
	p("")
	p("input tokens: i32[batch, context]")
	p("input targets: i32[batch, context]")
	p("param embed: f32[vocab, d_model] = normal(std = 0.02)")
	if !c.Tied() {
		p("param lm_head: f32[vocab, d_model] = normal(std = 0.02)")
	}
	eps := fmt.Sprintf("%g", c.LayerNormEpsilon)
	if !strings.ContainsAny(eps, ".e") {
		eps += ".0"
	}
	p("")
	p("# MambaBlock: x + mixer(rmsnorm(x)); the residual stays f32 (residual_in_fp32).")
	p("layer mamba(h) {")
	p("    param norm: f32[d_model] = ones nodecay")
	p("    param in_proj: f32[2 * d_inner, d_model] = kaiming_uniform(a = sqrt(5)) lora")
	p("    param conv_w: f32[d_inner, d_conv] = kaiming_uniform(a = sqrt(5))")
	p("    param conv_b: f32[d_inner] = uniform(lo = -1 / sqrt(d_conv), hi = 1 / sqrt(d_conv)) nodecay")
	p("    param x_proj: f32[dt_rank + 2 * d_state, d_inner] = kaiming_uniform(a = sqrt(5))")
	p("    param dt_proj: f32[d_inner, dt_rank] = uniform(lo = -1 / sqrt(dt_rank), hi = 1 / sqrt(dt_rank))")
	p("    param dt_bias: f32[d_inner] = dt_bias nodecay")
	p("    param A_log: f32[d_inner, d_state] = s4d_real nodecay")
	p("    param D: f32[d_inner] = ones nodecay")
	p("    param out_proj: f32[d_model, d_inner] = kaiming_uniform(a = sqrt(5), gain = 1 / sqrt(n_layers)) lora")
	p("")
	p("    x, z = split(linear(rmsnorm(h, norm, eps = %s), in_proj), d_inner, d_inner)", eps)
	p("    u = silu(causal_conv1d(x, conv_w, conv_b))")
	p("    dt, B, C = split(linear(u, x_proj), dt_rank, d_state, d_state)")
	p("    delta = softplus(linear(dt, dt_proj) + dt_bias)")
	p("    y, _ = selective_scan(u, delta, -exp(A_log), B, C, D, chunk = scan_chunk)")
	p("    return h + linear(y * silu(z), out_proj)")
	p("}")
	p("")
	p("param norm_f: f32[d_model] = ones nodecay")
	p("h = gather(embed, tokens)")
	p("repeat n_layers { checkpoint { h = mamba(h) } }")
	head := "embed"
	if !c.Tied() {
		head = "lm_head"
	}
	p("output logits = linear(rmsnorm(h, norm_f, eps = %s), %s)", eps, head)
	p("output loss = cross_entropy(logits, targets)")
	return b.String()
}

// Write puts NAME.graph and weights.safetensors in dir, with the
// checkpoint's config.json and tokenizer files copied from src.
func (m *Model) Write(dir, src string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, m.Name+".graph"), []byte(m.Source), 0o644); err != nil {
		return err
	}
	meta := map[string]string{"magc": "import", "model": m.Name, "source": "MambaForCausalLM"}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), m.Weights, meta); err != nil {
		return err
	}
	return copyFiles(src, dir, true)
}

// copyFiles copies config.json (required when must) and the tokenizer and
// generation files that exist.
func copyFiles(src, dst string, must bool) error {
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if os.IsNotExist(err) && !(must && f == "config.json") {
			continue
		}
		if err != nil {
			return err
		}
		if filepath.Clean(src) == filepath.Clean(dst) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
