// Package passes holds magc's graph passes and the list that runs them.
//
// As in the Go compiler's ssa pass table, the list is data: each pass has a
// name, a function and whether it may be skipped. Run verifies the graph
// after every pass when asked (tests do), times each pass, and can hand the
// graph after any pass to a dump hook (magc compile --dump PASS).
package passes

import (
	"fmt"
	"time"

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
	// Optimizer replaces the mode's defaults (DefaultOptimizer) when set.
	Optimizer *Optimizer
	// Remat is the activation checkpointing policy: "none" (the default),
	// "layer" or "auto" (see Remat).
	Remat string
	// MemoryBudget is the bytes of kept activations Remat "auto" must fit.
	MemoryBudget int64
	// LossChunkBytes bounds the logits of one chunk of the loss (see
	// chunkLoss); 0 is 256 MiB.
	LossChunkBytes int64
	// Verify runs ir.Verify after every pass.
	Verify bool
	// Dump, when set, receives the graph after each pass.
	Dump func(pass string, g *ir.Graph)
	// Stats receives what the passes measured (set by Run's passes).
	Stats Stats
}

func (c *Config) mode(g *ir.Graph) string {
	if c.Mode != "" {
		return c.Mode
	}
	return g.Train.Mode
}

// Pass is one entry of the pass list.
type Pass struct {
	Name     string
	Fn       func(*ir.Graph, *Config) (*ir.Graph, error)
	Required bool
}

// List is the pipeline, in order.
var List = []Pass{
	{Name: "qlora", Fn: QLoRA, Required: true},
	{Name: "trainstep", Fn: TrainStep, Required: true}, // autodiff inside
	{Name: "remat", Fn: Remat},
}

// Timing is how long one pass took.
type Timing struct {
	Pass string
	Dur  time.Duration
}

// Run applies every pass of List to g.
func Run(g *ir.Graph, cfg *Config) (*ir.Graph, []Timing, error) {
	if m := cfg.mode(g); m != "full" && m != "qlora" {
		return nil, nil, fmt.Errorf("unknown training mode %q (want full or qlora)", m)
	}
	var times []Timing
	for _, p := range List {
		start := time.Now()
		out, err := p.Fn(g, cfg)
		if err != nil {
			return nil, times, fmt.Errorf("pass %s: %w", p.Name, err)
		}
		times = append(times, Timing{p.Name, time.Since(start)})
		if cfg.Verify {
			if err := ir.Verify(out); err != nil {
				return nil, times, fmt.Errorf("after pass %s: %w", p.Name, err)
			}
		}
		if cfg.Dump != nil {
			cfg.Dump(p.Name, out)
		}
		g = out
	}
	return g, times, nil
}

// Names lists the passes, for --dump's help and errors.
func Names() []string {
	names := make([]string, len(List))
	for i, p := range List {
		names[i] = p.Name
	}
	return names
}
