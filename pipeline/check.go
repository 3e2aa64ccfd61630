package pipeline

import (
	"cmp"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/scm-magellano/magc/ir"
)

// verifyFuse checks the schedule: every group computes its outputs, and
// reads only sources, its own nodes' results and what earlier groups wrote.
func verifyFuse(u *Unit) error {
	written := map[*ir.Value]bool{}
	for i, grp := range u.Sched.Groups {
		inside := map[*ir.Node]bool{}
		for _, n := range grp.Nodes {
			inside[n] = true
		}
		if !inside[grp.Root] {
			return fmt.Errorf("group %d (%s): its root %s is not among its nodes", i, grp.Kind, grp.Root.Op)
		}
		for _, v := range grp.Outputs {
			if !inside[v.Node] {
				return fmt.Errorf("group %d (%s) writes %v, which none of its nodes computes", i, grp.Kind, v)
			}
		}
		for _, n := range grp.Nodes {
			for _, in := range n.Inputs {
				if a, ok := u.Sched.Alias[in]; ok {
					in = a
				}
				switch {
				case inside[in.Node], written[in], in.Node.Op == ir.OpParam, in.Node.Op == ir.OpInput, in.Node.Op == ir.OpConst:
				default:
					return fmt.Errorf("group %d (%s at %s) reads %v before any group writes it", i, grp.Kind, grp.Root.Pos, in)
				}
			}
		}
		for _, v := range grp.Outputs {
			written[v] = true
		}
	}
	return nil
}

func dumpFuse(w io.Writer, u *Unit) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tkind\tnodes\troot\twrites")
	for i, grp := range u.Sched.Groups {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s %v\t%v\n", i, grp.Kind, len(grp.Nodes), grp.Root.Op, grp.Root.Pos, grp.Outputs)
	}
	return tw.Flush()
}

// verifyLower checks the program: every launch runs a kernel of the module
// with one binding per parameter.
func verifyLower(u *Unit) error {
	params := map[string]int{}
	for _, k := range u.Prog.Module.Kernels {
		params[k.Name] = len(k.Params)
	}
	for i, d := range u.Prog.Dispatches {
		n, ok := params[d.Kernel]
		if !ok {
			return fmt.Errorf("launch %d runs %s, which the module does not hold", i, d.Kernel)
		}
		if n != len(d.Bindings) {
			return fmt.Errorf("launch %d binds %d buffers to %s, which takes %d", i, len(d.Bindings), d.Kernel, n)
		}
	}
	return nil
}

func dumpLower(w io.Writer, u *Unit) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "kernel\tthreads\tgroups\tparams\tfuses")
	for _, d := range u.Prog.Dispatches {
		fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%d ops\n", d.Kernel, d.Threads, d.Groups, len(d.Bindings), len(d.Fuses))
	}
	return tw.Flush()
}

// dumpPrecision lists every value kernels write to memory with the type it
// is stored in, and the op that computes it.
func dumpPrecision(w io.Writer, u *Unit) error {
	st := u.Precision
	fmt.Fprintf(w, "precision %s: %d values stored in the half type, %d in f32, %d bytes saved per step\n",
		cmp.Or(st.Precision, "f32"), st.HalfValues, st.F32Values, st.BytesSaved)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "value\tstored\top\tscope")
	for _, grp := range u.Sched.Groups {
		for _, v := range grp.Outputs {
			fmt.Fprintf(tw, "%v\t%v\t%s\t%s\n", v, v.Stored(), v.Node.Op, v.Node.Scope)
		}
	}
	return tw.Flush()
}
