package kcheck

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// Mismatch is a kernel output that disagrees with the reference.
type Mismatch struct {
	Dispatch int
	Kernel   string
	Value    *ir.Value
	RelErr   float64
}

func (m Mismatch) String() string {
	return fmt.Sprintf("dispatch %d (%s): %v %v relative error %.3g", m.Dispatch, m.Kernel, m.Value, m.Value.Type, m.RelErr)
}

// RelErr is ‖got − want‖₂ / ‖want‖₂ (the absolute norm when want is zero).
func RelErr(got, want *ref.Tensor) float64 {
	g, w := got.Data, want.Data
	if got.Type.DType == ir.NF4 {
		return 0
	}
	var num, den float64
	for i := range w {
		d := g[i] - w[i]
		if math.IsNaN(g[i]) != math.IsNaN(w[i]) {
			return math.Inf(1)
		}
		if !math.IsNaN(d) {
			num += d * d
		}
		den += w[i] * w[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// Tolerance is the relative error allowed for a value: fp32 paths 1e-5,
// f16/bf16 storage 2e-3; integer results must be exact.
func Tolerance(t ir.Type) float64 {
	switch t.DType {
	case ir.F16, ir.BF16:
		return 2e-3
	case ir.I32, ir.U8:
		return 0
	}
	return 1e-5
}

// CheckKernels runs every dispatch of x in isolation: it writes each
// kernel's operands from the reference values, launches it, and compares
// what it wrote with the reference. It returns the mismatches.
func CheckKernels(x *Executor, want map[*ir.Value]*ref.Tensor) ([]Mismatch, error) {
	var bad []Mismatch
	for i, d := range x.Prog.Dispatches {
		written := map[*ir.Value]bool{}
		for _, v := range d.Writes {
			written[v] = true
		}
		for _, b := range d.Bindings {
			if written[b.Value] {
				continue
			}
			t, ok := want[b.Value]
			if !ok {
				return nil, fmt.Errorf("dispatch %d reads %v, which the reference did not compute", i, b.Value)
			}
			if err := x.Write(b.Value, t); err != nil {
				return nil, err
			}
		}
		// Outputs start as NaN (or an unlikely integer), so an element the
		// kernel fails to write shows; not those updated in place.
		read := map[*ir.Value]bool{}
		for _, b := range d.Bindings {
			if !written[b.Value] {
				read[x.resolve(b.Value)] = true
			}
		}
		for _, v := range d.Writes {
			if read[x.resolve(v)] {
				continue
			}
			if err := x.Write(v, poison(v.Type)); err != nil {
				return nil, err
			}
		}
		if err := x.Run(i); err != nil {
			return nil, err
		}
		for _, v := range d.Writes {
			got, err := x.Read(v)
			if err != nil {
				return nil, err
			}
			if e := RelErr(got, want[v]); !(e <= Tolerance(v.Type)) {
				bad = append(bad, Mismatch{Dispatch: i, Kernel: d.Kernel, Value: v, RelErr: e})
			}
		}
	}
	return bad, nil
}

func poison(t ir.Type) *ref.Tensor {
	p := ref.New(t)
	for i := range p.Data {
		p.Data[i] = math.NaN()
		if t.DType == ir.I32 {
			p.Data[i] = -123456789
		}
	}
	return p
}

// CheckProgram renders a program for dev's target, compiles it there with a
// buffer per value and checks every kernel against the reference values
// (CheckKernels).
func CheckProgram(dev device.Device, prog *codegen.Program, want map[*ir.Value]*ref.Tensor) ([]Mismatch, error) {
	x, err := NewExecutor(dev, prog, SeparateBuffers(dev))
	if err != nil {
		return nil, err
	}
	return CheckKernels(x, want)
}

// SeparateBuffers places every value in its own buffer, allocated on first
// use: enough to test kernels without a memory plan.
func SeparateBuffers(dev device.Device) Placement {
	bufs := map[*ir.Value]device.Buffer{}
	return func(v *ir.Value) (device.Buffer, int64, error) {
		if b, ok := bufs[v]; ok {
			return b, 0, nil
		}
		b, err := dev.Alloc(max(v.Type.Bytes(), 4))
		if err != nil {
			return nil, 0, err
		}
		bufs[v] = b
		return b, 0, nil
	}
}
