package gen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
)

// CheckpointInfo is what a training checkpoint's metadata says.
type CheckpointInfo struct {
	Model, Mode string
	// LoRARank is the rank of its adapters (0 in full mode).
	LoRARank int
}

// ReadCheckpointInfo reads a training checkpoint's model, mode and LoRA rank.
func ReadCheckpointInfo(path string) (*safetensors.File, CheckpointInfo, error) {
	f, err := safetensors.Read(path)
	if err != nil {
		return nil, CheckpointInfo{}, err
	}
	info := CheckpointInfo{Model: f.Metadata["model"], Mode: f.Metadata["mode"]}
	if info.Model == "" || info.Mode == "" {
		return nil, info, fmt.Errorf("%s: not a magc training checkpoint (no model and mode in its metadata)", path)
	}
	for _, name := range f.Names() {
		if strings.HasSuffix(name, ".lora_a") && len(f.Tensors[name].Shape) >= 2 {
			s := f.Tensors[name].Shape
			info.LoRARank = s[len(s)-2]
			break
		}
	}
	return f, info, nil
}

// LoadWeights gives every parameter of g a value: its init rule (seed),
// then the tensors of weights (an imported weights file or --base: f32
// values of NF4 parameters are quantised), then a training checkpoint's
// (its optimizer moments are skipped). A tensor that is not a parameter of
// g is refused by name, and so is a QLoRA checkpoint without base weights
// (it holds only the adapters).
func LoadWeights(g *ir.Graph, seed uint64, weights, checkpoint string) (map[string]*ref.Tensor, error) {
	params, err := ref.InitParams(g, seed)
	if err != nil {
		return nil, err
	}
	load := func(path string, f *safetensors.File) error {
		var unknown []string
		for _, name := range f.Names() {
			if strings.HasSuffix(name, ".adam_m") || strings.HasSuffix(name, ".adam_v") {
				continue
			}
			p := g.Param(name)
			if p == nil {
				unknown = append(unknown, name)
				continue
			}
			if params[name], err = train.FromSafetensors(name, f.Tensors[name], p.Value.Type); err != nil {
				return fmt.Errorf("%s: %v", path, err)
			}
		}
		if len(unknown) > 0 {
			slices.Sort(unknown)
			if len(unknown) > 8 {
				unknown = append(unknown[:8], fmt.Sprintf("and %d more", len(unknown)-8))
			}
			return fmt.Errorf("%s: %s are not parameters of %s", path, strings.Join(unknown, ", "), g.Name)
		}
		return nil
	}
	if weights != "" {
		f, err := safetensors.Read(weights)
		if err != nil {
			return nil, err
		}
		if err := load(weights, f); err != nil {
			return nil, err
		}
	}
	if checkpoint != "" {
		f, info, err := ReadCheckpointInfo(checkpoint)
		if err != nil {
			return nil, err
		}
		if info.Model != g.Name {
			return nil, fmt.Errorf("%s is a checkpoint of model %s, not %s", checkpoint, info.Model, g.Name)
		}
		if info.Mode == "qlora" && weights == "" {
			return nil, fmt.Errorf("%s is a QLoRA checkpoint: it holds the adapters only; give the base weights it was trained from (--base)", checkpoint)
		}
		if err := load(checkpoint, f); err != nil {
			return nil, err
		}
	}
	return params, nil
}
