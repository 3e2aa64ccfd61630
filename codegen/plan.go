package codegen

import (
	"fmt"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/plan"
)

// Memory is a placed program: the arena plan and each value's buffer.
type Memory struct {
	Plan   *passes.MemPlan
	Buffer map[*ir.Value]string // value → buffer name (aliases resolved)
	Place  map[string]passes.Placed
}

// BufferName names the memory of a value: a parameter or input by its name,
// anything else by its scope, op and value id ("mamba.3/selective_scan%120").
func BufferName(v *ir.Value) string {
	n := v.Node
	if n.Op == ir.OpParam || n.Op == ir.OpInput {
		return n.Attrs.String("name")
	}
	name := fmt.Sprintf("%s%%%d", n.Op, v.ID)
	if n.Scope != "" {
		name = n.Scope + "/" + name
	}
	return name
}

// role is a buffer's role; params are the graph's by name (a map: a
// Graph.Param search per buffer grew with the square of the model).
func role(params map[string]*ir.Param, v *ir.Value) ir.Role {
	switch v.Node.Op {
	case ir.OpInput:
		return ir.HostInput
	case ir.OpParam:
		return params[v.Node.Attrs.String("name")].Role
	}
	if strings.HasPrefix(v.Node.Scope, "grad") {
		return ir.Gradient
	}
	return ir.Activation
}

// paramsByName indexes g.Params as Graph.Param finds them: the first of a name.
func paramsByName(g *ir.Graph) map[string]*ir.Param {
	m := map[string]*ir.Param{}
	for _, p := range g.Params {
		if _, ok := m[p.Name]; !ok {
			m[p.Name] = p
		}
	}
	return m
}

// PlaceMemory plans the arena for a program: every value a launch touches
// gets a buffer; reshapes share their operand's buffer; an update shares its
// parameter's buffer when the launch that writes it is the parameter's last
// reader (AdamW writes θ', m', v' over θ, m, v element by element).
func PlaceMemory(g *ir.Graph, p *Program, opt passes.MemOptions) (*Memory, error) {
	owner := func(v *ir.Value) *ir.Value {
		if a, ok := p.Alias[v]; ok {
			return a
		}
		return v
	}
	params := paramsByName(g)
	info := map[string]passes.BufferInfo{}
	names := map[*ir.Value]string{}
	declare := func(v *ir.Value) string {
		o := owner(v)
		name := BufferName(o)
		names[v], names[o] = name, name
		if _, ok := info[name]; !ok {
			info[name] = passes.BufferInfo{Bytes: o.Stored().Bytes(), Role: role(params, o),
				Persistent: o.Node.Op == ir.OpParam || o.Node.Op == ir.OpInput}
		}
		return name
	}
	var steps []passes.MemStep
	var kernelNames []string
	ready := map[*ir.Value]bool{} // values in memory so far
	for i, d := range p.Dispatches {
		written := map[*ir.Value]bool{}
		st := passes.MemStep{Name: d.Kernel}
		for _, v := range d.Writes {
			written[v] = true
			st.Writes = append(st.Writes, declare(v))
		}
		for _, b := range d.Bindings {
			if written[b.Value] {
				continue
			}
			// A schedule that reads a result before its kernel runs is a
			// compiler bug: the arena would hand it stale memory.
			if o := owner(b.Value); !ready[o] && o.Node.Op != ir.OpParam && o.Node.Op != ir.OpInput {
				return nil, fmt.Errorf("codegen: launch %d (%s) reads %v before any launch writes it", i, d.Kernel, b.Value)
			}
			st.Reads = append(st.Reads, declare(b.Value))
		}
		for _, v := range d.Writes {
			ready[owner(v)] = true
		}
		steps = append(steps, st)
		kernelNames = append(kernelNames, d.Kernel)
	}
	for _, o := range g.Outputs {
		bi := info[declare(o.Value)]
		bi.Output = true
		info[names[o.Value]] = bi
	}
	for _, v := range g.AuxLosses {
		bi := info[declare(v)]
		bi.Output = true
		info[names[v]] = bi
	}
	// An update that could not take its parameter's memory is copied back by
	// the host after the last launch, so it must live to the end.
	for _, u := range g.Updates {
		bi := info[declare(u.Value)]
		bi.Output = true
		info[names[u.Value]] = bi
	}
	for _, prm := range g.Params {
		declare(prm.Value)
	}
	for _, in := range g.Inputs {
		declare(in.Value)
	}
	bufs, err := passes.Lifetimes(steps, info)
	if err != nil {
		return nil, err
	}
	opt.KernelNames = kernelNames
	plan, err := passes.PlanMemory(bufs, max(len(steps), 1), opt)
	m := &Memory{Plan: plan, Buffer: names, Place: map[string]passes.Placed{}}
	if plan != nil {
		for _, b := range plan.Buffers {
			m.Place[b.Name] = b
		}
	}
	return m, err
}

// BuildPlan assembles plan.json from a program and its memory.
func BuildPlan(g *ir.Graph, p *Program, m *Memory) *plan.Plan {
	out := &plan.Plan{Version: plan.Version, Model: g.Name, Segments: m.Plan.Segments, Align: m.Plan.Align,
		Host: plan.Host{Read: map[string]string{}, Updates: map[string]string{}}}
	values := map[string]*ir.Value{}
	for v, name := range m.Buffer {
		if _, ok := values[name]; !ok || v.ID < values[name].ID {
			values[name] = v
		}
	}
	ranges := plan.IndexRanges(g)
	inputs := map[string]string{}
	for _, in := range g.Inputs {
		inputs[m.Buffer[in.Value]] = in.Name
	}
	for _, b := range m.Plan.Buffers {
		v := values[b.Name]
		pb := plan.Buffer{Name: b.Name, Segment: b.Segment, Offset: b.Offset, Bytes: b.Bytes, Role: b.Role, Live: [2]int{b.Start, b.End}}
		if v != nil {
			pb.DType, pb.Shape = v.Stored().DType.String(), []int(v.Type.Shape)
		}
		if r, ok := ranges[inputs[b.Name]]; ok {
			pb.Index = &r
		}
		out.Buffers = append(out.Buffers, pb)
	}
	for _, k := range p.Module.Kernels {
		pk := plan.Kernel{Name: k.Name, Threads: k.Threads}
		for _, prm := range k.Params {
			pk.Params = append(pk.Params, prm.Name)
		}
		out.Kernels = append(out.Kernels, pk)
	}
	for _, d := range p.Dispatches {
		pd := plan.Dispatch{Kernel: d.Kernel, Groups: d.Groups, Threads: d.Threads}
		for _, b := range d.Bindings {
			pd.Args = append(pd.Args, plan.Arg{Buffer: m.Buffer[b.Value], Offset: b.Offset})
		}
		out.Dispatches = append(out.Dispatches, pd)
	}
	for _, in := range g.Inputs {
		out.Host.Feed = append(out.Host.Feed, in.Name)
	}
	for _, o := range g.Outputs {
		out.Host.Read[o.Name] = m.Buffer[o.Value]
	}
	for _, u := range g.Updates {
		out.Host.Updates[u.Param] = m.Buffer[u.Value]
	}
	return out
}
