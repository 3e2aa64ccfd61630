package pipeline

import (
	"errors"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// Compile takes a model through every phase. With remat "auto" and no
// activation budget of its own (Passes.MemoryBudget 0) the remat phase and
// the planner work together: Compile searches for the most kept activations
// (the least recomputation) whose whole arena fits c.Mem.Budget, each probe a
// real plan; the phases before remat run once. Over the budget it returns
// the unit with the *passes.BudgetError, so the caller can say what is live
// at the peak.
func Compile(model *ir.Graph, c *Config) (*Unit, error) {
	if c.Passes.Remat != "auto" || c.Passes.MemoryBudget > 0 {
		return Run(model, c, "")
	}
	remat := phaseIndex("remat")
	base, err := Run(model, c, Phases[remat-1].Name)
	if err != nil {
		return nil, err
	}
	probe := func(policy string, budget int64) (*Unit, error) {
		u := base.fork(remat)
		u.cfg.Remat, u.cfg.MemoryBudget = policy, budget
		return u, u.runTo(c, len(Phases)-1)
	}
	first, err := probe("none", 0)
	if err == nil {
		return first, nil // everything kept fits
	}
	if !isBudget(err) {
		return first, err
	}
	// Binary search on the activation budget: first the least memory
	// (recompute all it can), then narrowing the range between what fits
	// (lo) and what does not (hi).
	best, err := probe("auto", 1)
	if err != nil {
		return best, err
	}
	lo, hi := int64(1), first.Stats.ActivationBytes
	for i := 0; i < 8 && hi-lo > hi/64; i++ {
		mid := lo + (hi-lo)/2
		u, err := probe("auto", mid)
		switch {
		case err == nil:
			best, lo = u, mid
		case isBudget(err):
			hi = mid
		default:
			return nil, err
		}
	}
	return best, nil
}

func isBudget(err error) bool {
	var be *passes.BudgetError
	return errors.As(err, &be)
}
