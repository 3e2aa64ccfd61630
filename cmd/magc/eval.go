package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
)

type evalCmd struct {
	modelArg
	modelFlags
	Inputs string `required:"" help:"safetensors file with one tensor per model input." placeholder:"FILE"`
	Out    string `required:"" help:"Write the outputs (and aux losses as aux_loss.N) here, as safetensors." placeholder:"FILE"`
	Params string `help:"safetensors file of parameters; any it lacks are initialised from the model's init rules." placeholder:"FILE"`
	Seed   uint64 `default:"0" help:"Seed for initialising parameters not in --params."`
	Device string `default:"ref" enum:"ref,sim,metal,cuda" help:"ref: the float64 reference interpreter; sim: the emitted kernels on the CPU; metal, cuda: on a GPU."`
	F64    bool   `name:"f64" help:"Write F64 outputs (with --device ref, the interpreter's own precision); default F32."`
}

func (c *evalCmd) Run(e *env) error {
	model, err := c.load(c.Model)
	if err != nil {
		return err
	}
	// To the precision pass: on ref, values are rounded as kernels store them.
	u, err := pipeline.Run(model, &pipeline.Config{Passes: c.config()}, "precision")
	if err != nil {
		return err
	}
	g := u.Graph
	inputs, err := readTensors(c.Inputs, "input", inputTypes(g), true)
	if err != nil {
		return err
	}
	if err := train.CheckIndexInputs(g, inputs); err != nil {
		return fmt.Errorf("%s: %v", c.Inputs, err)
	}
	if err := checkHostMemory("evaluating "+g.Name, hostBytes(g, c.Device == "ref", 0), physicalMemory()); err != nil {
		return err
	}
	params, err := ref.InitParams(g, c.Seed)
	if err != nil {
		return internal(err)
	}
	if c.Params != "" {
		loaded, err := readTensors(c.Params, "parameter", paramTypes(g), false)
		if err != nil {
			return err
		}
		for name, t := range loaded {
			params[name] = t
		}
	}
	results, err := c.evaluate(model, g, inputs, params)
	if err != nil {
		return err
	}
	out := map[string]safetensors.Tensor{}
	for name, t := range results {
		if c.F64 && t.Type.DType.IsFloat() {
			out[name], err = safetensors.FromFloat64([]int(t.Type.Shape), t.Data)
		} else {
			out[name], err = train.ToSafetensors(t)
		}
		if err != nil {
			return internal(err)
		}
	}
	if err := safetensors.WriteFile(c.Out, out, map[string]string{"model": g.Name, "magc": "eval"}); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %d tensors to %s\n", len(out), c.Out)
	return nil
}

func inputTypes(g *ir.Graph) map[string]ir.Type {
	m := map[string]ir.Type{}
	for _, in := range g.Inputs {
		m[in.Name] = in.Value.Type
	}
	return m
}

func paramTypes(g *ir.Graph) map[string]ir.Type {
	m := map[string]ir.Type{}
	for _, p := range g.Params {
		m[p.Name] = p.Value.Type
	}
	return m
}

// readTensors loads a safetensors file whose tensors must each be one of
// want (by name and type); with all, every entry of want must be present.
func readTensors(path, what string, want map[string]ir.Type, all bool) (map[string]*ref.Tensor, error) {
	f, err := safetensors.Read(path)
	if err != nil {
		return nil, err
	}
	isCheckpoint := what == "parameter" && train.IsCheckpoint(f.Metadata)
	out := map[string]*ref.Tensor{}
	for _, name := range f.Names() {
		if isCheckpoint && (strings.HasSuffix(name, ".adam_m") || strings.HasSuffix(name, ".adam_v")) {
			continue // a training checkpoint: its weights, without the optimizer state
		}
		t, ok := want[name]
		if !ok {
			return nil, fmt.Errorf("%s: %q is not a %s of the model (%ss: %s)", path, name, what, what, strings.Join(slices.Sorted(maps.Keys(want)), ", "))
		}
		if out[name], err = train.FromSafetensors(name, f.Tensors[name], t); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	}
	if all {
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if _, ok := out[name]; !ok {
				return nil, fmt.Errorf("%s: missing %s %q (%v)", path, what, name, want[name])
			}
		}
	}
	return out, nil
}

// evaluate computes the outputs and aux losses ("aux_loss.N") of g, the
// model after its graph passes, on the chosen device.
func (c *evalCmd) evaluate(model, g *ir.Graph, inputs, params map[string]*ref.Tensor) (map[string]*ref.Tensor, error) {
	dev, err := deviceFlag{c.Device}.open()
	if err != nil {
		return nil, err
	}
	if dev != nil {
		defer dev.Close()
		u, err := compileFor(dev, model, c.config(), false)
		if err != nil {
			return nil, err
		}
		if err := checkHostMemory("evaluating "+g.Name+" on "+dev.Name(), hostBytes(g, false, hostArena(dev, u)), physicalMemory()); err != nil {
			return nil, err
		}
		return train.RunGraph(dev, u, inputs, params)
	}
	res, err := ref.Eval(g, inputs, params)
	if err != nil {
		return nil, err
	}
	out := res.Outputs
	for i, t := range res.AuxLosses {
		out[fmt.Sprintf("aux_loss.%d", i)] = t
	}
	return out, nil
}
