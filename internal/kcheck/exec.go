// Package kcheck checks compiled kernels one by one against the float64
// reference: each kernel runs alone on operands the reference computed, and
// what it writes is compared with what the reference says. Tests use it (on
// every device present); nothing magc ships links it.
package kcheck

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/train"
)

// Placement says where a value lives: a buffer and a byte offset in it.
type Placement func(v *ir.Value) (device.Buffer, int64, error)

// Executor launches a compiled program's kernels on a device one at a time,
// with each value wherever a Placement puts it: how CheckKernels runs every
// kernel on its own. A whole step runs through its plan (PlanRunner), the
// way a plan.json runs without the compiler.
type Executor struct {
	Dev     device.Device
	Prog    *codegen.Program
	kernels map[string]device.Kernel
	place   Placement
	begin   func(dispatch int) error // readies the placement for a dispatch, if set
	// partials holds what a checked launch wrote to a scratch value (see
	// codegen.Program.Scratch) until the launch that reads it is checked.
	partials map[*ir.Value]*ref.Tensor
}

// NewExecutor renders the program's module for dev's target and compiles it there.
func NewExecutor(dev device.Device, prog *codegen.Program, place Placement) (*Executor, error) {
	src, err := codegen.Render(prog.Module, dev.Target())
	if err != nil {
		return nil, err
	}
	lib, err := dev.Compile(src)
	if err != nil {
		return nil, err
	}
	x := &Executor{Dev: dev, Prog: prog, kernels: map[string]device.Kernel{}, place: place, partials: map[*ir.Value]*ref.Tensor{}}
	for _, k := range prog.Module.Kernels {
		if x.kernels[k.Name], err = lib.Kernel(k.Name); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// resolve follows aliases to the value that owns the memory.
func (x *Executor) resolve(v *ir.Value) *ir.Value {
	if a, ok := x.Prog.Alias[v]; ok {
		return a
	}
	return v
}

// Run launches dispatch i.
func (x *Executor) Run(i int) error {
	d := x.Prog.Dispatches[i]
	args := make([]device.Arg, len(d.Bindings))
	for j, b := range d.Bindings {
		buf, off, err := x.place(x.resolve(b.Value))
		if err != nil {
			return err
		}
		args[j] = device.BufferArg(buf, off+b.Offset)
	}
	if err := x.Dev.Dispatch(x.kernels[d.Kernel], d.Groups, d.Threads, args); err != nil {
		return fmt.Errorf("dispatch %d (%s): %w", i, d.Kernel, err)
	}
	return nil
}

// Write stores a reference tensor in v's memory, in v's storage format.
func (x *Executor) Write(v *ir.Value, t *ref.Tensor) error {
	buf, off, err := x.place(x.resolve(v))
	if err != nil {
		return err
	}
	if v.Store != ir.Invalid {
		t = &ref.Tensor{Type: v.Stored(), Data: t.Data}
	}
	data, err := train.Encode(t)
	if err != nil {
		return err
	}
	return x.Dev.Write(buf, off, data)
}

// Read loads v's memory as a reference tensor of v's type.
func (x *Executor) Read(v *ir.Value) (*ref.Tensor, error) {
	buf, off, err := x.place(x.resolve(v))
	if err != nil {
		return nil, err
	}
	data := make([]byte, v.Stored().Bytes())
	if err := x.Dev.Read(buf, off, data); err != nil {
		return nil, err
	}
	t, err := train.Decode(v.Stored(), data)
	if err == nil {
		t.Type = v.Type
	}
	return t, err
}
