package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/safetensors"
)

// Merge returns the dense f32 weights of a model's parameters: a QLoRA
// target becomes its dequantised NF4 weight plus the adapters' update,
// W + (α/r)·B·A (per expert for stacked weights), the weight its linear
// use computes with; other model parameters are copied. Adapters and
// optimizer moments are not weights and are left out.
func Merge(g *ir.Graph, params map[string]*ref.Tensor) (map[string][]float32, error) {
	scale := 0.0
	if g.Train.Rank > 0 {
		scale = g.Train.Alpha / float64(g.Train.Rank)
	}
	out := map[string][]float32{}
	for _, p := range g.Params {
		if p.Role == ir.OptState || strings.HasSuffix(p.Name, ".lora_a") || strings.HasSuffix(p.Name, ".lora_b") {
			continue
		}
		t := params[p.Name]
		if t == nil {
			return nil, fmt.Errorf("no value for %s", p.Name)
		}
		w := t.Float32()
		if w == nil {
			return nil, fmt.Errorf("%s: invalid NF4 weights", p.Name)
		}
		a, b := params[p.Name+".lora_a"], params[p.Name+".lora_b"]
		if (a == nil) != (b == nil) {
			return nil, fmt.Errorf("%s has one LoRA factor without the other", p.Name)
		}
		if a != nil {
			if err := addLowRank(w, p.Value.Type.Shape, a, b, scale); err != nil {
				return nil, fmt.Errorf("%s: %v", p.Name, err)
			}
		}
		out[p.Name] = w
	}
	return out, nil
}

// addLowRank adds scale·B·A to w, shape (…, n, k), A (…, r, k), B (…, n, r),
// summing in float64 and rounding once.
func addLowRank(w []float32, shape ir.Shape, a, b *ref.Tensor, scale float64) error {
	nd := len(shape)
	n, k := shape[nd-2], shape[nd-1]
	as, bs := a.Type.Shape, b.Type.Shape
	if len(as) != nd || len(bs) != nd || as[nd-1] != k || bs[nd-2] != n || as[nd-2] != bs[nd-1] {
		return fmt.Errorf("adapters %v and %v do not fit a weight %v", as, bs, shape)
	}
	r := as[nd-2]
	stacks := int(shape.Elems()) / (n * k)
	for s := range stacks {
		wo, ao, bo := s*n*k, s*r*k, s*n*r
		for i := range n {
			for j := range k {
				var acc float64
				for q := range r {
					acc += b.Data[bo+i*r+q] * a.Data[ao+q*k+j]
				}
				w[wo+i*k+j] = float32(float64(w[wo+i*k+j]) + scale*acc)
			}
		}
	}
	return nil
}

// ConfigFor is the config of a model file's Mamba stack: config.json beside
// it when there is one (an imported model), checked against the file's
// dimensions, else one written from them. A model with other layers
// (mixture of experts) has no MambaForCausalLM form.
func ConfigFor(g *ir.Graph, modelDir string) (*Config, []byte, error) {
	for _, l := range g.Layers {
		if l.Kind != "mamba" {
			return nil, nil, fmt.Errorf("%s has a %s layer (%s): the Hugging Face MambaForCausalLM layout holds Mamba layers only", g.Name, l.Kind, l.Scope)
		}
	}
	c := g.Consts
	if modelDir != "" {
		if raw, err := os.ReadFile(filepath.Join(modelDir, "config.json")); err == nil {
			cfg, err := ReadConfig(modelDir)
			if err != nil {
				return nil, nil, err
			}
			if cfg.HiddenSize != c["d_model"] || cfg.IntermediateSize != c["d_inner"] || cfg.StateSize != c["d_state"] ||
				cfg.NumHiddenLayers != len(g.Layers) || cfg.VocabSize != c["vocab"] || cfg.DTRank() != c["dt_rank"] || cfg.ConvKernel != c["d_conv"] {
				return nil, nil, fmt.Errorf("%s: config.json does not describe %s's dimensions", modelDir, g.Name)
			}
			return cfg, raw, nil
		}
	}
	tied := g.Param("lm_head") == nil
	cfg := map[string]any{
		"architectures": []string{"MambaForCausalLM"}, "model_type": "mamba",
		"vocab_size": c["vocab"], "hidden_size": c["d_model"], "intermediate_size": c["d_inner"],
		"state_size": c["d_state"], "conv_kernel": c["d_conv"], "time_step_rank": c["dt_rank"],
		"num_hidden_layers": len(g.Layers), "expand": c["d_inner"] / max(c["d_model"], 1),
		"layer_norm_epsilon": 1e-5, "hidden_act": "silu", "use_bias": false, "use_conv_bias": true,
		"residual_in_fp32": true, "tie_word_embeddings": tied, "torch_dtype": "float32",
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	var parsed Config
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, nil, err
	}
	if err := parsed.check(); err != nil {
		return nil, nil, err
	}
	return &parsed, raw, nil
}

// Export writes dense weights (magc names, as Merge gives them) as a
// MambaForCausalLM checkpoint in dir: model.safetensors (f32, Hugging Face
// names and shapes), config.json, and the tokenizer and generation files
// found in modelDir.
func Export(cfg *Config, rawConfig []byte, weights map[string][]float32, modelDir, dir string) error {
	tensors := map[string]safetensors.Tensor{}
	for _, m := range layout(cfg) {
		w, ok := weights[m.magc]
		if !ok {
			return fmt.Errorf("no weights for %s (%s)", m.magc, m.hf)
		}
		t, err := safetensors.FromFloat32("F32", m.hfShape, w)
		if err != nil {
			return fmt.Errorf("%s: %v", m.magc, err)
		}
		tensors[m.hf] = t
	}
	if !cfg.ConvBias() {
		for i := range cfg.NumHiddenLayers {
			name := fmt.Sprintf("mamba.%d.conv_b", i)
			if slices.ContainsFunc(weights[name], func(x float32) bool { return x != 0 }) {
				return fmt.Errorf("%s is not zero, but config.json has use_conv_bias false", name)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), rawConfig, 0o644); err != nil {
		return err
	}
	if modelDir != "" {
		return copyFiles(modelDir, dir, false)
	}
	return nil
}

// WriteAdapters writes a QLoRA model's adapters alone: each target's
// lora_a (r×k) and lora_b (n×r) under magc's names, with the rank, α and
// the target weights in the metadata.
func WriteAdapters(g *ir.Graph, params map[string]*ref.Tensor, path string) error {
	tensors := map[string]safetensors.Tensor{}
	var targets []string
	for _, p := range g.Params {
		base, ok := strings.CutSuffix(p.Name, ".lora_a")
		if !ok && !strings.HasSuffix(p.Name, ".lora_b") {
			continue
		}
		if ok {
			targets = append(targets, base)
		}
		t := params[p.Name]
		if t == nil {
			return fmt.Errorf("no value for %s", p.Name)
		}
		st, err := safetensors.FromFloat32("F32", []int(t.Type.Shape), t.Float32())
		if err != nil {
			return err
		}
		tensors[p.Name] = st
	}
	if len(targets) == 0 {
		return fmt.Errorf("%s has no LoRA adapters (it was trained in %s mode)", g.Name, g.Train.Mode)
	}
	slices.Sort(targets)
	meta := map[string]string{
		"format": "magc-lora-1", "model": g.Name,
		"rank": strconv.Itoa(g.Train.Rank), "alpha": strconv.FormatFloat(g.Train.Alpha, 'g', -1, 64),
		"targets": strings.Join(targets, ","),
	}
	return safetensors.WriteFile(path, tensors, meta)
}
