package main

import (
	"fmt"
	goruntime "runtime"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/metal"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/train"
)

// deviceFlag picks where kernels run: one spelling for run and eval.
type deviceFlag struct {
	Device string `default:"" enum:"sim,metal,cuda,ref," help:"Where kernels run: sim (the emitted Metal on the CPU), metal (macOS), cuda (an NVIDIA GPU), ref (the float64 interpreter). Default: metal on macOS, else sim."`
}

// name is the device asked for, or the platform's default.
func (d deviceFlag) name() string {
	switch {
	case d.Device != "":
		return d.Device
	case goruntime.GOOS == "darwin":
		return "metal"
	}
	return "sim"
}

// open starts the device; ref has none (nil).
func (d deviceFlag) open() (device.Device, error) {
	switch d.name() {
	case "sim":
		return sim.New(), nil
	case "metal":
		return metal.New()
	case "cuda":
		return openCUDA()
	}
	return nil, nil
}

// compileFor takes a model through the whole pipeline for dev: its kernel
// language, and an arena within the device's memory (the sim has no limit).
// Remat auto fits the M4's 10.6 GB working set, or less where the device
// has less.
func compileFor(dev device.Device, g *ir.Graph, cfg passes.Config, noFuse bool) (*pipeline.Unit, error) {
	mem := passes.DefaultMemOptions()
	if cfg.Remat != "auto" {
		mem.Budget = 0
	}
	mem = train.MemOptions(dev, mem)
	if err := checkValueSizes(g, mem.MaxSegment); err != nil {
		return nil, fmt.Errorf("compiling %s for %s: %w", g.Name, dev.Name(), err)
	}
	u, err := pipeline.Compile(g, &pipeline.Config{Passes: cfg, NoFuse: noFuse, Mem: mem, Target: dev.Target()})
	if err != nil {
		return nil, fmt.Errorf("compiling %s for %s: %w", g.Name, dev.Name(), err)
	}
	return u, nil
}
