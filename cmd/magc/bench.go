package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train"
)

// benchCmd times a model's train step on a device: the first step apart
// (it compiles the kernels), then the median of the steady state, and with
// --profile the time of each kernel beside its roofline estimate.
type benchCmd struct {
	modelFlags
	deviceFlag
	Model   string `default:"tiny" help:"Model file or built-in name (${models})."`
	Steps   int    `default:"10" help:"Timed steps after the first."`
	Remat   string `default:"none" enum:"none,layer,auto" help:"Activation checkpointing policy (auto fits the 10.6 GB arena)."`
	NoFuse  bool   `help:"One kernel per op (the unfused baseline)."`
	Profile bool   `help:"Time every kernel of one more step (devices that can: cuda)."`
	JSON    string `name:"json" help:"Write the figures as JSON to this file." placeholder:"FILE"`
	Seed    uint64 `default:"1" help:"Seed of the random weights and tokens."`
}

type benchKernel struct {
	Name        string  `json:"name"`
	Calls       int     `json:"calls"`
	MS          float64 `json:"ms"`
	Share       float64 `json:"share"`
	Bytes       int64   `json:"bytes"`
	FLOPs       int64   `json:"flops"`
	GBps        float64 `json:"gbps"`
	GFLOPs      float64 `json:"gflops"`
	PredictedMS float64 `json:"predicted_ms"`
}

type benchResult struct {
	Model       string        `json:"model"`
	Mode        string        `json:"mode"`
	Precision   string        `json:"precision"`
	Batch       int           `json:"batch"`
	Seq         int           `json:"seq"`
	Device      string        `json:"device"`
	Remat       string        `json:"remat"`
	Launches    int           `json:"launches"`
	ArenaBytes  int64         `json:"arena_bytes"`
	CompileS    float64       `json:"compile_s"`
	FirstStepS  float64       `json:"first_step_s"`
	StepS       []float64     `json:"step_s"`
	StepSMedian float64       `json:"step_s_median"`
	TokensPerS  float64       `json:"tokens_per_s"`
	Kernels     []benchKernel `json:"kernels,omitempty"`
	Note        string        `json:"note"`
}

func (c *benchCmd) Run(e *env) error {
	if c.Steps < 1 {
		return fmt.Errorf("--steps must be positive, got %d", c.Steps)
	}
	dev, err := c.open()
	if err != nil {
		return err
	}
	if dev == nil {
		return fmt.Errorf("bench times compiled kernels: pick --device sim, metal or cuda")
	}
	defer dev.Close()
	start := time.Now()
	g, err := c.model(e)
	if err != nil {
		return err
	}
	cfg := c.config()
	cfg.Train, cfg.Remat = true, c.Remat
	u, err := compileFor(dev, g, cfg, c.NoFuse)
	if err != nil {
		return err
	}
	r := &benchResult{Model: g.Name, Mode: u.Graph.Train.Mode, Precision: u.Plan.Precision, Batch: g.Consts["batch"], Seq: g.Consts["context"],
		Device: dev.Name(), Remat: c.Remat, Launches: len(u.Plan.Dispatches), ArenaBytes: u.Memory.Plan.ArenaBytes,
		CompileS: time.Since(start).Seconds(),
		Note:     "weights are random f32 values (NF4 codes left zero); tokens are random; times are wall-clock per step after a device sync"}
	fmt.Fprintf(e.stderr, "%s (%s, %s), batch %d × %d tokens, %d launches, arena %s, on %s\n",
		r.Model, r.Mode, r.Precision, r.Batch, r.Seq, r.Launches, gigabytes(r.ArenaBytes), r.Device)

	start = time.Now()
	run, err := plan.NewRunner(dev, u.Plan, u.Source)
	if err != nil {
		return err
	}
	if err := c.fill(run, u.Graph); err != nil {
		return err
	}
	if err := run.Step(); err != nil {
		return err
	}
	r.FirstStepS = time.Since(start).Seconds()
	for range c.Steps {
		t := time.Now()
		if err := run.Step(); err != nil {
			return err
		}
		r.StepS = append(r.StepS, time.Since(t).Seconds())
	}
	sorted := slices.Sorted(slices.Values(r.StepS))
	r.StepSMedian = sorted[len(sorted)/2]
	r.TokensPerS = float64(r.Batch*r.Seq) / r.StepSMedian
	fmt.Fprintf(e.stdout, "%s on %s: first step %.3f s (kernel compilation and upload included), then %.4f s median over %d steps: %.0f tokens/s\n",
		r.Model, r.Device, r.FirstStepS, r.StepSMedian, c.Steps, r.TokensPerS)

	if c.Profile {
		p, ok := dev.(device.Profiler)
		if !ok {
			return fmt.Errorf("--profile: %s cannot time its dispatches", dev.Name())
		}
		p.EnableProfile(true)
		err := run.Step()
		times := p.Profile()
		p.EnableProfile(false)
		if err != nil {
			return err
		}
		r.Kernels = kernelTable(u, times, passes.H100)
		printKernels(e, r.Kernels)
	}
	if c.JSON != "" {
		return train.WriteJSON(c.JSON, r)
	}
	return nil
}

// model loads the model; --batch max picks the largest batch whose plan
// fits the 10.6 GB arena, as magc compile does.
func (c *benchCmd) model(e *env) (*ir.Graph, error) {
	if c.Batch != "max" {
		return c.load(c.Model)
	}
	cc := &compileCmd{modelArg: modelArg{Model: c.Model}, modelFlags: c.modelFlags, Remat: c.Remat, NoFuse: c.NoFuse}
	cfg := &pipeline.Config{Passes: c.config(), NoFuse: c.NoFuse, Mem: passes.DefaultMemOptions()}
	cfg.Passes.Train, cfg.Passes.Remat = true, c.Remat
	return cc.maxBatch(e, cfg)
}

// fill writes random weights and tokens: a benchmark needs plausible values
// (no NaNs, no all-zero shortcuts in f32 arithmetic), not trained ones.
func (c *benchCmd) fill(r *plan.Runner, g *ir.Graph) error {
	rng := rand.New(rand.NewPCG(c.Seed, 7))
	for _, p := range g.Params {
		if p.Role == ir.FrozenNF4 || p.Role == ir.OptState {
			continue // NF4 codes of zero bytes dequantise to zero; moments start at zero
		}
		v := make([]float32, p.Value.Type.Shape.Elems())
		for i := range v {
			v[i] = 0.02 * float32(rng.NormFloat64())
		}
		if err := r.WriteFloat32(p.Name, v); err != nil {
			return err
		}
	}
	vocab := int32(g.Consts["vocab"])
	for _, in := range g.Inputs {
		n := in.Value.Type.Shape.Elems()
		var err error
		switch in.Name {
		case "tokens", "targets":
			v := make([]int32, n)
			for i := range v {
				v[i] = rng.Int32N(vocab)
			}
			err = r.WriteInt32(in.Name, v)
		case "lr":
			err = r.WriteFloat32(in.Name, []float32{1e-4})
		case "step":
			err = r.WriteFloat32(in.Name, []float32{1})
		case "loss_scale": // f16's dynamic loss scaling, at its initial scale
			err = r.WriteFloat32(in.Name, []float32{65536})
		default:
			return fmt.Errorf("bench does not know how to feed input %q", in.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// kernelTable joins measured kernel times with each kernel's estimated
// FLOPs and bytes (summed over its launches) and its roofline time on m.
func kernelTable(u *pipeline.Unit, times []device.KernelTime, m passes.Machine) []benchKernel {
	cost := map[string]passes.Cost{}
	predicted := map[string]time.Duration{}
	for i := range u.Prog.Dispatches {
		d := &u.Prog.Dispatches[i]
		c := d.Cost()
		k := cost[d.Kernel]
		k.FLOPs += c.FLOPs
		k.Bytes += c.Bytes
		cost[d.Kernel] = k
		predicted[d.Kernel] += m.Time(c)
	}
	var total time.Duration
	for _, t := range times {
		total += t.Total
	}
	var out []benchKernel
	for _, t := range times {
		c, s := cost[t.Name], t.Total.Seconds()
		out = append(out, benchKernel{Name: t.Name, Calls: t.Calls, MS: 1e3 * s, Share: s / total.Seconds(),
			Bytes: c.Bytes, FLOPs: c.FLOPs, GBps: float64(c.Bytes) / s / 1e9, GFLOPs: float64(c.FLOPs) / s / 1e9,
			PredictedMS: 1e3 * predicted[t.Name].Seconds()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].MS > out[j].MS })
	return out
}

func printKernels(e *env, ks []benchKernel) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kernel\tcalls\tms\tshare\tGB/s\tGFLOP/s\troofline ms\t")
	for i, k := range ks {
		if i == 15 {
			fmt.Fprintf(tw, "(%d more)\t\t\t\t\t\t\t\n", len(ks)-i)
			break
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.1f%%\t%.0f\t%.0f\t%.3f\t\n", strings.TrimSpace(k.Name), k.Calls, k.MS, 100*k.Share, k.GBps, k.GFLOPs, k.PredictedMS)
	}
	tw.Flush()
}
