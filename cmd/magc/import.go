package main

import (
	"fmt"
	"path/filepath"

	"github.com/scm-magellano/magc/hf"
)

type importCmd struct {
	Dir  string `arg:"" help:"A Hugging Face MambaForCausalLM directory: config.json, model.safetensors (or shards with model.safetensors.index.json), tokenizer.json." placeholder:"DIR"`
	Out  string `short:"o" required:"" help:"Write NAME.graph, weights.safetensors and the checkpoint's config and tokenizer files here." placeholder:"OUTDIR"`
	Name string `help:"The model's name (default: from DIR)."`
}

func (c *importCmd) Run(e *env) error {
	m, err := hf.Import(c.Dir, c.Name)
	if err != nil {
		return err
	}
	if err := m.Write(c.Out, c.Dir); err != nil {
		return err
	}
	cfg := m.Config
	fmt.Fprintf(e.stdout, "imported %s: %d Mamba layers, d_model %d, d_inner %d, d_state %d, vocabulary %d\n",
		m.Name, cfg.NumHiddenLayers, cfg.HiddenSize, cfg.IntermediateSize, cfg.StateSize, cfg.VocabSize)
	fmt.Fprintf(e.stdout, "wrote %s and %s\n", filepath.Join(c.Out, m.Name+".graph"), filepath.Join(c.Out, hf.WeightsFile))
	return nil
}
