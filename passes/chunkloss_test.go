package passes

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// The chunked loss gives the unchunked step's losses, gradient norm and
// updates (up to float64 rounding), with ignored targets (a whole chunk of
// them too), and runs each chunk's backward before the next chunk's logits.
func TestChunkedLoss(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			g := qloraTiny(t)
			g.Train.Mode = mode
			build := func(chunkBytes int64) *ir.Graph {
				out, _ := run(t, g, Config{Train: true, LossChunkBytes: chunkBytes})
				return out
			}
			whole := build(1 << 40)
			// 8 rows × 16 logits × 4 bytes: four chunks of 2 rows.
			chunked := build(2 * 16 * 4)
			if n := countOps(whole, ir.OpCrossEntropy); n != 1 {
				t.Fatalf("unchunked step has %d cross-entropies", n)
			}
			if n := countOps(chunked, ir.OpCrossEntropy); n != 4 {
				t.Fatalf("chunked step has %d cross-entropies, want 4", n)
			}
			checkChunkOrder(t, chunked)
			// 512 bytes in 110-byte chunks asks for 5 chunks; 2 rows each
			// covers the 8 rows in 4, and a fifth would be empty (it was
			// built, and refused as a slice past the end: --seq 1000000).
			if n := countOps(build(110), ir.OpCrossEntropy); n != 4 {
				t.Fatalf("8 rows in chunks of 2: %d cross-entropies, want 4", n)
			}

			params, err := ref.InitParams(whole, 5)
			if err != nil {
				t.Fatal(err)
			}
			feeds := tokens(g, rand.New(rand.NewPCG(3, 4)))
			y := feeds["targets"].Data
			for i := range y {
				if i%5 == 0 || i == 2 || i == 3 { // scattered, and all of chunk 1
					y[i] = -100
				}
			}
			feeds, params = withOptState(whole, feeds, params, 1e-3, 1)
			want, got := eval(t, whole, feeds, params), eval(t, chunked, feeds, params)
			for _, o := range whole.Outputs {
				closeTo(t, "output "+o.Name, got.Value(chunked.Output(o.Name).Value).Data, want.Value(o.Value).Data)
			}
			for i, u := range whole.Updates {
				closeTo(t, "update "+u.Param, got.Value(chunked.Updates[i].Value).Data, want.Value(u.Value).Data)
			}
		})
	}
}

func countOps(g *ir.Graph, op ir.Op) int {
	n := 0
	for _, x := range g.Nodes {
		if x.Op == op {
			n++
		}
	}
	return n
}

// checkChunkOrder fails unless every chunk's cross-entropy backward comes
// before the next chunk's logits.
func checkChunkOrder(t *testing.T, g *ir.Graph) {
	t.Helper()
	var logits, backward []int
	for i, n := range g.Nodes {
		if !strings.HasPrefix(n.Scope, lossScope) {
			continue
		}
		switch n.Op {
		case ir.OpMatmul:
			if n.Out().Type.Shape[len(n.Out().Type.Shape)-1] == g.Consts["vocab"] {
				logits = append(logits, i)
			}
		case ir.OpCrossEntropyBwd:
			backward = append(backward, i)
		}
	}
	if len(logits) != len(backward) || len(logits) < 2 {
		t.Fatalf("%d logits matmuls, %d backward cross-entropies", len(logits), len(backward))
	}
	for c := 0; c+1 < len(logits); c++ {
		if backward[c] > logits[c+1] {
			t.Errorf("chunk %d's backward (node %d) runs after chunk %d's logits (node %d)", c, backward[c], c+1, logits[c+1])
		}
	}
}
