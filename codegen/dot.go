package codegen

import (
	"fmt"
	"io"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/passes"
)

// WriteDot draws g as a Graphviz digraph: one box per op, fused kernels as
// clusters named after their kernel, values in memory as edges between them.
func WriteDot(w io.Writer, g *ir.Graph, s *passes.Schedule, kernelNames []string) error {
	var sb strings.Builder
	sb.WriteString("digraph " + quote(g.Name) + " {\n  rankdir=TB;\n  node [shape=box, fontsize=10, style=rounded];\n")
	inGroup := map[*ir.Node]bool{}
	for i, grp := range s.Groups {
		name := grp.Kind
		if i < len(kernelNames) {
			name = kernelNames[i]
		}
		fmt.Fprintf(&sb, "  subgraph cluster_%d {\n    label=%s; style=filled; color=lightgrey; fontsize=10;\n", i, quote(name))
		for _, n := range grp.Nodes {
			inGroup[n] = true
			fmt.Fprintf(&sb, "    n%d [label=%s];\n", n.ID, quote(fmt.Sprintf("%s\n%v", n.Op, n.Outputs[0].Type)))
		}
		sb.WriteString("  }\n")
	}
	for _, n := range g.Nodes {
		if inGroup[n] {
			continue
		}
		label, shape := string(n.Op), "ellipse"
		if name := n.Attrs.String("name"); name != "" {
			label = name
		}
		if n.Op == ir.OpReshape {
			shape = "plain"
		}
		fmt.Fprintf(&sb, "  n%d [label=%s, shape=%s];\n", n.ID, quote(label), shape)
	}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			fmt.Fprintf(&sb, "  n%d -> n%d;\n", v.Node.ID, n.ID)
		}
	}
	sb.WriteString("}\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
