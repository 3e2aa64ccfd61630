package main

import (
	"fmt"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/pipeline"
)

// hostBytes estimates the host memory a command needs for g before it
// allocates any: every parameter as a float64 tensor (how the host holds
// weights), plus, for the reference interpreter (values), every value the
// interpreter keeps; arena is device memory that lives in host memory (the
// sim's arenas). Sizes saturate instead of overflowing.
func hostBytes(g *ir.Graph, values bool, arena int64) int64 {
	total := arena
	add := func(elems int64) {
		if elems > (1<<62-total)/8 {
			total = 1 << 62
			return
		}
		total += 8 * elems
	}
	for _, p := range g.Params {
		add(p.Value.Type.Shape.Elems())
	}
	if values {
		for _, n := range g.Nodes {
			if n.Op == ir.OpParam {
				continue // counted above
			}
			for _, v := range n.Outputs {
				add(v.Type.Shape.Elems())
			}
		}
	}
	return total
}

// physicalMemory is the machine's memory in bytes (0 when unknown); a
// variable so tests can play a smaller machine.
var physicalMemory = osPhysicalMemory

// checkHostMemory refuses, before allocating, work that needs more memory
// than the machine has (ram: physicalMemory, 0 when unknown), naming the need.
func checkHostMemory(what string, need, ram int64) error {
	if ram <= 0 || need <= ram {
		return nil
	}
	return fmt.Errorf("%s needs about %s of memory, more than this machine's %s (a smaller model, --batch, --seq or --lora-rank would fit)", what, gigabytes(need), gigabytes(ram))
}

// hostArena is the arena bytes of compiled units that live in host memory:
// all of them on the sim and on Apple's unified memory, none on CUDA.
func hostArena(dev device.Device, units ...*pipeline.Unit) int64 {
	if dev.Target() == "cuda" {
		return 0
	}
	var n int64
	for _, u := range units {
		n += u.Memory.Plan.ArenaBytes
	}
	return n
}
