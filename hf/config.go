// Package hf reads and writes Hugging Face Mamba (v1) checkpoints: the
// MambaForCausalLM layout of transformers (config.json, model.safetensors
// or shards with their index, tokenizer.json), as magc models and weights
// (Import) and back (Export), and the GPT-NeoX-style byte-level BPE
// tokenizer of tokenizer.json (Tokenizer).
package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Config is what magc reads of a MambaForCausalLM config.json.
type Config struct {
	Architectures    []string `json:"architectures"`
	ModelType        string   `json:"model_type"`
	VocabSize        int      `json:"vocab_size"`
	HiddenSize       int      `json:"hidden_size"`
	StateSize        int      `json:"state_size"`
	NumHiddenLayers  int      `json:"num_hidden_layers"`
	LayerNormEpsilon float64  `json:"layer_norm_epsilon"`
	Expand           int      `json:"expand"`
	ConvKernel       int      `json:"conv_kernel"`
	IntermediateSize int      `json:"intermediate_size"`
	UseBias          bool     `json:"use_bias"`
	UseConvBias      *bool    `json:"use_conv_bias"`
	HiddenAct        string   `json:"hidden_act"`
	TieWordEmbed     *bool    `json:"tie_word_embeddings"`
	BOSTokenID       *int     `json:"bos_token_id"`
	EOSTokenID       *int     `json:"eos_token_id"`
	PadTokenID       *int     `json:"pad_token_id"`
	// TimeStepRank is an integer or "auto" (⌈hidden_size/16⌉).
	TimeStepRank json.RawMessage `json:"time_step_rank"`

	// dtRank is TimeStepRank resolved.
	dtRank int
}

// DTRank is the rank of the Δ projection.
func (c *Config) DTRank() int { return c.dtRank }

// Tied reports whether the output head is the embedding (the default).
func (c *Config) Tied() bool { return c.TieWordEmbed == nil || *c.TieWordEmbed }

// ConvBias reports whether conv1d has a bias (the default).
func (c *Config) ConvBias() bool { return c.UseConvBias == nil || *c.UseConvBias }

// ReadConfig reads and checks dir/config.json: a Mamba (v1) causal LM
// with the SiLU activation and no projection biases, the model magc's
// Mamba layer computes. Anything else is refused with the reason.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &c, nil
}

func (c *Config) check() error {
	if c.ModelType != "mamba" {
		return fmt.Errorf("model_type %q is not supported: magc imports Mamba (v1) checkpoints (model_type \"mamba\", MambaForCausalLM); Mamba-2, Jamba and transformers are other models", c.ModelType)
	}
	if len(c.Architectures) > 0 && !contains(c.Architectures, "MambaForCausalLM") {
		return fmt.Errorf("architectures %q: magc imports MambaForCausalLM", c.Architectures)
	}
	if c.Expand == 0 {
		c.Expand = 2
	}
	if c.IntermediateSize == 0 {
		c.IntermediateSize = c.Expand * c.HiddenSize
	}
	if c.LayerNormEpsilon == 0 {
		c.LayerNormEpsilon = 1e-5
	}
	if c.HiddenAct == "" {
		c.HiddenAct = "silu"
	}
	switch {
	case c.VocabSize <= 0 || c.HiddenSize <= 0 || c.StateSize <= 0 || c.NumHiddenLayers <= 0 || c.ConvKernel <= 0 || c.IntermediateSize <= 0:
		return fmt.Errorf("vocab_size, hidden_size, state_size, num_hidden_layers, conv_kernel and intermediate_size must be positive, got %d, %d, %d, %d, %d, %d",
			c.VocabSize, c.HiddenSize, c.StateSize, c.NumHiddenLayers, c.ConvKernel, c.IntermediateSize)
	case c.HiddenAct != "silu" && c.HiddenAct != "swish":
		return fmt.Errorf("hidden_act %q: magc's Mamba layer uses silu", c.HiddenAct)
	case c.UseBias:
		return fmt.Errorf("use_bias true (in_proj/out_proj biases): magc's Mamba layer has none")
	}
	rank := string(c.TimeStepRank)
	switch {
	case rank == "" || rank == `"auto"`:
		c.dtRank = (c.HiddenSize + 15) / 16
	default:
		r, err := strconv.Atoi(rank)
		if err != nil || r <= 0 {
			return fmt.Errorf("time_step_rank %s: want a positive integer or \"auto\"", rank)
		}
		c.dtRank = r
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}
