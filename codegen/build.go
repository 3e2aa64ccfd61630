package codegen

import (
	"errors"
	"time"

	"github.com/scm-magellano/magc/codegen/msl"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Lowered is a graph compiled for a device: its kernel schedule, the
// kernels and their MSL source, and the memory plan of its arena.
type Lowered struct {
	Graph  *ir.Graph
	Sched  *passes.Schedule
	Prog   *Program
	Source string
	Memory *Memory
	// Times of fusion, lowering (with rendering) and planning.
	FuseTime, LowerTime, PlanTime time.Duration
}

// Lower fuses (unless fuse is false), lowers, renders and plans g. Over the
// arena budget it returns the lowered graph with the *passes.BudgetError.
func Lower(g *ir.Graph, fuse bool, mem passes.MemOptions) (*Lowered, error) {
	l := &Lowered{Graph: g}
	t := time.Now()
	l.Sched = passes.Fuse(g, fuse)
	l.FuseTime = time.Since(t)
	t = time.Now()
	prog, err := Compile(g, l.Sched)
	if err != nil {
		return nil, err
	}
	if l.Source, err = msl.Render(prog.Module); err != nil {
		return nil, err
	}
	l.Prog = prog
	l.LowerTime = time.Since(t)
	t = time.Now()
	l.Memory, err = PlaceMemory(g, prog, mem)
	l.PlanTime = time.Since(t)
	if l.Memory == nil || l.Memory.Plan == nil {
		return nil, err
	}
	return l, err
}

// Plan is plan.json for the lowered graph.
func (l *Lowered) Plan() *Plan { return BuildPlan(l.Graph, l.Prog, l.Memory) }

// Built is a model taken through the whole pipeline.
type Built struct {
	*Lowered
	Times []passes.Timing
	Stats passes.Stats
	// ActivationBudget is the kept-activation budget remat "auto" settled on.
	ActivationBudget int64
}

// Build runs the pass pipeline on a model and lowers the result. With remat
// "auto" and no activation budget of its own (cfg.MemoryBudget 0) the remat
// pass and the planner work together: Build searches for the most kept
// activations (the least recomputation) whose whole arena the planner fits
// in mem.Budget.
func Build(model *ir.Graph, cfg passes.Config, fuse bool, mem passes.MemOptions) (*Built, error) {
	if cfg.Remat != "auto" || cfg.MemoryBudget > 0 {
		return buildOnce(model, cfg, fuse, mem)
	}
	none := cfg
	none.Remat = "none"
	first, err := buildOnce(model, none, fuse, mem)
	if err == nil {
		first.ActivationBudget = first.Stats.ActivationBytes // everything kept fits
		return first, nil
	}
	if !isBudget(err) {
		return first, err
	}
	// Binary search on the activation budget, every probe a real plan:
	// first the least memory (recompute all it can), then narrowing the
	// range between what fits (lo) and what does not (hi).
	cfg.MemoryBudget = 1
	best, err := buildOnce(model, cfg, fuse, mem)
	if err != nil {
		return best, err
	}
	lo, hi := int64(1), first.Stats.ActivationBytes
	for i := 0; i < 8 && hi-lo > hi/64; i++ {
		cfg.MemoryBudget = lo + (hi-lo)/2
		b, err := buildOnce(model, cfg, fuse, mem)
		switch {
		case err == nil:
			best, lo = b, cfg.MemoryBudget
		case isBudget(err):
			hi = cfg.MemoryBudget
		default:
			return nil, err
		}
	}
	best.ActivationBudget = lo
	return best, nil
}

func buildOnce(model *ir.Graph, cfg passes.Config, fuse bool, mem passes.MemOptions) (*Built, error) {
	g, times, err := passes.Run(model, &cfg)
	if err != nil {
		return nil, err
	}
	l, err := Lower(g, fuse, mem)
	if l == nil {
		return nil, err
	}
	return &Built{Lowered: l, Times: times, Stats: cfg.Stats}, err
}

func isBudget(err error) bool {
	var be *passes.BudgetError
	return errors.As(err, &be)
}
