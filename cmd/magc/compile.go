package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scm-magellano/magc/codegen"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train"
)

// modelArg is the model a command takes as its argument.
type modelArg struct {
	Model string `arg:"" help:"The .graph model file, or the name of a built-in model (${models})."`
}

// modelFlags adjust the model: one set for every command that loads one
// (compile, run, eval, bench), checked the same way for each.
type modelFlags struct {
	Mode      string `help:"Training mode: full (all weights trainable) or qlora (frozen NF4 + LoRA). Default: the model's train line." enum:"full,qlora," default:""`
	Batch     string `help:"Override the model's batch size (its 'batch' constant); 'max' (compile, bench) finds the largest that fits the arena."`
	Seq       *int   `help:"Override the context length (the model's 'context' constant)."`
	LoRARank  *int   `name:"lora-rank" help:"Override the LoRA rank r of qlora mode."`
	Precision string `help:"Storage precision of activations and the gradients between layers: f32, f16 (with loss scaling) or bf16. Arithmetic, weights, optimizer state and reductions stay f32. Default: f32, or the --resume checkpoint's." enum:"f32,f16,bf16," default:""`
}

// check refuses values no model can take: a flag given is a flag meant,
// so zero is refused rather than read as "the default".
func (m *modelFlags) check() error {
	if m.Batch != "" && m.Batch != "max" {
		if b, err := strconv.Atoi(m.Batch); err != nil || b < 1 {
			return fmt.Errorf("--batch must be a positive whole number (or max), got %q", m.Batch)
		}
	}
	if m.Seq != nil && *m.Seq < 1 {
		return fmt.Errorf("--seq must be positive, got %d", *m.Seq)
	}
	if m.LoRARank != nil && *m.LoRARank < 1 {
		return fmt.Errorf("--lora-rank must be positive, got %d", *m.LoRARank)
	}
	return nil
}

// seq is --seq, or 0 when not given.
func (m *modelFlags) seq() int {
	if m.Seq == nil {
		return 0
	}
	return *m.Seq
}

// load parses a model file, applying the overrides.
func (m *modelFlags) load(model string) (*ir.Graph, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	return loadModel(model, m.Batch, m.seq())
}

// loadModel parses a model (a file or a built-in name) with the batch and
// context constants overridden when given (checked by modelFlags.check).
func loadModel(model, batch string, seq int) (*ir.Graph, error) {
	over := map[string]int{}
	if batch != "" && batch != "max" {
		b, err := strconv.Atoi(batch)
		if err != nil || b < 1 {
			return nil, fmt.Errorf("--batch must be a positive whole number (or max), got %q", batch)
		}
		over["batch"] = b
	}
	if seq > 0 {
		over["context"] = seq
	}
	path, read := models.Resolve(model)
	g, err := lang.Load(path, lang.Options{Overrides: over, ReadFile: read})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no model file %s, and no built-in model of that name (built in: %s)", model, strings.Join(models.Names(), ", "))
	}
	if err != nil {
		return nil, err
	}
	for name := range over {
		if _, ok := g.Consts[name]; !ok {
			return nil, fmt.Errorf("%s has no %q constant to override", model, name)
		}
	}
	return g, nil
}

func (m *modelFlags) config() passes.Config {
	var rank int
	if m.LoRARank != nil {
		rank = *m.LoRARank
	}
	return passes.Config{Mode: m.Mode, LoRARank: rank, Precision: m.Precision}
}

type compileCmd struct {
	modelArg
	modelFlags
	Target     string `default:"msl" enum:"msl,cuda" help:"Kernel language: msl (Metal, kernels.metal) or cuda (NVIDIA, kernels.cu)."`
	Out        string `short:"o" help:"Write the kernels (kernels.metal or kernels.cu), plan.json and report.json into this directory." placeholder:"DIR"`
	Report     string `help:"Write report.json (stable keys for tools) to this file." placeholder:"FILE"`
	Dump       string `help:"Print what this phase built ('parse' for the graph as written; phases: ${phases})." placeholder:"PHASE"`
	Forward    bool   `help:"Compile only the forward pass (default: the whole training step)."`
	NoFuse     bool   `help:"One kernel per op: the unfused baseline."`
	Remat      string `default:"none" enum:"none,layer,auto" help:"Activation checkpointing: none, layer (recompute each checkpoint region) or auto (fit --arena)."`
	Arena      string `default:"10.6GB" help:"Arena budget (the M4 16 GB working set)."`
	MaxBuffer  string `default:"8GiB" help:"Largest arena segment (Metal's maxBufferLength)."`
	Dot        string `help:"Draw the graph with fused kernels as clusters (Graphviz DOT) to this file." placeholder:"FILE"`
	PlotMemory string `help:"Draw the memory plan to this PNG." placeholder:"FILE"`
	EmitGo     string `name:"emit-go" help:"Write a Go package that embeds the kernels and plan and runs them without magc's compiler." placeholder:"DIR"`
	GoPackage  string `name:"go-package" help:"The package name of --emit-go (default: the model name)." placeholder:"NAME"`
	LossScale  bool   `name:"loss-scale" help:"Build the train step for dynamic loss scaling (a loss_scale input; a step with a non-finite gradient norm changes nothing)."`
}

// report is report.json: keys are stable, tools read them.
type report struct {
	Model                string  `json:"model"`
	Mode                 string  `json:"mode"`
	Precision            string  `json:"precision"`
	HalfBytesPerStep     int64   `json:"half_precision_bytes_saved,omitempty"`
	LoRARank             int     `json:"lora_rank,omitempty"`
	ParamsTotal          int64   `json:"params_total"`
	ParamsTrainable      int64   `json:"params_trainable"`
	ParamsFrozenNF4      int64   `json:"params_frozen_nf4"`
	ParamsFrozen         int64   `json:"params_frozen"`
	LayersMamba          int     `json:"layers_mamba"`
	LayersMoE            int     `json:"layers_moe"`
	Vocab                int     `json:"vocab"`
	Context              int     `json:"context"`
	Batch                int     `json:"batch"`
	WeightBytes          int64   `json:"weight_bytes"`
	WeightBytesNF4       int64   `json:"weight_bytes_nf4"`
	TrainableStateBytes  int64   `json:"trainable_state_bytes"`
	Nodes                int     `json:"nodes"`
	FlopsPerStep         int64   `json:"flops_per_step"`
	RecomputeFlops       int64   `json:"recompute_flops"`
	ActivationBytesSaved int64   `json:"activation_bytes_saved"`
	Kernels              int     `json:"kernels,omitempty"`
	Dispatches           int     `json:"dispatches_per_step,omitempty"`
	DispatchesUnfused    int     `json:"dispatches_per_step_unfused,omitempty"`
	GlobalBytes          int64   `json:"global_bytes_per_step,omitempty"`
	GlobalBytesUnfused   int64   `json:"global_bytes_per_step_unfused,omitempty"`
	ArenaBytes           int64   `json:"arena_bytes,omitempty"`
	LiveLowerBound       int64   `json:"live_lower_bound_bytes,omitempty"`
	ArenaBudget          int64   `json:"arena_budget_bytes,omitempty"`
	ArenaSegments        int     `json:"arena_segments,omitempty"`
	PlanMS               float64 `json:"plan_ms,omitempty"`
	// A roofline prediction for an M4, not a measurement (see passes.M4).
	PredictedM4StepMS     float64            `json:"predicted_m4_step_ms,omitempty"`
	PredictedM4TokensPerS float64            `json:"predicted_m4_tokens_per_s,omitempty"`
	PassMS                map[string]float64 `json:"pass_ms"`
}

func (c *compileCmd) Run(e *env) error {
	start := time.Now()
	g, err := c.load(c.Model)
	if err != nil {
		return err
	}
	parseTime := time.Since(start)
	mem, err := c.memOptions()
	if err != nil {
		return err
	}
	if err := checkValueSizes(g, mem.MaxSegment); err != nil {
		return err
	}
	cfg := &pipeline.Config{Passes: c.config(), NoFuse: c.NoFuse, Mem: mem, Target: c.Target}
	cfg.Passes.Train, cfg.Passes.Remat = !c.Forward, c.Remat
	if c.LossScale && c.Forward {
		return fmt.Errorf("--loss-scale is for the train step; --forward has no backward to scale")
	}
	cfg.Passes.LossScale = c.LossScale
	if c.Dump != "" {
		return c.dump(e, g, cfg)
	}
	if c.Batch == "max" {
		if g, err = c.maxBatch(e, cfg); err != nil {
			return err
		}
	}
	u, err := pipeline.Compile(g, cfg)
	if err != nil {
		return c.explain(err, cfg)
	}
	r := buildReport(g, u.Graph)
	r.PassMS["parse"] = ms(parseTime)
	for _, t := range u.Times {
		r.PassMS[t.Phase] = ms(t.Dur)
	}
	r.RecomputeFlops, r.ActivationBytesSaved = u.Stats.RecomputeFLOPs, u.Stats.ActivationBytesSaved
	r.Precision, r.HalfBytesPerStep = u.Precision.Precision, u.Precision.BytesSaved
	unfused := passes.Fuse(u.Graph, false)
	r.Kernels, r.Dispatches, r.DispatchesUnfused = len(u.Prog.Module.Kernels), len(u.Prog.Dispatches), len(unfused.Groups)
	// The split reductions' partials are traffic the schedule does not see.
	r.GlobalBytes, r.GlobalBytesUnfused = u.Sched.GlobalBytes()+u.Prog.ScratchBytes(), unfused.GlobalBytes()
	p := u.Memory.Plan
	r.ArenaBytes, r.LiveLowerBound, r.ArenaBudget, r.ArenaSegments, r.PlanMS = p.ArenaBytes, p.LowerBound, mem.Budget, len(p.Segments), r.PassMS["plan"]
	var m4 time.Duration
	for i := range u.Prog.Dispatches {
		m4 += passes.M4.Time(u.Prog.Dispatches[i].Cost())
	}
	r.PredictedM4StepMS = ms(m4)
	if !c.Forward {
		r.PredictedM4TokensPerS = float64(r.Batch*r.Context) / m4.Seconds()
	}
	if err := c.write(u, r); err != nil {
		return err
	}
	printSummary(e.stdout, c.Model, r)
	if c.Report != "" {
		return train.WriteJSON(c.Report, r)
	}
	return nil
}

// dump prints what the phase --dump names built.
func (c *compileCmd) dump(e *env, g *ir.Graph, cfg *pipeline.Config) error {
	if c.Dump == "parse" {
		return ir.Print(e.stdout, g)
	}
	if !slices.Contains(pipeline.Names(), c.Dump) {
		return fmt.Errorf("--dump %s: no such phase (phases: parse, %s)", c.Dump, strings.Join(pipeline.Names(), ", "))
	}
	u, err := pipeline.Run(g, cfg, c.Dump)
	if err != nil && (u == nil || !isBudget(err)) {
		return err
	}
	return pipeline.DumpPhase(e.stdout, c.Dump, u)
}

func isBudget(err error) bool {
	var be *passes.BudgetError
	return errors.As(err, &be)
}

func (c *compileCmd) memOptions() (passes.MemOptions, error) {
	arena, err := parseBytes(c.Arena)
	if err != nil || arena <= 0 {
		return passes.MemOptions{}, fmt.Errorf("--arena must be a positive size (like 10.6GB or 8GiB), got %q", c.Arena)
	}
	maxBuf, err := parseBytes(c.MaxBuffer)
	if err != nil || maxBuf <= 0 {
		return passes.MemOptions{}, fmt.Errorf("--max-buffer must be a positive size (like 8GiB or 512MB), got %q", c.MaxBuffer)
	}
	return passes.MemOptions{Align: passes.DefaultMemAlign, MaxSegment: maxBuf, Budget: arena}, nil
}

// fits reports whether the model at a batch size has a plan within the
// budget; with remat auto it asks for the least memory the policy can reach.
func (c *compileCmd) fits(batch int, cfg *pipeline.Config) (bool, *ir.Graph, error) {
	g, err := loadModel(c.Model, fmt.Sprint(batch), c.seq())
	if err != nil {
		return false, nil, err
	}
	probe := *cfg
	if probe.Passes.Remat == "auto" {
		probe.Passes.MemoryBudget = 1
	}
	_, err = pipeline.Compile(g, &probe)
	if isBudget(err) {
		return false, g, nil
	}
	return err == nil, g, err
}

// maxBatchCap is the largest batch --batch max tries.
const maxBatchCap = 1 << 14

// maxBatch finds the largest batch whose plan fits the budget: doubling,
// then bisecting.
func (c *compileCmd) maxBatch(e *env, cfg *pipeline.Config) (*ir.Graph, error) {
	ok, g, err := c.fits(1, cfg)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("not even batch 1 fits the %s arena budget (try --remat auto, or a shorter --seq)", gigabytes(cfg.Mem.Budget))
	}
	lo, hi := 1, 0 // lo fits; hi, once found, does not
	for b := 2; hi == 0 && b <= maxBatchCap; b *= 2 {
		fit, gb, err := c.fits(b, cfg)
		if err != nil {
			return nil, err
		}
		if fit {
			lo, g = b, gb
		} else {
			hi = b
		}
	}
	for hi > lo+1 {
		mid := (lo + hi) / 2
		fit, gb, err := c.fits(mid, cfg)
		if err != nil {
			return nil, err
		}
		if fit {
			lo, g = mid, gb
		} else {
			hi = mid
		}
	}
	if hi == 0 {
		fmt.Fprintf(e.stderr, "batch %d fits %s, and the search stops there: a larger batch may fit too (give --batch N to try one)\n", lo, gigabytes(cfg.Mem.Budget))
		return g, nil
	}
	fmt.Fprintf(e.stderr, "the largest batch that fits %s is %d\n", gigabytes(cfg.Mem.Budget), lo)
	return g, nil
}

// explain adds to an over-budget error what would fit.
func (c *compileCmd) explain(err error, cfg *pipeline.Config) error {
	if !isBudget(err) {
		return err
	}
	var advice []string
	if cfg.Passes.Remat != "auto" {
		advice = append(advice, "--remat auto recomputes activations to fit the budget")
	}
	if ok, _, ferr := c.fits(1, cfg); ferr == nil && ok {
		advice = append(advice, "--batch max finds the largest batch that fits")
	}
	if len(advice) == 0 {
		return err
	}
	return fmt.Errorf("%w\nwhat would fit: %s", err, strings.Join(advice, "; "))
}

// write emits what the flags ask for: -o DIR, --dot, --plot-memory, --emit-go.
func (c *compileCmd) write(u *pipeline.Unit, r *report) error {
	g, prog := u.Graph, u.Prog
	if c.PlotMemory != "" {
		if err := passes.PlotMemory(u.Memory.Plan, c.PlotMemory, g.Name+" memory plan"); err != nil {
			return err
		}
	}
	if c.Dot != "" {
		names := make([]string, len(prog.Dispatches))
		for i, d := range prog.Dispatches {
			names[i] = d.Kernel
		}
		f, err := os.Create(c.Dot)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := codegen.WriteDot(f, g, u.Sched, names); err != nil {
			return err
		}
	}
	if c.EmitGo != "" {
		pkg := cmp.Or(c.GoPackage, codegen.GoPackageName(g.Name))
		if err := codegen.EmitGo(c.EmitGo, pkg, u.Plan, map[string]string{u.Target: u.Source}); err != nil {
			return err
		}
	}
	if c.Out == "" {
		return nil
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Out, plan.SourceFile(u.Target)), []byte(u.Source), 0o644); err != nil {
		return err
	}
	if err := train.WriteJSON(filepath.Join(c.Out, "plan.json"), u.Plan); err != nil {
		return err
	}
	return train.WriteJSON(filepath.Join(c.Out, "report.json"), r)
}

// parseBytes reads a size such as 10.6GB, 8GiB, 512MB or a plain byte count.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		scale  float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || !(f >= 0 && f*u.scale < math.MaxInt64) {
				return 0, fmt.Errorf("cannot read %q as a size (like 10.6GB or 8GiB)", s)
			}
			return int64(f * u.scale), nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cannot read %q as a size (like 10.6GB or 8GiB)", s)
	}
	return n, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// buildReport describes the compiled graph; params_total counts the model's
// own weights (src), not the LoRA adapters added for training.
func buildReport(src, g *ir.Graph) *report {
	return &report{
		Model:               g.Name,
		Mode:                g.Train.Mode,
		LoRARank:            g.Train.Rank,
		ParamsTotal:         src.ParamCount(),
		ParamsTrainable:     g.ParamCount(ir.Trainable),
		ParamsFrozenNF4:     g.ParamCount(ir.FrozenNF4),
		ParamsFrozen:        g.ParamCount(ir.Frozen),
		LayersMamba:         g.LayerCount("mamba"),
		LayersMoE:           g.LayerCount("moe"),
		Vocab:               g.Consts["vocab"],
		Context:             g.Consts["context"],
		Batch:               g.Consts["batch"],
		WeightBytes:         g.ParamBytes(ir.Trainable, ir.Frozen, ir.FrozenNF4),
		WeightBytesNF4:      g.ParamBytes(ir.FrozenNF4),
		TrainableStateBytes: 3 * g.ParamBytes(ir.Trainable), // weights + AdamW m and v, f32
		Nodes:               len(g.Nodes),
		FlopsPerStep:        passes.FlopsPerStep(g),
		PassMS:              map[string]float64{},
	}
}

func printSummary(w io.Writer, file string, r *report) {
	mode := r.Mode
	if r.Mode == "qlora" {
		mode = fmt.Sprintf("qlora (LoRA r=%d)", r.LoRARank)
	}
	fmt.Fprintf(w, "%s (%s): %s mode\n", r.Model, file, mode)
	fmt.Fprintf(w, "  layers       %d mamba, %d moe\n", r.LayersMamba, r.LayersMoE)
	fmt.Fprintf(w, "  shape        vocab %d, context %d, batch %d\n", r.Vocab, r.Context, r.Batch)
	fmt.Fprintf(w, "  parameters   %s total\n", millions(r.ParamsTotal))
	fmt.Fprintf(w, "    trainable  %s\n", millions(r.ParamsTrainable))
	fmt.Fprintf(w, "    frozen NF4 %s\n", millions(r.ParamsFrozenNF4))
	fmt.Fprintf(w, "    frozen     %s\n", millions(r.ParamsFrozen))
	fmt.Fprintf(w, "  weights      %s (NF4 %s)\n", gigabytes(r.WeightBytes), gigabytes(r.WeightBytesNF4))
	fmt.Fprintf(w, "  trainable + AdamW state %s\n", gigabytes(r.TrainableStateBytes))
	if r.Dispatches == 0 {
		return
	}
	if r.Precision == "f32" {
		fmt.Fprintf(w, "  precision    f32\n")
	} else {
		fmt.Fprintf(w, "  precision    %s activations and gradients between layers, f32 arithmetic and state (%s fewer bytes written per step)\n",
			r.Precision, gigabytes(r.HalfBytesPerStep))
	}
	fmt.Fprintf(w, "  kernels      %d, launched %d times per step (unfused: %d, %.2f× more)\n",
		r.Kernels, r.Dispatches, r.DispatchesUnfused, float64(r.DispatchesUnfused)/float64(r.Dispatches))
	fmt.Fprintf(w, "  traffic      %s per step (unfused: %s, %.2f× more)\n", gigabytes(r.GlobalBytes), gigabytes(r.GlobalBytesUnfused),
		float64(r.GlobalBytesUnfused)/float64(max(r.GlobalBytes, 1)))
	fmt.Fprintf(w, "  arena        %s in %d segment(s), lower bound %s, budget %s\n",
		gigabytes(r.ArenaBytes), r.ArenaSegments, gigabytes(r.LiveLowerBound), gigabytes(r.ArenaBudget))
	if r.PredictedM4TokensPerS > 0 {
		fmt.Fprintf(w, "  predicted    %.0f ms per step on an M4, %.0f tokens/s (roofline estimate, not a measurement)\n",
			r.PredictedM4StepMS, r.PredictedM4TokensPerS)
	}
}

func millions(n int64) string { return fmt.Sprintf("%.2fM", float64(n)/1e6) }

func gigabytes(n int64) string {
	if n < 1e8 {
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.3f GB", float64(n)/1e9)
}
