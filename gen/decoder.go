// Package gen generates tokens with a model's compiled recurrent step
// (passes.DecodeStep): prefill feeds the prompt, decode feeds back each
// sampled token, on a device or the reference interpreter.
package gen

import (
	"fmt"
	"maps"
	"slices"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/train"
)

// Program is a model's decode step, through the graph passes (QLoRA mode
// makes its LoRA weights NF4 plus adapters, as in training) and, for a
// device, compiled like a train step: fusion, planning, kernels.
type Program struct {
	Graph  *ir.Graph      // the step after the graph passes: its parameters are what Start needs
	Unit   *pipeline.Unit // the compiled step; nil on the reference interpreter
	States []passes.DecodeState
	Batch  int
	Vocab  int
	dev    device.Device
}

// Compile derives the decode step of model, which must be built with
// context 1 (lang.Options.Overrides), and compiles it for dev (nil: the
// float64 reference interpreter).
func Compile(model *ir.Graph, cfg passes.Config, dev device.Device) (*Program, error) {
	return compile(model, cfg, dev, "")
}

// Plan compiles the decode step for a target language without a device
// (for its report: launches and traffic per token).
func Plan(model *ir.Graph, cfg passes.Config, target string) (*Program, error) {
	return compile(model, cfg, nil, target)
}

func compile(model *ir.Graph, cfg passes.Config, dev device.Device, target string) (*Program, error) {
	step, states, err := passes.DecodeStep(model)
	if err != nil {
		return nil, err
	}
	p := &Program{States: states, dev: dev}
	if p.Unit, p.Graph, err = compileGraph(step, "decode step", model.Name, cfg, dev, target); err != nil {
		return nil, err
	}
	logits := p.Graph.Output("logits").Value.Type.Shape
	if len(logits) != 3 || logits[1] != 1 {
		return nil, fmt.Errorf("%s: the step's logits are %v, want (batch, 1, vocab)", model.Name, logits)
	}
	p.Batch, p.Vocab = logits[0], logits[2]
	return p, nil
}

// compileGraph runs a derived graph (a step or a prefill) through the
// graph passes and, for a device or a target, the rest of the pipeline.
func compileGraph(g *ir.Graph, what, model string, cfg passes.Config, dev device.Device, target string) (*pipeline.Unit, *ir.Graph, error) {
	cfg.Train = false
	mem := passes.DefaultMemOptions()
	mem.Budget = 0
	switch {
	case target != "":
		u, err := pipeline.Compile(g, &pipeline.Config{Passes: cfg, Mem: mem, Target: target})
		if err != nil {
			return nil, nil, err
		}
		return u, u.Graph, nil
	case dev == nil:
		u, err := pipeline.Run(g, &pipeline.Config{Passes: cfg}, "remat")
		if err != nil {
			return nil, nil, err
		}
		return nil, u.Graph, nil
	}
	u, err := pipeline.Compile(g, &pipeline.Config{Passes: cfg, Mem: train.MemOptions(dev, mem), Target: dev.Target()})
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the %s of %s for %s: %w", what, model, dev.Name(), err)
	}
	return u, u.Graph, nil
}

// Prefill is a model's sequence prefill (passes.DecodePrefill) for one
// prompt length: the prompt in one run, the last position's logits out,
// each Mamba layer's final states left for the decode step.
type Prefill struct {
	Graph  *ir.Graph
	Unit   *pipeline.Unit // nil on the reference interpreter
	States []passes.DecodeState
	Batch  int
	Len    int // prompt tokens per sequence
	Vocab  int
	dev    device.Device
}

// CompilePrefill derives the prefill of model, built with its context set
// to the prompt length, and compiles it for dev (nil: the reference) with
// the same passes as the step.
func CompilePrefill(model *ir.Graph, cfg passes.Config, dev device.Device) (*Prefill, error) {
	g, states, err := passes.DecodePrefill(model, false)
	if err != nil {
		return nil, err
	}
	var tok *ir.Value
	for _, in := range g.Inputs {
		if in.Name == "tokens" {
			tok = in.Value
		}
	}
	if tok == nil || len(tok.Type.Shape) != 2 || len(g.Inputs) != 1 {
		return nil, fmt.Errorf("%s: the prefill takes one input, tokens (batch, length)", model.Name)
	}
	pf := &Prefill{States: states, dev: dev, Batch: tok.Type.Shape[0], Len: tok.Type.Shape[1]}
	if pf.Unit, pf.Graph, err = compileGraph(g, "prefill", model.Name, cfg, dev, ""); err != nil {
		return nil, err
	}
	pf.Vocab = pf.Graph.Output("logits").Value.Type.Shape[2]
	return pf, nil
}

// Launches is the number of kernel dispatches of the prefill (0 on the reference).
func (pf *Prefill) Launches() int {
	if pf.Unit == nil || pf.Unit.Plan == nil {
		return 0
	}
	return len(pf.Unit.Plan.Dispatches)
}

// Launches is the number of kernel dispatches of one step (0 on the reference).
func (p *Program) Launches() int {
	if p.Unit == nil || p.Unit.Plan == nil {
		return 0
	}
	return len(p.Unit.Plan.Dispatches)
}

// Decoder is a started Program: weights in place, states at zero.
type Decoder struct {
	p       *Program
	weights map[string]*ref.Tensor // the weights Start was given (for a prefill)
	params  map[string]*ref.Tensor // reference: every parameter, states included
	sess    *train.Session
	pre     *Prefill
	preSess *train.Session // the prefill's arena on the device
}

// Start places the weights (every parameter of p.Graph but the states,
// which start at zero).
func (p *Program) Start(weights map[string]*ref.Tensor) (*Decoder, error) {
	params := map[string]*ref.Tensor{}
	for _, prm := range p.Graph.Params {
		if t, ok := weights[prm.Name]; ok {
			params[prm.Name] = t
		}
	}
	for _, s := range p.States {
		params[s.Name] = ref.New(s.Type)
	}
	for _, prm := range p.Graph.Params {
		if params[prm.Name] == nil {
			return nil, fmt.Errorf("no weights for %s", prm.Name)
		}
	}
	d := &Decoder{p: p, params: params, weights: maps.Clone(weights)}
	if p.dev != nil {
		s, err := train.NewSession(p.dev, p.Unit, params)
		if err != nil {
			return nil, err
		}
		d.sess, d.params = s, nil
	}
	return d, nil
}

// UsePrefill gives d a sequence prefill (same model, passes and device;
// its prompt length is pf.Len). It holds a second copy of the weights, as
// training's forward arena does.
func (d *Decoder) UsePrefill(pf *Prefill) error {
	if pf.dev != d.p.dev {
		return fmt.Errorf("the prefill and the decode step run on different devices")
	}
	if pf.Batch != d.p.Batch || pf.Vocab != d.p.Vocab {
		return fmt.Errorf("the prefill's batch and vocabulary (%d, %d) are not the step's (%d, %d)", pf.Batch, pf.Vocab, d.p.Batch, d.p.Vocab)
	}
	if len(pf.States) != len(d.p.States) {
		return fmt.Errorf("the prefill leaves %d states; the step reads %d", len(pf.States), len(d.p.States))
	}
	for i, s := range pf.States {
		if t := d.p.States[i]; s.Name != t.Name || !s.Type.Equal(t.Type) {
			return fmt.Errorf("the prefill's state %s %v is not the step's %s %v", s.Name, s.Type, t.Name, t.Type)
		}
	}
	d.pre, d.preSess = pf, nil
	if pf.dev == nil {
		return nil
	}
	params := map[string]*ref.Tensor{}
	for _, prm := range pf.Graph.Params {
		if t, ok := d.weights[prm.Name]; ok {
			params[prm.Name] = t
		}
	}
	for _, s := range pf.States {
		params[s.Name] = ref.New(s.Type)
	}
	s, err := train.NewSession(pf.dev, pf.Unit, params)
	if err != nil {
		return fmt.Errorf("placing the prefill: %w", err)
	}
	d.preSess = s
	return nil
}

// PrefillLen is the prompt length d's prefill takes (0: none).
func (d *Decoder) PrefillLen() int {
	if d.pre == nil {
		return 0
	}
	return d.pre.Len
}

// Prefill runs the prompt, batch × PrefillLen tokens row-major, from zero
// states: the step's states become the prompt's final states, and the
// result is the next-token logits, batch × vocab, as Step returns them.
func (d *Decoder) Prefill(tokens []int) ([]float64, error) {
	pf := d.pre
	if pf == nil {
		return nil, fmt.Errorf("no prefill: UsePrefill first")
	}
	if len(tokens) != pf.Batch*pf.Len {
		return nil, fmt.Errorf("%d tokens for a prefill of %d × %d", len(tokens), pf.Batch, pf.Len)
	}
	for _, t := range tokens {
		if t < 0 || t >= pf.Vocab {
			return nil, fmt.Errorf("token %d is outside the vocabulary [0, %d)", t, pf.Vocab)
		}
	}
	in, err := ref.FromInts([]int{pf.Batch, pf.Len}, tokens)
	if err != nil {
		return nil, err
	}
	inputs := map[string]*ref.Tensor{"tokens": in}
	if d.preSess != nil {
		if err := d.preSess.Run(inputs); err != nil {
			return nil, err
		}
		// The states cross from the prefill's arena to the step's.
		states := map[string]*ref.Tensor{}
		for _, s := range pf.States {
			if states[s.Name], err = d.preSess.Param(s.Name); err != nil {
				return nil, err
			}
		}
		if err := d.sess.Set(states); err != nil {
			return nil, err
		}
		t, err := d.preSess.Output("logits")
		if err != nil {
			return nil, err
		}
		return t.Data, nil
	}
	params := map[string]*ref.Tensor{}
	for _, prm := range pf.Graph.Params {
		params[prm.Name] = d.params[prm.Name]
	}
	res, err := ref.Eval(pf.Graph, inputs, params)
	if err != nil {
		return nil, err
	}
	for _, u := range pf.Graph.Updates {
		d.params[u.Param] = res.Value(u.Value)
	}
	return res.Outputs["logits"].Data, nil
}

// SetWeights overwrites weights (parameters of the step other than the
// states), in the step and in its prefill if any: a training run's
// samples follow its weights without placing the step again.
func (d *Decoder) SetWeights(w map[string]*ref.Tensor) error {
	for name := range w {
		if d.p.Graph.Param(name) == nil || slices.ContainsFunc(d.p.States, func(s passes.DecodeState) bool { return s.Name == name }) {
			return fmt.Errorf("%s is not a weight of the decode step", name)
		}
	}
	for name, t := range w {
		d.weights[name] = t
		if d.params != nil {
			d.params[name] = t
		}
	}
	if d.sess != nil {
		if err := d.sess.Set(w); err != nil {
			return err
		}
	}
	if d.preSess != nil {
		return d.preSess.Set(w)
	}
	return nil
}

// Weights names the parameters of the step that SetWeights takes.
func (p *Program) Weights() []string {
	var out []string
	for _, prm := range p.Graph.Params {
		if !slices.ContainsFunc(p.States, func(s passes.DecodeState) bool { return s.Name == prm.Name }) {
			out = append(out, prm.Name)
		}
	}
	return out
}

// Program is what d runs.
func (d *Decoder) Program() *Program { return d.p }

// Reset zeroes the states: the next step starts new sequences.
func (d *Decoder) Reset() error {
	zero := map[string]*ref.Tensor{}
	for _, s := range d.p.States {
		zero[s.Name] = ref.New(s.Type)
	}
	if d.sess != nil {
		return d.sess.Set(zero)
	}
	for k, v := range zero {
		d.params[k] = v
	}
	return nil
}

// Step feeds one token per sequence and returns the next-token logits,
// batch × vocab, row-major.
func (d *Decoder) Step(tokens []int) ([]float64, error) {
	if len(tokens) != d.p.Batch {
		return nil, fmt.Errorf("%d tokens for a step of batch %d", len(tokens), d.p.Batch)
	}
	for _, t := range tokens {
		if t < 0 || t >= d.p.Vocab {
			return nil, fmt.Errorf("token %d is outside the vocabulary [0, %d)", t, d.p.Vocab)
		}
	}
	in, err := ref.FromInts([]int{d.p.Batch, 1}, tokens)
	if err != nil {
		return nil, err
	}
	inputs := map[string]*ref.Tensor{"tokens": in}
	if d.sess != nil {
		if err := d.sess.Run(inputs); err != nil {
			return nil, err
		}
		t, err := d.sess.Output("logits")
		if err != nil {
			return nil, err
		}
		return t.Data, nil
	}
	res, err := ref.Eval(d.p.Graph, inputs, d.params)
	if err != nil {
		return nil, err
	}
	for _, u := range d.p.Graph.Updates {
		d.params[u.Param] = res.Value(u.Value)
	}
	return res.Outputs["logits"].Data, nil
}

// Report is what one decode step costs, from the compiled plan: launches,
// global memory traffic, and the roofline prediction for an M4 (passes.M4;
// a prediction, not a measurement).
type Report struct {
	Model                string  `json:"model"`
	Mode                 string  `json:"mode"`
	Batch                int     `json:"batch"`
	Kernels              int     `json:"decode_kernels"`
	Launches             int     `json:"decode_launches_per_step"`
	BytesPerToken        int64   `json:"decode_global_bytes_per_token"`
	WeightBytes          int64   `json:"weight_bytes"`
	StateBytes           int64   `json:"state_bytes"`
	ArenaBytes           int64   `json:"decode_arena_bytes"`
	PredictedM4StepMS    float64 `json:"predicted_m4_decode_step_ms"`
	PredictedM4TokensPS  float64 `json:"predicted_m4_decode_tokens_per_s"`
	BandwidthM4TokensPS  float64 `json:"predicted_m4_bandwidth_bound_tokens_per_s"`
	PredictionMachine    string  `json:"prediction_machine"`
	PredictionBandwidth  float64 `json:"prediction_bandwidth_bytes_per_s"`
	PredictionLaunchCost float64 `json:"prediction_launch_us"`
}

// Report describes a compiled step (nil on the reference interpreter).
func (p *Program) Report() *Report {
	u := p.Unit
	if u == nil || u.Prog == nil {
		return nil
	}
	r := &Report{Model: p.Graph.Name, Mode: p.Graph.Train.Mode, Batch: p.Batch, Kernels: len(u.Prog.Module.Kernels),
		Launches: len(u.Prog.Dispatches), WeightBytes: p.Graph.ParamBytes(ir.Trainable, ir.Frozen, ir.FrozenNF4),
		PredictionMachine: passes.M4.Name, PredictionBandwidth: passes.M4.Bandwidth, PredictionLaunchCost: float64(passes.M4.Launch.Microseconds())}
	for _, s := range p.States {
		r.StateBytes += s.Type.Bytes()
	}
	r.WeightBytes -= r.StateBytes // the states are frozen parameters too
	r.BytesPerToken = u.Sched.GlobalBytes() / int64(max(p.Batch, 1))
	if u.Memory != nil && u.Memory.Plan != nil {
		r.ArenaBytes = u.Memory.Plan.ArenaBytes
	}
	var step float64
	for i := range u.Prog.Dispatches {
		step += passes.M4.Time(u.Prog.Dispatches[i].Cost()).Seconds()
	}
	r.PredictedM4StepMS = step * 1e3
	r.PredictedM4TokensPS = float64(p.Batch) / step
	r.BandwidthM4TokensPS = passes.M4.Bandwidth / float64(r.BytesPerToken)
	return r
}
