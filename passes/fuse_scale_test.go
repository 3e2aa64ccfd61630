package passes

import (
	"fmt"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
)

// TestBudgetMatchesJointBuffers checks the incremental buffer count Fuse
// keeps per group against jointBuffers counted afresh: for every group of
// tiny's fused train step (both modes), as built and with each node of the
// graph that could join it.
func TestBudgetMatchesJointBuffers(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		g, _ := run(t, loadModel(t, "tiny", nil), Config{Mode: mode, Train: true})
		uses := g.Uses()
		kept := map[*ir.Value]bool{}
		for _, v := range g.Results() {
			kept[v] = true
		}
		s := Fuse(g, true)
		bb := newBudget(uses, kept)
		checked := 0
		for _, grp := range s.Groups {
			a := bb.of(grp)
			if want := jointBuffers(grp.Nodes, uses, kept); a.count != want {
				t.Fatalf("%s: group %s: budget %d, jointBuffers %d", mode, grp.Root.Op, a.count, want)
			}
			in := map[*ir.Node]bool{}
			for _, n := range grp.Nodes {
				in[n] = true
			}
			for _, n := range g.Nodes {
				if in[n] {
					continue
				}
				want := jointBuffers(append([]*ir.Node{n}, grp.Nodes...), uses, kept)
				if got := a.with(n); got != want {
					t.Fatalf("%s: group %s with %s: budget %d, jointBuffers %d", mode, grp.Root.Op, n.Op, got, want)
				}
				checked++
			}
		}
		if checked == 0 {
			t.Fatal("nothing checked")
		}
	}
}

// chainSource is a model of n element-wise layers: the whole chain fuses
// into one kernel, the case where Fuse's per-node check used to cost the
// group's size (4,000 nodes 2.1 s before; linear now).
func chainSource(n int) []byte {
	return fmt.Appendf(nil, "model chain\ninput x: f32[4, 8]\nh = x\nrepeat %d { h = silu(h) + h }\noutput y = h\n", n)
}

// BenchmarkFuseChain times Fuse against the length of an element-wise
// chain: the time per layer should stay flat.
func BenchmarkFuseChain(b *testing.B) {
	for _, n := range []int{1000, 4000, 16000, 100000} {
		g, err := lang.Build("chain.graph", chainSource(n), lang.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if s := Fuse(g, true); len(s.Groups) != 1 {
					b.Fatalf("%d kernels, want the chain in one", len(s.Groups))
				}
			}
		})
	}
}
