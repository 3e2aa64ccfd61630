package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
	"golang.org/x/term"
)

type runCmd struct {
	modelFlags
	deviceFlag
	Train    bool     `help:"Train the model (without it, evaluate it)."`
	Model    string   `help:"Model file or built-in name (${models}). Default: the --resume checkpoint's, else tiny."`
	Data     string   `help:"Training data: selective-copying or induction-heads (built-in synthetic tasks), a .txt file, or a directory with train.jsonl (and valid.jsonl). Default: the --resume checkpoint's, else selective-copying."`
	Steps    int      `default:"300" help:"Training steps."`
	LR       *float64 `name:"lr" help:"Peak learning rate (default: the model's train line, else 1e-3 full, 2e-4 QLoRA)."`
	MinLR    float64  `name:"min-lr" default:"1e-4" help:"Final learning rate of the cosine schedule."`
	Warmup   int      `default:"30" help:"Linear warm-up steps."`
	Schedule string   `default:"cosine" enum:"cosine,constant" help:"Learning-rate schedule after warm-up: cosine or constant."`
	Seed     uint64   `default:"1" help:"Seed for initialisation and data."`
	Copy     int      `default:"2" help:"Data tokens to copy in the selective-copying task."`

	EvalEvery   int    `default:"50" help:"Evaluate every N steps (0: only at the end)."`
	EvalBatches int    `default:"8" help:"Held-out batches per evaluation."`
	SaveEvery   int    `default:"100" help:"Checkpoint every N steps (0: only at the end)."`
	Out         string `default:"out" help:"Output directory: checkpoint, summary.json, loss.png."`
	Resume      string `help:"Continue from this checkpoint (its step, weights and optimizer state)." placeholder:"FILE"`
	Force       bool   `help:"Train into an --out that holds another run's checkpoint, replacing it."`
	Base        string `help:"Initial weights (safetensors, named as the model's parameters; f32 weights of QLoRA targets are quantised to NF4 at load)." placeholder:"FILE"`

	NoFuse bool   `help:"One kernel per op (the unfused baseline)."`
	Remat  string `default:"none" enum:"none,layer,auto" help:"Activation checkpointing policy."`
	Quiet  bool   `help:"No progress bar."`

	LossScale         bool     `name:"loss-scale" help:"Dynamic loss scaling (for f16 training): the backward runs on the loss times a scale; a step whose gradient norm is not finite changes nothing and divides the scale by --loss-scale-factor, and --loss-scale-growth-interval clean steps in a row multiply it. A --resume of such a run needs it again."`
	LossScaleInit     *float64 `name:"loss-scale-init" help:"The first loss scale (default 65536); an f32 number, 2^-126 to 3.4e38." placeholder:"S"`
	LossScaleInterval *int     `name:"loss-scale-growth-interval" help:"Clean steps in a row before the loss scale grows (default 2000)." placeholder:"N"`
	LossScaleFactor   *float64 `name:"loss-scale-factor" help:"The loss scale's growth factor; backing off divides by it (default 2)." placeholder:"F"`
}

func (c *runCmd) Run(e *env) error {
	if err := c.check(); err != nil {
		return err
	}
	if c.Batch == "max" {
		return fmt.Errorf("--batch max is for magc compile and bench; give run a number")
	}
	if err := c.defaults(); err != nil {
		return err
	}
	if c.Train {
		if err := train.CheckOut(c.Out, c.Resume, c.Force); err != nil {
			return err
		}
	}
	g, err := c.load(c.Model)
	if err != nil {
		return err
	}
	batch, seq := g.Consts["batch"], g.Consts["context"]
	src, synth, err := c.source(g, batch, seq)
	if err != nil {
		return err
	}
	if v := g.Consts["vocab"]; v < src.Vocab() {
		return fmt.Errorf("%s has a vocabulary of %d, but %s needs %d token ids", c.Model, v, src.Name(), src.Vocab())
	}
	dev, err := c.open()
	if err != nil {
		return err
	}
	graphs, step, err := c.stepper(g, dev)
	if err != nil {
		return err
	}
	defer step.Close()
	device := c.name()
	lr := cmp.Or(graphs.Train.Train.LR, map[string]float64{"full": 1e-3, "qlora": 2e-4}[graphs.Train.Train.Mode])
	if c.LR != nil {
		lr = *c.LR
	}
	t := &train.Trainer{Src: src, Step: step, Graphs: graphs, Device: device, Precision: c.Precision, Synth: synth, Opt: train.TrainOptions{
		Steps: c.Steps, LR: lr, MinLR: c.MinLR, Warmup: c.Warmup, Schedule: c.Schedule, EvalEvery: c.EvalEvery,
		EvalBatches: c.EvalBatches, SaveEvery: c.SaveEvery, Out: c.Out, Seed: c.Seed, Log: e.stderr, Progress: !c.Quiet && isTerminal(e.stderr),
		Model: c.Model, Data: c.Data,
	}, Scaler: c.scaler()}
	if txt, ok := src.(*data.Text); ok && c.Train {
		t.Opt.Sample = c.evalSampler(txt, dev)
	}
	if c.Resume != "" {
		if err := t.Resume(c.Resume); err != nil {
			return err
		}
	}
	if !c.Train {
		loss, acc, err := t.Evaluate()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s on %s: eval loss %.4f", graphs.Forward.Name, src.Name(), loss)
		if synth {
			fmt.Fprintf(e.stdout, ", accuracy %.1f%%", 100*acc)
		}
		fmt.Fprintln(e.stdout)
		return nil
	}
	fmt.Fprintf(e.stderr, "training %s (%s, %s) on %s, batch %d × %d tokens, %d steps, lr %g, device %s\n",
		graphs.Train.Name, graphs.Train.Train.Mode, millions(graphs.Train.ParamCount(ir.Trainable))+" trainable", src.Name(), batch, seq, c.Steps, lr, device)
	stop, release := onInterrupt(e.stderr)
	defer release()
	t.Opt.Stop = stop
	sum, err := t.Run()
	if err != nil {
		return err
	}
	if sum.Interrupted {
		return fmt.Errorf("interrupted: stopped after step %d of %d, saved, with summary.json and loss.png for the steps done; continue with --resume %s",
			sum.Steps, c.Steps, filepath.Join(c.Out, train.CheckpointFile))
	}
	return nil
}

// onInterrupt turns the first SIGINT or SIGTERM into a closed channel (the
// trainer then saves after the step in progress); a second one kills as usual.
func onInterrupt(log io.Writer) (<-chan struct{}, func()) {
	stop, done := make(chan struct{}), make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			fmt.Fprintf(log, "\n%v: stopping after this step, then saving (again to quit at once)\n", s)
			close(stop)
		case <-done:
		}
	}()
	return stop, func() { signal.Stop(sigs); close(done) }
}

// defaults fills --model, --data, --mode and --precision: from the
// --resume checkpoint when it records them, else tiny on selective copying
// in f32.
func (c *runCmd) defaults() error {
	if c.Resume != "" && (c.Model == "" || c.Data == "" || c.Mode == "" || c.Precision == "") {
		p, err := train.ReadProgress(c.Resume)
		if err != nil {
			return err
		}
		c.Model = cmp.Or(c.Model, p.Model, p.Graph)
		c.Mode = cmp.Or(c.Mode, p.Mode)
		c.Data = cmp.Or(c.Data, p.Data)
		c.Precision = cmp.Or(c.Precision, p.Precision)
	}
	c.Model = cmp.Or(c.Model, "tiny")
	c.Data = cmp.Or(c.Data, "selective-copying")
	return nil
}

// check refuses flags no run can use, naming the flag: counts that must be
// positive, and learning rates that must be finite (and not negative).
func (c *runCmd) check() error {
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{{"--steps", c.Steps, 1}, {"--eval-batches", c.EvalBatches, 1}, {"--eval-every", c.EvalEvery, 0}, {"--save-every", c.SaveEvery, 0}, {"--warmup", c.Warmup, 0}, {"--copy", c.Copy, 1}} {
		if f.v < f.min {
			what := "positive"
			if f.min == 0 {
				what = "0 or more"
			}
			return fmt.Errorf("%s must be %s, got %d", f.name, what, f.v)
		}
	}
	if c.LR != nil && !(*c.LR > 0 && !math.IsInf(*c.LR, 0)) {
		return fmt.Errorf("--lr must be a positive finite number, got %v", *c.LR)
	}
	if !(c.MinLR >= 0 && !math.IsInf(c.MinLR, 0)) {
		return fmt.Errorf("--min-lr must be a finite number, 0 or more, got %v", c.MinLR)
	}
	return c.checkLossScale()
}

// lossScaling reports whether the run scales its loss.
// lossScaling: asked for, or implied by the precision (passes.Config.Scaled).
func (c *runCmd) lossScaling() bool {
	cfg := passes.Config{LossScale: c.LossScale, Precision: c.Precision}
	return cfg.Scaled()
}

// checkLossScale refuses loss-scaling flags that no run can use, and
// such flags given to a run that does not scale.
func (c *runCmd) checkLossScale() error {
	given := map[string]bool{"--loss-scale-init": c.LossScaleInit != nil, "--loss-scale-growth-interval": c.LossScaleInterval != nil, "--loss-scale-factor": c.LossScaleFactor != nil}
	for _, name := range []string{"--loss-scale-init", "--loss-scale-growth-interval", "--loss-scale-factor"} {
		if given[name] && !c.lossScaling() {
			return fmt.Errorf("%s sets up loss scaling: give --loss-scale with it", name)
		}
	}
	if c.lossScaling() && !c.Train {
		return fmt.Errorf("--loss-scale is for training: give --train with it")
	}
	if v := c.LossScaleInit; v != nil && !(*v >= 0x1p-126 && *v <= math.MaxFloat32) {
		return fmt.Errorf("--loss-scale-init must be a positive finite f32 number (2^-126 to 3.4e38), got %v", *v)
	}
	if v := c.LossScaleInterval; v != nil && *v < 1 {
		return fmt.Errorf("--loss-scale-growth-interval must be positive, got %d", *v)
	}
	if v := c.LossScaleFactor; v != nil && !(*v > 1 && !math.IsInf(*v, 0)) {
		return fmt.Errorf("--loss-scale-factor must be a finite number above 1, got %v", *v)
	}
	return nil
}

// scaler is the run's loss scaler (nil: no loss scaling).
func (c *runCmd) scaler() *train.LossScaler {
	if !c.lossScaling() {
		return nil
	}
	s := train.NewLossScaler()
	if c.LossScaleInit != nil {
		s.Scale = *c.LossScaleInit
	}
	if c.LossScaleInterval != nil {
		s.Interval = *c.LossScaleInterval
	}
	if c.LossScaleFactor != nil {
		s.Factor = *c.LossScaleFactor
	}
	return s
}

// source picks the training data.
func (c *runCmd) source(g *ir.Graph, batch, seq int) (data.Source, bool, error) {
	switch c.Data {
	case "selective-copying":
		if c.Copy < 1 || c.Copy*2 > seq {
			return nil, false, fmt.Errorf("--copy %d does not fit a sequence of %d tokens (at most half of it)", c.Copy, seq)
		}
		return &data.SelectiveCopying{Seed: c.Seed, BatchSize: batch, Len: seq, M: c.Copy}, true, nil
	case "induction-heads":
		if seq < 4 {
			return nil, false, fmt.Errorf("induction heads needs sequences of at least 4 tokens")
		}
		return &data.InductionHeads{Seed: c.Seed, BatchSize: batch, Len: seq}, true, nil
	}
	if _, err := os.Stat(c.Data); errors.Is(err, fs.ErrNotExist) {
		msg := fmt.Sprintf("--data %s: no such file or directory, and no built-in task of that name (tasks: %s)", c.Data, strings.Join(tasks, ", "))
		if near := ir.Closest(c.Data, tasks); near != "" {
			msg += fmt.Sprintf("; did you mean %s?", near)
		}
		return nil, false, errors.New(msg)
	}
	// A model file with tokenizer.json beside it (magc import) brings its
	// own tokenizer; built-in models use GPT-2's BPE.
	path, _ := models.Resolve(c.Model)
	if _, err := os.Stat(path); err != nil {
		path = ""
	}
	tok, err := data.ModelTokenizer(path)
	if err != nil {
		return nil, false, err
	}
	t, err := data.LoadTextWith(c.Data, tok, c.Seed, batch, seq)
	return t, false, err
}

// tasks are the built-in synthetic data sets of --data.
var tasks = []string{"selective-copying", "induction-heads"}

// stepper compiles the train step and the forward graph for dev (for the
// reference interpreter, dev nil, the graphs alone) and initialises the
// parameters on it.
func (c *runCmd) stepper(g *ir.Graph, dev device.Device) (train.Graphs, train.Stepper, error) {
	cfg := c.config()
	tcfg := cfg
	tcfg.Train, tcfg.Remat, tcfg.LossScale = true, c.Remat, c.lossScaling()
	if dev == nil {
		// To the precision pass: the reference rounds what kernels would store.
		fwd, err := pipeline.Run(g, &pipeline.Config{Passes: cfg}, "precision")
		if err != nil {
			return train.Graphs{}, nil, err
		}
		tr, err := pipeline.Run(g, &pipeline.Config{Passes: tcfg}, "precision")
		if err != nil {
			return train.Graphs{}, nil, err
		}
		graphs := train.Graphs{Train: tr.Graph, Forward: fwd.Graph}
		if err := checkHostMemory("the reference interpreter's step of "+g.Name, hostBytes(tr.Graph, true, 0), physicalMemory()); err != nil {
			return graphs, nil, err
		}
		params, err := c.initParams(graphs.Train)
		if err != nil {
			return graphs, nil, err
		}
		return graphs, train.NewRefStepper(graphs, params), nil
	}
	fwd, err := compileFor(dev, g, cfg, c.NoFuse)
	if err != nil {
		return train.Graphs{}, nil, err
	}
	tr, err := compileFor(dev, g, tcfg, c.NoFuse)
	if err != nil {
		return train.Graphs{}, nil, err
	}
	graphs := train.Graphs{Train: tr.Graph, Forward: fwd.Graph}
	if err := checkHostMemory(g.Name+"'s weights and arenas on "+dev.Name(), hostBytes(tr.Graph, false, hostArena(dev, tr, fwd)), physicalMemory()); err != nil {
		return graphs, nil, err
	}
	params, err := c.initParams(graphs.Train)
	if err != nil {
		return graphs, nil, err
	}
	step, err := train.NewDeviceStepper(dev, tr, fwd, params)
	return graphs, step, err
}

// initParams initialises every parameter by the model's rules, then
// overrides the ones --base provides.
func (c *runCmd) initParams(g *ir.Graph) (map[string]*ref.Tensor, error) {
	params, err := ref.InitParams(g, c.Seed)
	if err != nil {
		return nil, internal(err)
	}
	if c.Base == "" {
		return params, nil
	}
	f, err := safetensors.Read(c.Base)
	if err != nil {
		return nil, err
	}
	if p, err := train.ReadProgress(c.Base); err == nil {
		return nil, fmt.Errorf("%s is a training checkpoint (%s at step %d), not initial weights: continue it with --resume %s", c.Base, p.Graph, p.Step, c.Base)
	}
	var unknown []string
	for _, name := range f.Names() {
		p := g.Param(name)
		if p == nil || p.Role == ir.OptState {
			unknown = append(unknown, name)
			continue
		}
		if params[name], err = train.FromSafetensors(name, f.Tensors[name], p.Value.Type); err != nil {
			return nil, fmt.Errorf("%s: %v", c.Base, err)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%s: tensors %s are not parameters of %s", c.Base, strings.Join(unknown, ", "), g.Name)
	}
	return params, nil
}

// isTerminal reports whether w is a terminal, where a progress bar can redraw itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
