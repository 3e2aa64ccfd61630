package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"

	"github.com/scm-magellano/magc/gen"
	"github.com/scm-magellano/magc/hf"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

type exportCmd struct {
	Checkpoint   string `required:"" help:"The training checkpoint to export." placeholder:"FILE"`
	Base         string `help:"The base weights a QLoRA checkpoint was trained from (magc import's weights.safetensors)." placeholder:"FILE"`
	Model        string `help:"The model file (default: the checkpoint's model, built in)."`
	Out          string `short:"o" required:"" help:"Output directory." placeholder:"DIR"`
	AdaptersOnly bool   `name:"adapters-only" help:"Write the LoRA adapters alone (adapters.safetensors, rank, alpha and targets in its metadata)."`
}

func (c *exportCmd) Run(e *env) error {
	_, info, err := gen.ReadCheckpointInfo(c.Checkpoint)
	if err != nil {
		return err
	}
	model := cmp.Or(c.Model, info.Model)
	g, err := loadModel(model, "1", 1) // the weights do not depend on batch or context
	if err != nil {
		return err
	}
	if g.Name != info.Model {
		return fmt.Errorf("%s is a checkpoint of model %s, not %s", c.Checkpoint, info.Model, g.Name)
	}
	u, err := pipeline.Run(g, &pipeline.Config{Passes: passes.Config{Mode: info.Mode, LoRARank: info.LoRARank}}, "qlora")
	if err != nil {
		return err
	}
	params, err := gen.LoadWeights(u.Graph, 0, c.Base, c.Checkpoint)
	if err != nil {
		return err
	}
	if c.AdaptersOnly {
		if err := os.MkdirAll(c.Out, 0o755); err != nil {
			return err
		}
		path := filepath.Join(c.Out, "adapters.safetensors")
		if err := hf.WriteAdapters(u.Graph, params, path); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote the LoRA adapters of %s (rank %d, alpha %g) to %s\n", g.Name, u.Graph.Train.Rank, u.Graph.Train.Alpha, path)
		return nil
	}
	modelDir := ""
	if path, _ := models.Resolve(model); fileExists(path) {
		modelDir = filepath.Dir(path)
	}
	cfg, raw, err := hf.ConfigFor(g, modelDir)
	if err != nil {
		return err
	}
	weights, err := hf.Merge(u.Graph, params)
	if err != nil {
		return err
	}
	if err := hf.Export(cfg, raw, weights, modelDir, c.Out); err != nil {
		return err
	}
	what := "weights"
	if info.Mode == "qlora" {
		what = "weights with the LoRA adapters merged into the dequantised NF4 weights"
	}
	fmt.Fprintf(e.stdout, "wrote %s as a Hugging Face MambaForCausalLM (%s) to %s\n", g.Name, what, c.Out)
	return nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
