package train

import (
	"fmt"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train/data"
)

// Stepper runs a compiled training step and the matching forward pass on
// one executor: the reference interpreter or a device.
type Stepper interface {
	// Step trains on one batch and returns the step's scalar outputs (loss,
	// loss_main, loss_aux, grad_norm).
	Step(b data.Batch, in StepInputs) (map[string]float64, error)
	// Logits runs the forward pass on a batch without training.
	Logits(b data.Batch) (*ref.Tensor, error)
	// Get reads parameters (weights and optimizer state) by name; Set writes them.
	Get(names []string) (map[string]*ref.Tensor, error)
	Set(params map[string]*ref.Tensor) error
	Close() error
}

// Graphs is a model compiled for training: the train step and the forward
// graph that shares its parameters.
type Graphs struct {
	Train, Forward *ir.Graph
}

// StepInputs are the scalars a train step takes besides its batch.
type StepInputs struct {
	LR float64
	// Step is AdamW's step count, from 1, for its bias correction: steps a
	// loss scaler skipped do not count.
	Step int
	// LossScale feeds the loss_scale input of a train step built with loss
	// scaling (passes.Config.LossScale).
	LossScale float64
}

// batchInputs are a step's graph inputs, index inputs checked against
// their ranges (plan.IndexRanges of g) before any executor sees them.
func batchInputs(g *ir.Graph, ranges map[string]plan.IndexRange, b data.Batch, s StepInputs) (map[string]*ref.Tensor, error) {
	out := map[string]*ref.Tensor{}
	for _, in := range g.Inputs {
		t := in.Value.Type
		switch in.Name {
		case "tokens", "targets":
			src := b.Tokens
			if in.Name == "targets" {
				src = b.Targets
			}
			if int64(len(src)) != t.Shape.Elems() {
				return nil, fmt.Errorf("the batch has %d %s, the model takes %v", len(src), in.Name, t.Shape)
			}
			v := ref.New(t)
			for i, x := range src {
				v.Data[i] = float64(x)
			}
			if r, ok := ranges[in.Name]; ok {
				if err := r.Check("the batch's "+in.Name, t.Shape, v.Data); err != nil {
					return nil, err
				}
			}
			out[in.Name] = v
		case "lr":
			out[in.Name] = ref.Scalar(s.LR)
		case "step":
			out[in.Name] = ref.Scalar(float64(s.Step))
		case "loss_scale":
			if !(s.LossScale > 0) {
				return nil, fmt.Errorf("the train step is built for loss scaling and was given no loss scale")
			}
			out[in.Name] = ref.Scalar(s.LossScale)
		default:
			return nil, fmt.Errorf("the model has an input %q that training does not know how to feed", in.Name)
		}
	}
	return out, nil
}

// RefStepper trains with the float64 reference interpreter.
type RefStepper struct {
	g                Graphs
	params           map[string]*ref.Tensor
	trainIdx, fwdIdx map[string]plan.IndexRange
}

// NewRefStepper holds params (initialised weights and zero moments).
func NewRefStepper(g Graphs, params map[string]*ref.Tensor) *RefStepper {
	return &RefStepper{g: g, params: params, trainIdx: plan.IndexRanges(g.Train), fwdIdx: plan.IndexRanges(g.Forward)}
}

func (r *RefStepper) Step(b data.Batch, s StepInputs) (map[string]float64, error) {
	in, err := batchInputs(r.g.Train, r.trainIdx, b, s)
	if err != nil {
		return nil, err
	}
	res, err := ref.Eval(r.g.Train, in, r.params)
	if err != nil {
		return nil, err
	}
	for _, u := range r.g.Train.Updates {
		r.params[u.Param] = res.Values[u.Value]
	}
	return scalars(res.Outputs), nil
}

func scalars(out map[string]*ref.Tensor) map[string]float64 {
	s := map[string]float64{}
	for name, t := range out {
		if len(t.Data) == 1 {
			s[name] = t.Data[0]
		}
	}
	return s
}

func (r *RefStepper) Logits(b data.Batch) (*ref.Tensor, error) {
	in, err := batchInputs(r.g.Forward, r.fwdIdx, b, StepInputs{Step: 1})
	if err != nil {
		return nil, err
	}
	params := map[string]*ref.Tensor{}
	for _, p := range r.g.Forward.Params {
		params[p.Name] = r.params[p.Name]
	}
	res, err := ref.Eval(r.g.Forward, in, params)
	if err != nil {
		return nil, err
	}
	return res.Outputs["logits"], nil
}

func (r *RefStepper) Get(names []string) (map[string]*ref.Tensor, error) {
	out := map[string]*ref.Tensor{}
	for _, n := range names {
		t, ok := r.params[n]
		if !ok {
			return nil, fmt.Errorf("no parameter %q", n)
		}
		out[n] = t.Clone()
	}
	return out, nil
}

func (r *RefStepper) Set(params map[string]*ref.Tensor) error {
	for n, t := range params {
		r.params[n] = t.Clone()
	}
	return nil
}

func (r *RefStepper) Close() error { return nil }

// arena is a compiled graph's memory on a device, run through its plan
// (the same plan.Runner that runs a plan.json), with tensors addressed by
// IR value.
type arena struct {
	c   *pipeline.Unit
	r   *plan.Runner
	idx map[string]plan.IndexRange
}

func newArena(dev device.Device, c *pipeline.Unit) (*arena, error) {
	if c.Target != dev.Target() {
		return nil, fmt.Errorf("kernels compiled for %s cannot run on %s, which takes %s", c.Target, dev.Name(), dev.Target())
	}
	r, err := plan.NewRunner(dev, c.Plan, c.Source)
	if err != nil {
		return nil, err
	}
	return &arena{c: c, r: r, idx: plan.IndexRanges(c.Graph)}, nil
}

// buffer names v's buffer in the plan.
func (a *arena) buffer(v *ir.Value) (string, error) {
	name, ok := a.c.Memory.Buffer[v]
	if !ok {
		return "", fmt.Errorf("value %v has no buffer in the plan", v)
	}
	return name, nil
}

// write stores a tensor in v's buffer, in v's storage format.
func (a *arena) write(v *ir.Value, t *ref.Tensor) error {
	name, err := a.buffer(v)
	if err != nil {
		return err
	}
	data, err := Encode(t)
	if err != nil {
		return err
	}
	return a.r.WriteBytes(name, data)
}

// read loads v's buffer as a tensor of v's type.
func (a *arena) read(v *ir.Value) (*ref.Tensor, error) {
	name, err := a.buffer(v)
	if err != nil {
		return nil, err
	}
	data, err := a.r.ReadBytes(name)
	if err != nil {
		return nil, err
	}
	return Decode(v.Type, data)
}

// run feeds the inputs and runs one step (updates land in their parameters).
func (a *arena) run(inputs map[string]*ref.Tensor) error {
	for _, in := range a.c.Graph.Inputs {
		if err := a.write(in.Value, inputs[in.Name]); err != nil {
			return err
		}
	}
	return a.r.Step()
}

// DeviceStepper trains on a Device through compiled kernels: one arena for
// the train step, one for the forward pass (weights copied across for evaluation).
type DeviceStepper struct {
	dev            device.Device
	train, forward *arena
	stale          bool // forward weights lag behind training
}

// MemOptions bounds an arena by a device's limits, where it has them: its
// segments stay under its largest buffer, and a plan that would not fit its
// working set is refused before any work.
func MemOptions(dev device.Device, mem passes.MemOptions) passes.MemOptions {
	if l, ok := dev.(device.Limiter); ok {
		ws, mb := l.Limits()
		mem.MaxSegment = min(mem.MaxSegment, mb)
		if mem.Budget == 0 || mem.Budget > ws {
			mem.Budget = ws
		}
	}
	return mem
}

// NewDeviceStepper places both compiled graphs (the train step and the
// forward pass, compiled for dev's target) in arenas on dev and writes params.
func NewDeviceStepper(dev device.Device, train, forward *pipeline.Unit, params map[string]*ref.Tensor) (*DeviceStepper, error) {
	s := &DeviceStepper{dev: dev}
	var err error
	if s.train, err = newArena(dev, train); err != nil {
		return nil, err
	}
	if s.forward, err = newArena(dev, forward); err != nil {
		return nil, err
	}
	if err := s.Set(params); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *DeviceStepper) Step(b data.Batch, si StepInputs) (map[string]float64, error) {
	in, err := batchInputs(s.train.c.Graph, s.train.idx, b, si)
	if err != nil {
		return nil, err
	}
	if err := s.train.run(in); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, o := range s.train.c.Graph.Outputs {
		if o.Value.Type.Shape.Elems() != 1 {
			continue
		}
		t, err := s.train.read(o.Value)
		if err != nil {
			return nil, err
		}
		out[o.Name] = t.Data[0]
	}
	s.stale = true
	return out, nil
}

func (s *DeviceStepper) Logits(b data.Batch) (*ref.Tensor, error) {
	if s.stale {
		var names []string
		for _, p := range s.forward.c.Graph.Params {
			names = append(names, p.Name)
		}
		params, err := s.Get(names)
		if err != nil {
			return nil, err
		}
		if err := s.setArena(s.forward, params); err != nil {
			return nil, err
		}
		s.stale = false
	}
	in, err := batchInputs(s.forward.c.Graph, s.forward.idx, b, StepInputs{Step: 1})
	if err != nil {
		return nil, err
	}
	if err := s.forward.run(in); err != nil {
		return nil, err
	}
	return s.forward.read(s.forward.c.Graph.Output("logits").Value)
}

func (s *DeviceStepper) Get(names []string) (map[string]*ref.Tensor, error) {
	out := map[string]*ref.Tensor{}
	for _, n := range names {
		p := s.train.c.Graph.Param(n)
		if p == nil {
			return nil, fmt.Errorf("no parameter %q", n)
		}
		t, err := s.train.read(p.Value)
		if err != nil {
			return nil, err
		}
		out[n] = t
	}
	return out, nil
}

func (s *DeviceStepper) Set(params map[string]*ref.Tensor) error {
	if err := s.setArena(s.train, params); err != nil {
		return err
	}
	s.stale = true
	return nil
}

func (s *DeviceStepper) setArena(a *arena, params map[string]*ref.Tensor) error {
	for _, p := range a.c.Graph.Params {
		t, ok := params[p.Name]
		if !ok {
			continue
		}
		if err := a.write(p.Value, t); err != nil {
			return fmt.Errorf("writing %s: %w", p.Name, err)
		}
	}
	return nil
}

func (s *DeviceStepper) Close() error { return nil }

// RunGraph evaluates a compiled graph once on dev: it places params and
// inputs in a fresh arena, launches every kernel and reads back the outputs
// (aux losses as "aux_loss.N").
func RunGraph(dev device.Device, l *pipeline.Unit, inputs, params map[string]*ref.Tensor) (map[string]*ref.Tensor, error) {
	s, err := NewSession(dev, l, params)
	if err != nil {
		return nil, err
	}
	if err := s.Run(inputs); err != nil {
		return nil, err
	}
	out := map[string]*ref.Tensor{}
	read := func(name string, v *ir.Value) error {
		t, err := s.a.read(v)
		out[name] = t
		return err
	}
	for _, o := range l.Graph.Outputs {
		if err := read(o.Name, o.Value); err != nil {
			return nil, err
		}
	}
	for i, v := range l.Graph.AuxLosses {
		if err := read(fmt.Sprintf("aux_loss.%d", i), v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CheckIndexInputs refuses an integer input of g holding a value outside
// the range it indexes (a token id past the vocabulary, a target that is
// neither a class nor ignored): every device path checks on the host first.
func CheckIndexInputs(g *ir.Graph, inputs map[string]*ref.Tensor) error {
	ranges := plan.IndexRanges(g)
	for _, in := range g.Inputs {
		r, ok := ranges[in.Name]
		t := inputs[in.Name]
		if !ok || t == nil {
			continue
		}
		if err := r.Check("input "+in.Name, t.Type.Shape, t.Data); err != nil {
			return err
		}
	}
	return nil
}
