package main

import (
	"fmt"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
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

// checkValueSizes refuses, before any compiling, a graph as written with a
// kernel result larger than one arena segment: the result of a contraction,
// reduction, scan or routing op is written to memory whatever fusion does
// (only the logits the loss is chunked over escape), so the memory plan would
// refuse it, but only after the whole compile: a minute for phase1 at
// --seq 1000000. Element-wise and layout results are left to the plan, since
// fusion may keep them out of memory.
func checkValueSizes(g *ir.Graph, maxSegment int64) error {
	if maxSegment <= 0 {
		return nil
	}
	uses := g.Uses()
	for _, n := range g.Nodes {
		d, _ := ir.Lookup(n.Op)
		if d == nil || d.Category == ir.Source || passes.Pointwise(n.Op) || chunkedLogits(n, uses) {
			continue
		}
		for _, v := range n.Outputs {
			if b := v.Type.Bytes(); b > maxSegment {
				where := n.Pos.String()
				if n.Scope != "" {
					where += " in " + n.Scope
				}
				return fmt.Errorf("the %s at %s would write %v, %s, larger than an arena segment (%s, --max-buffer): a shorter --seq or a smaller --batch would fit", n.Op, where, v.Type, gigabytes(b), gigabytes(maxSegment))
			}
		}
	}
	return nil
}

// chunkedLogits reports whether n is a matmul read only by cross-entropy:
// the logits, which the train step computes chunk by chunk.
func chunkedLogits(n *ir.Node, uses map[*ir.Value][]*ir.Node) bool {
	if n.Op != ir.OpMatmul || len(uses[n.Out()]) == 0 {
		return false
	}
	for _, u := range uses[n.Out()] {
		if u.Op != ir.OpCrossEntropy {
			return false
		}
	}
	return true
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
