package train

import (
	"fmt"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/pipeline"
)

// Session keeps a compiled graph's arena on a device from run to run, so
// parameters the graph updates (a decode step's recurrent states) stay
// where the next run reads them; the host feeds inputs and reads outputs.
type Session struct {
	a *arena
}

// NewSession places a compiled graph on dev and writes params; every
// parameter must be given.
func NewSession(dev device.Device, u *pipeline.Unit, params map[string]*ref.Tensor) (*Session, error) {
	a, err := newArena(dev, u)
	if err != nil {
		return nil, err
	}
	s := &Session{a: a}
	for _, p := range u.Graph.Params {
		if _, ok := params[p.Name]; !ok {
			return nil, fmt.Errorf("no value for parameter %s", p.Name)
		}
	}
	return s, s.Set(params)
}

// Set overwrites the named parameters.
func (s *Session) Set(params map[string]*ref.Tensor) error {
	for name, t := range params {
		p := s.a.c.Graph.Param(name)
		if p == nil {
			return fmt.Errorf("no parameter %q", name)
		}
		if err := s.a.write(p.Value, t); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// Run feeds the inputs, after checking index inputs against what they
// index, and runs the graph once; updates land in their parameters.
func (s *Session) Run(inputs map[string]*ref.Tensor) error {
	for _, in := range s.a.c.Graph.Inputs {
		if _, ok := inputs[in.Name]; !ok {
			return fmt.Errorf("no value for input %s", in.Name)
		}
	}
	if err := CheckIndexInputs(s.a.c.Graph, inputs); err != nil {
		return err
	}
	return s.a.run(inputs)
}

// Output reads a named output of the last run.
func (s *Session) Output(name string) (*ref.Tensor, error) {
	o := s.a.c.Graph.Output(name)
	if o == nil {
		return nil, fmt.Errorf("no output %q", name)
	}
	return s.a.read(o.Value)
}

// Param reads a parameter's current value.
func (s *Session) Param(name string) (*ref.Tensor, error) {
	p := s.a.c.Graph.Param(name)
	if p == nil {
		return nil, fmt.Errorf("no parameter %q", name)
	}
	return s.a.read(p.Value)
}
