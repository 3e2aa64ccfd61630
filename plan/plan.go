// Package plan is plan.json, magc's compiled step as data: where every
// tensor lives in the arena, which kernels run in which order over which
// buffers, and what the host feeds and reads. It reads and validates plans
// and runs them on a device.Device (Runner). It is all a program needs to run
// a compiled model: it imports neither the passes nor codegen.
package plan

import "github.com/scm-magellano/magc/ir"

// Version is the version of plan.json's format.
// Version 2 spells roles as ir.Role does (frozen, frozen_nf4).
const Version = 2

// Plan is plan.json: where every tensor of a step lives in the arena, the
// kernels and the order of their launches, and what the host does.
type Plan struct {
	Version int    `json:"version"`
	Model   string `json:"model"`
	// Precision is the storage precision it was compiled in (f32, f16, bf16).
	Precision  string     `json:"precision,omitempty"`
	Segments   []int64    `json:"segments"`
	Align      int64      `json:"align"`
	Buffers    []Buffer   `json:"buffers"`
	Kernels    []Kernel   `json:"kernels"`
	Dispatches []Dispatch `json:"dispatches"`
	Host       Host       `json:"host"`
}

// Buffer is one tensor's place in the arena.
type Buffer struct {
	Name    string  `json:"name"`
	Segment int     `json:"segment"`
	Offset  int64   `json:"offset"`
	Bytes   int64   `json:"bytes"`
	DType   string  `json:"dtype"`
	Shape   []int   `json:"shape"`
	Role    ir.Role `json:"role"`
	// Live is the first and last dispatch that touch the buffer.
	Live [2]int `json:"live"`
	// Index, on an integer input, is the range its values must lie in:
	// Runner refuses writes outside it.
	Index *IndexRange `json:"index,omitempty"`
}

// Kernel describes a kernel of the module (kernels.metal or kernels.cu).
type Kernel struct {
	Name    string   `json:"name"`
	Threads [3]int   `json:"threads"`
	Params  []string `json:"params"`
}

// Dispatch is one launch: threadgroups, and the buffer bound to each parameter.
type Dispatch struct {
	Kernel  string `json:"kernel"`
	Groups  [3]int `json:"groups"`
	Threads [3]int `json:"threads"`
	Args    []Arg  `json:"args"`
}

// Arg binds a kernel parameter to a buffer at a byte offset into it.
type Arg struct {
	Buffer string `json:"buffer"`
	Offset int64  `json:"offset,omitempty"`
}

// Host lists the host's steps around a launch sequence: buffers it
// fills before (the batch, the learning rate), buffers it reads after (the
// loss), and parameters that the step updates in place.
type Host struct {
	Feed    []string          `json:"feed"`
	Read    map[string]string `json:"read"`
	Updates map[string]string `json:"updates"`
}
