package ir

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Print writes g in magc's textual IR form. The output is deterministic (it
// feeds golden files): nodes in order, attributes and constants sorted.
func Print(w io.Writer, g *Graph) error {
	p := &printer{w: w}
	p.printf("graph %s {\n", g.Name)
	if len(g.Consts) > 0 {
		keys := make([]string, 0, len(g.Consts))
		for k := range g.Consts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, g.Consts[k])
		}
		p.printf("  consts %s\n", strings.Join(parts, " "))
	}
	if t := g.Train; t.Mode != "" {
		line := "  train " + t.Mode
		if t.Mode == "qlora" {
			line += fmt.Sprintf(" rank=%d alpha=%g", t.Rank, t.Alpha)
		}
		if t.LR != 0 {
			line += fmt.Sprintf(" lr=%g", t.LR)
		}
		p.printf("%s\n", line)
	}
	params := map[*Value]*Param{}
	for _, pr := range g.Params {
		params[pr.Value] = pr
	}
	for _, n := range g.Nodes {
		p.node(n, params[n.Out()])
	}
	for _, o := range g.Outputs {
		p.printf("  output %s = %v\n", o.Name, o.Value)
	}
	for _, v := range g.AuxLosses {
		p.printf("  aux_loss %v\n", v)
	}
	for _, u := range g.Updates {
		p.printf("  update %s = %v\n", u.Param, u.Value)
	}
	p.printf("}\n")
	return p.err
}

// String prints g to a string.
func (g *Graph) String() string {
	var sb strings.Builder
	Print(&sb, g)
	return sb.String()
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) node(n *Node, param *Param) {
	outs := make([]string, len(n.Outputs))
	types := make([]string, len(n.Outputs))
	for i, v := range n.Outputs {
		outs[i], types[i] = v.String(), v.Type.String()
	}
	ins := make([]string, len(n.Inputs))
	for i, v := range n.Inputs {
		ins[i] = v.String()
	}
	line := fmt.Sprintf("  %s = %s", strings.Join(outs, ", "), n.Op)
	if len(ins) > 0 {
		line += " " + strings.Join(ins, ", ")
	}
	if a := n.Attrs.Format(); a != "" {
		line += " " + a
	}
	line += " : " + strings.Join(types, ", ")
	if param != nil {
		line += " " + param.Role.String() + " init=" + param.Init.String()
		if param.NoDecay {
			line += " nodecay"
		}
		if param.LoRA {
			line += " lora"
		}
	}
	if n.Scope != "" {
		line += " @" + n.Scope
	}
	if n.Region != 0 {
		line += fmt.Sprintf(" region=%d", n.Region)
	}
	p.printf("%s\n", line)
}
