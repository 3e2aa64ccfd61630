// Package passes holds magc's graph passes (qlora, trainstep with autodiff
// inside, remat), fusion, the memory planner and the cost model. The
// pipeline package runs them, in the order of its phase table.
package passes

import (
	"github.com/scm-magellano/magc/ir"
)

// Config carries the compile options passes read.
type Config struct {
	// Mode is "full" or "qlora"; empty takes the model file's train line.
	Mode string
	// LoRARank overrides the model's LoRA rank when positive.
	LoRARank int
	// Train builds the training step (loss, backward, clipping, AdamW);
	// off, the graph stays forward-only (eval).
	Train bool
	// LossScale builds the train step for dynamic loss scaling: the
	// backward is seeded with the f32 scalar input "loss_scale", the
	// gradients are unscaled inside the clip factor, and a step whose
	// gradient norm is not finite leaves weights and moments unchanged.
	// f16 storage turns it on (see Scaled).
	LossScale bool
	// Optimizer replaces the mode's defaults (DefaultOptimizer) when set.
	Optimizer *Optimizer
	// Remat is the activation checkpointing policy: "none" (the default),
	// "layer" or "auto" (see Remat).
	Remat string
	// MemoryBudget is the bytes of kept activations Remat "auto" must fit.
	MemoryBudget int64
	// Precision is the storage precision of activations and the gradients
	// between layers: "f32" (or ""), "f16" or "bf16" (see Precision).
	Precision string
	// LossChunkBytes bounds the logits of one chunk of the loss (see
	// chunkLoss); 0 is 256 MiB.
	LossChunkBytes int64
	// Stats receives what the passes measured.
	Stats Stats
}

func (c *Config) mode(g *ir.Graph) string {
	if c.Mode != "" {
		return c.Mode
	}
	return g.Train.Mode
}

// Scaled reports whether the train step is built for loss scaling: when
// asked, and always for f16 storage, whose range would otherwise lose
// gradients below 2^-24.
func (c *Config) Scaled() bool { return c.LossScale || c.Precision == "f16" }
