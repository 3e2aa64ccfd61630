// Package pipeline is magc's compiler from end to end: one table of named
// phases, from the model graph as written to plan.json and the kernel source
// of a target. As in the Go compiler's ssa pass list, the table is data:
// Run times every phase, verifies what it built when asked (tests do), and
// hands it to a dump hook (magc compile --dump PHASE).
package pipeline

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/plan"
)

// Config carries the options of every phase.
type Config struct {
	// Passes are the graph passes' options (mode, training, remat...).
	Passes passes.Config
	// NoFuse compiles one kernel per op: the unfused baseline.
	NoFuse bool
	// Mem bounds the arena: its budget and largest segment.
	Mem passes.MemOptions
	// Target is the kernel language: "msl" (the default) or "cuda".
	Target string
	// Verify checks each phase's result before the next runs.
	Verify bool
	// Dump, when set, receives the unit after each phase.
	Dump func(phase string, u *Unit)
}

// Unit is what the phases build: each fills in its own field.
type Unit struct {
	Graph     *ir.Graph              // the graph passes' result
	Sched     *passes.Schedule       // fuse: ops grouped into kernels
	Prog      *codegen.Program       // lower: kernels in kernel IR and their launches
	Source    string                 // render: the kernels in the target's language
	Memory    *codegen.Memory        // plan: every value's place in the arena
	Plan      *plan.Plan             // plan: plan.json
	Times     []Timing               // how long each phase took
	Stats     passes.Stats           // what the graph passes measured
	Precision *passes.PrecisionStats // precision: what is stored in a half type
	Target    string                 // the language of Source
	model     *ir.Graph              // as written
	cfg       passes.Config          // the graph passes' options as they ran
	ranTo     int                    // phases done
	mem       passes.MemOptions      // the arena bounds planned against
}

// Timing is how long one phase took.
type Timing struct {
	Phase string
	Dur   time.Duration
}

// Phase is one entry of the table.
type Phase struct {
	Name string
	Run  func(u *Unit, c *Config) error
	// Verify checks the phase's result.
	Verify func(u *Unit) error
	// Dump prints the phase's result.
	Dump func(w io.Writer, u *Unit) error
}

// Phases is the compiler, in order.
var Phases = []Phase{
	graphPhase("qlora", passes.QLoRA),         // LoRA targets become frozen NF4 + adapters
	graphPhase("trainstep", passes.TrainStep), // loss, autodiff, clipping, AdamW
	graphPhase("remat", passes.Remat),         // what to keep and what to recompute
	{Name: "fuse", Run: fuse, Verify: verifyFuse, Dump: dumpFuse},
	{Name: "precision", Run: precision, Dump: dumpPrecision}, // what is stored in a half type
	{Name: "lower", Run: lower, Verify: verifyLower, Dump: dumpLower},
	{Name: "render", Run: render, Dump: func(w io.Writer, u *Unit) error { _, err := io.WriteString(w, u.Source); return err }},
	{Name: "plan", Run: placeMemory, Verify: func(u *Unit) error { return plan.Validate(u.Plan) }, Dump: func(w io.Writer, u *Unit) error { return plan.WriteTable(w, u.Plan) }},
}

// Names lists the phases, for --dump's help and errors.
func Names() []string {
	names := make([]string, len(Phases))
	for i, p := range Phases {
		names[i] = p.Name
	}
	return names
}

func graphPhase(name string, fn func(*ir.Graph, *passes.Config) (*ir.Graph, error)) Phase {
	return Phase{
		Name: name,
		Run: func(u *Unit, c *Config) error {
			g, err := fn(u.Graph, &u.cfg)
			u.Graph = g
			return err
		},
		Verify: func(u *Unit) error { return ir.Verify(u.Graph) },
		Dump:   func(w io.Writer, u *Unit) error { return ir.Print(w, u.Graph) },
	}
}

func fuse(u *Unit, c *Config) error {
	u.Sched = passes.Fuse(u.Graph, !c.NoFuse)
	return nil
}

func precision(u *Unit, c *Config) error {
	st, err := passes.Precision(u.Graph, u.Sched, u.cfg.Precision)
	u.Precision = st
	return err
}

func lower(u *Unit, c *Config) error {
	p, err := codegen.Compile(u.Graph, u.Sched)
	u.Prog = p
	return err
}

func render(u *Unit, c *Config) error {
	src, err := codegen.Render(u.Prog.Module, u.Target)
	u.Source = src
	return err
}

// placeMemory plans the arena. Over the budget it keeps the memory result
// (it names what is live at the peak) and returns the *passes.BudgetError.
func placeMemory(u *Unit, c *Config) error {
	m, err := codegen.PlaceMemory(u.Graph, u.Prog, u.mem)
	u.Memory = m
	if m != nil && m.Plan != nil {
		u.Plan = codegen.BuildPlan(u.Graph, u.Prog, m)
		u.Plan.Precision = u.Precision.Precision
	}
	return err
}

// MaxNodes is the most ops a model may have for Run to compile it. Compile
// time and memory grow linearly with the ops, about 0.4 ms of CPU and 30 KB
// each (32,000 layers of BenchmarkCompileLayers, 128,000 ops, took 47 s of
// CPU and 4 GB), so the limit keeps a compile near a minute and 5 GB; the
// largest shipped model, scm3b, has 1,253 ops.
const MaxNodes = 150_000

// Run takes model through the phases up to and including until ("" for all).
func Run(model *ir.Graph, c *Config, until string) (*Unit, error) {
	if n := len(model.Nodes); n > MaxNodes {
		return nil, fmt.Errorf("the model has %d ops, more than the %d magc compiles: compile time and memory grow with the ops, to about a minute and 5 GB at the limit", n, MaxNodes)
	}
	last := len(Phases) - 1
	if until != "" {
		if last = phaseIndex(until); last < 0 {
			return nil, fmt.Errorf("no phase %q (phases: %v)", until, Names())
		}
	}
	if m := cmp.Or(c.Passes.Mode, model.Train.Mode); m != "full" && m != "qlora" {
		return nil, fmt.Errorf("unknown training mode %q (want full or qlora)", m)
	}
	u := &Unit{Graph: model, cfg: c.Passes, mem: c.Mem, Target: cmp.Or(c.Target, "msl")}
	err := u.runTo(c, last)
	return u, err
}

func phaseIndex(name string) int {
	for i, p := range Phases {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// runTo runs the phases after those done up to and including last.
func (u *Unit) runTo(c *Config, last int) error {
	for i := u.ranTo; i <= last; i++ {
		p := Phases[i]
		start := time.Now()
		err := p.Run(u, c)
		u.Times = append(u.Times, Timing{p.Name, time.Since(start)})
		u.ranTo = i + 1
		u.Stats = u.cfg.Stats
		if err != nil {
			var be *passes.BudgetError
			if errors.As(err, &be) {
				return err
			}
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		if c.Verify && p.Verify != nil {
			if err := p.Verify(u); err != nil {
				return fmt.Errorf("after %s: %w", p.Name, err)
			}
		}
		if c.Dump != nil {
			c.Dump(p.Name, u)
		}
	}
	return nil
}

// DumpPhase prints u as the named phase left it.
func DumpPhase(w io.Writer, name string, u *Unit) error {
	i := phaseIndex(name)
	if i < 0 {
		return fmt.Errorf("no phase %q", name)
	}
	return Phases[i].Dump(w, u)
}

// fork copies a unit that has run the phases before i, so that the rest
// can run again with other options.
func (u *Unit) fork(i int) *Unit {
	v := &Unit{Graph: u.Graph, cfg: u.cfg, mem: u.mem, Target: u.Target, ranTo: i}
	v.Times = append(v.Times, u.Times[:i]...)
	return v
}
