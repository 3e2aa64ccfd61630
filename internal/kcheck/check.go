package kcheck

import (
	"fmt"
	"math"
	"slices"

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

// Tolerance is the relative error allowed for a value of type t as stored:
// f32 1e-5 (kernels compute in f32, the reference in float64); f16 and bf16
// their unit roundoff, 2^-11 and 2^-8, since kernel and reference round
// (nearly) the same number to the format and may land one step apart;
// integer results must be exact.
func Tolerance(t ir.Type) float64 {
	switch t.DType {
	case ir.F16:
		return 0x1p-11
	case ir.BF16:
		return 0x1p-8
	case ir.I32, ir.U8:
		return 0
	}
	return 1e-5
}

// CheckKernels runs every dispatch of x in isolation: it writes each
// kernel's operands from the reference values, launches it, and compares
// what it wrote with the reference. It returns the mismatches.
//
// A scratch value (the partials of a reduction split in two launches) has
// no reference value: the launch that writes it is checked on its other
// outputs, what it wrote is kept, and the launch that reads it gets that.
// So the partials are checked through the result folded from them, which is
// compared with the reference like any other output (and partials a launch
// fails to write stay NaN and spoil that result).
func CheckKernels(x *Executor, want map[*ir.Value]*ref.Tensor) ([]Mismatch, error) {
	var bad []Mismatch
	for i := range x.Prog.Dispatches {
		m, err := x.checkDispatch(i, want)
		if err != nil {
			return nil, err
		}
		bad = append(bad, m...)
	}
	return bad, nil
}

// checkDispatch runs dispatch i alone on operands from want and compares
// what it writes with want.
func (x *Executor) checkDispatch(i int, want map[*ir.Value]*ref.Tensor) ([]Mismatch, error) {
	d := x.Prog.Dispatches[i]
	if x.begin != nil {
		if err := x.begin(i); err != nil {
			return nil, err
		}
	}
	written := map[*ir.Value]bool{}
	for _, v := range d.Writes {
		written[v] = true
	}
	for _, b := range d.Bindings {
		if written[b.Value] {
			continue
		}
		t, ok := want[b.Value]
		if x.Prog.Scratch[b.Value] {
			if t, ok = x.partials[b.Value]; !ok {
				return nil, fmt.Errorf("dispatch %d reads scratch %v before the launch writing it was checked", i, b.Value)
			}
			delete(x.partials, b.Value) // one reader: the second pass
		}
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
	var bad []Mismatch
	for _, v := range d.Writes {
		if x.Prog.Scratch[v] {
			got, err := x.Read(v)
			if err != nil {
				return nil, err
			}
			x.partials[v] = got
			continue
		}
		w, ok := want[v]
		if !ok {
			return nil, fmt.Errorf("dispatch %d writes %v, which the reference did not compute", i, v)
		}
		got, err := x.Read(v)
		if err != nil {
			return nil, err
		}
		if e := RelErr(got, w); !(e <= Tolerance(v.Stored())) {
			bad = append(bad, Mismatch{Dispatch: i, Kernel: d.Kernel, Value: v, RelErr: e})
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

// CheckProgram renders a program for dev's target, compiles it there and
// checks every kernel against the reference values (CheckKernels), with the
// values of one dispatch at a time in one reused buffer (DispatchArena).
func CheckProgram(dev device.Device, prog *codegen.Program, want map[*ir.Value]*ref.Tensor) ([]Mismatch, error) {
	x, err := NewArenaExecutor(dev, prog)
	if err != nil {
		return nil, err
	}
	return CheckKernels(x, want)
}

// CheckGraph is CheckProgram on every device of devs without holding the
// whole reference: it evaluates g (prog's graph) with ref.Stream in the
// program's dispatch order, checking each dispatch as soon as the reference
// has computed everything it binds, so each reference value lives only until
// its last reader, node or kernel. Memory is the reference's live set plus
// one dispatch's operands per device, where CheckProgram needs every value
// of the graph. The caller should keep no other reference to inputs and
// params, so they go too once read. Mismatches come per device, in dispatch
// order.
func CheckGraph(devs []device.Device, prog *codegen.Program, g *ir.Graph, inputs, params map[string]*ref.Tensor) ([][]Mismatch, error) {
	index := make(map[*ir.Node]int, len(g.Nodes))
	for i, n := range g.Nodes {
		index[n] = i
	}
	// Evaluate in the order the dispatches need values (the schedule's
	// order, which keeps few values live), then whatever no dispatch binds.
	pos := make([]int, len(g.Nodes)) // node index → position in order, -1 until placed
	for i := range pos {
		pos[i] = -1
	}
	var order []int
	var need func(n *ir.Node)
	need = func(n *ir.Node) {
		// Iterative depth-first walk: a deep graph must not overflow the stack.
		stack := []*ir.Node{n}
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if pos[index[top]] >= 0 {
				stack = stack[:len(stack)-1]
				continue
			}
			pushed := false
			for _, v := range top.Inputs {
				if pos[index[v.Node]] < 0 {
					stack = append(stack, v.Node)
					pushed = true
				}
			}
			if !pushed {
				stack = stack[:len(stack)-1]
				pos[index[top]] = len(order)
				order = append(order, index[top])
			}
		}
	}
	ready := map[int][]int{} // position in order → dispatches checkable after it
	until := map[*ir.Value]int{}
	scratchAt := map[*ir.Value]int{} // scratch value → position its writer is checked at
	for i, d := range prog.Dispatches {
		vs := append([]*ir.Value(nil), d.Writes...)
		for _, b := range d.Bindings {
			vs = append(vs, b.Value)
		}
		at := 0
		for _, v := range vs {
			if prog.Scratch[v] {
				// Its reader is checked no earlier than its writer (and
				// after it at the same position: ready keeps dispatch order).
				if k, ok := scratchAt[v]; ok {
					at = max(at, k)
				}
				continue
			}
			if _, ok := index[v.Node]; !ok {
				return nil, fmt.Errorf("dispatch %d binds %v, which is not a value of the graph", i, v)
			}
			need(v.Node)
			at = max(at, pos[index[v.Node]])
		}
		ready[at] = append(ready[at], i)
		for _, v := range vs {
			if prog.Scratch[v] {
				if _, ok := scratchAt[v]; !ok {
					scratchAt[v] = at
				}
				continue
			}
			until[v] = max(until[v], at)
		}
	}
	for _, n := range g.Nodes {
		need(n)
	}
	xs := make([]*Executor, len(devs))
	for j, dev := range devs {
		x, err := NewArenaExecutor(dev, prog)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dev.Name(), err)
		}
		xs[j] = x
	}
	bad := make([][]Mismatch, len(devs))
	visit := func(p int, vals map[*ir.Value]*ref.Tensor) error {
		for _, di := range ready[p] {
			for j, x := range xs {
				m, err := x.checkDispatch(di, vals)
				if err != nil {
					return fmt.Errorf("%s: %w", devs[j].Name(), err)
				}
				bad[j] = append(bad[j], m...)
			}
		}
		return nil
	}
	err := ref.Stream(g, inputs, params, ref.StreamOptions{Order: order, Until: until, Visit: visit})
	if err != nil {
		return nil, err
	}
	for _, b := range bad {
		slices.SortStableFunc(b, func(p, q Mismatch) int { return p.Dispatch - q.Dispatch })
	}
	return bad, nil
}

// SeparateBuffers places every value in its own buffer, allocated on first
// use and kept: enough to test kernels without a memory plan, and what a test
// needs that runs several dispatches in a row on the same values.
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

// arenaAlign keeps every value of a dispatch at a 256-byte boundary, as
// device buffers are (and as vector loads want).
const arenaAlign = 256

// NewArenaExecutor is NewExecutor with the values of one dispatch at a time
// packed into a single buffer, reused by the next dispatch: it suits
// CheckKernels, which writes every operand of a dispatch before launching it.
// The buffer is as large as the largest dispatch's operands (device buffers
// cannot be freed through device.Device, so a buffer per value would keep
// every value of the program alive).
func NewArenaExecutor(dev device.Device, prog *codegen.Program) (*Executor, error) {
	a := &arena{}
	x, err := NewExecutor(dev, prog, a.place)
	if err != nil {
		return nil, err
	}
	var size int64
	for i := range prog.Dispatches {
		size = max(size, a.layout(x, i))
	}
	if a.buf, err = dev.Alloc(max(size, 4)); err != nil {
		return nil, err
	}
	x.begin = func(i int) error { a.layout(x, i); return nil }
	return x, nil
}

// arena places the values a dispatch binds side by side in one buffer.
type arena struct {
	buf device.Buffer
	off map[*ir.Value]int64
}

// layout assigns offsets to dispatch i's values (after alias resolution)
// and returns the bytes they take.
func (a *arena) layout(x *Executor, i int) int64 {
	d := x.Prog.Dispatches[i]
	a.off = map[*ir.Value]int64{}
	var end int64
	add := func(v *ir.Value) {
		v = x.resolve(v)
		if _, ok := a.off[v]; ok {
			return
		}
		a.off[v] = end
		end += (max(v.Type.Bytes(), 4) + arenaAlign - 1) / arenaAlign * arenaAlign
	}
	for _, b := range d.Bindings {
		add(b.Value)
	}
	for _, v := range d.Writes {
		add(v)
	}
	return end
}

func (a *arena) place(v *ir.Value) (device.Buffer, int64, error) {
	off, ok := a.off[v]
	if !ok {
		return nil, 0, fmt.Errorf("kcheck: %v is not bound by the dispatch being checked", v)
	}
	return a.buf, off, nil
}
