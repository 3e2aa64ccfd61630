// Package gen generates tokens with a model's compiled recurrent step
// (passes.DecodeStep): prefill feeds the prompt, decode feeds back each
// sampled token, on a device or the reference interpreter.
package gen

import (
	"fmt"

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
	step, states, err := passes.DecodeStep(model)
	if err != nil {
		return nil, err
	}
	cfg.Train = false
	p := &Program{States: states, dev: dev}
	if dev == nil {
		u, err := pipeline.Run(step, &pipeline.Config{Passes: cfg}, "remat")
		if err != nil {
			return nil, err
		}
		p.Graph = u.Graph
	} else {
		mem := passes.DefaultMemOptions()
		mem.Budget = 0
		u, err := pipeline.Compile(step, &pipeline.Config{Passes: cfg, Mem: train.MemOptions(dev, mem), Target: dev.Target()})
		if err != nil {
			return nil, fmt.Errorf("compiling the decode step of %s for %s: %w", model.Name, dev.Name(), err)
		}
		p.Unit, p.Graph = u, u.Graph
	}
	logits := p.Graph.Output("logits").Value.Type.Shape
	if len(logits) != 3 || logits[1] != 1 {
		return nil, fmt.Errorf("%s: the step's logits are %v, want (batch, 1, vocab)", model.Name, logits)
	}
	p.Batch, p.Vocab = logits[0], logits[2]
	return p, nil
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
	p      *Program
	params map[string]*ref.Tensor // reference: every parameter, states included
	sess   *train.Session
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
	d := &Decoder{p: p, params: params}
	if p.dev != nil {
		s, err := train.NewSession(p.dev, p.Unit, params)
		if err != nil {
			return nil, err
		}
		d.sess, d.params = s, nil
	}
	return d, nil
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
