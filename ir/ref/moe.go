package ref

import (
	"fmt"
	"math"
	"sort"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpTopK, topkImpl)
	register(ir.OpMoERoute, moeRouteImpl)
}

// topkImpl returns the k largest entries of the last axis, descending, and
// their i32 indices. Ties go to the lower index first (a stable sort), and
// NaN ranks above every number, as in torch.topk.
func topkImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x := in[0]
	k := n.Attrs.Int("k")
	vals, idxs := New(n.Outputs[0].Type), New(n.Outputs[1].Type)
	rows, w := lastAxis(x.Type.Shape)
	order := make([]int, w)
	for r := 0; r < rows; r++ {
		row := x.Data[r*w : (r+1)*w]
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(i, j int) bool { return ranksAbove(row[order[i]], row[order[j]]) })
		for j := 0; j < k; j++ {
			vals.Data[r*k+j] = row[order[j]]
			idxs.Data[r*k+j] = float64(order[j])
		}
	}
	return []*Tensor{vals, idxs}, nil
}

func ranksAbove(a, b float64) bool {
	if math.IsNaN(a) {
		return !math.IsNaN(b)
	}
	return a > b
}

// moeRouteImpl groups the T·k (token, choice) pairs of idx (T,k) by expert:
// row r of the permuted buffer holds token rows[r], which is choice
// slots[r] = t·k+j, and expert e owns rows offsets[e] ≤ r < offsets[e+1].
// Experts come in increasing order and, within one, pairs keep their (t, j)
// order (a stable counting sort). An expert id outside [0, experts) is an error.
func moeRouteImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	idx := in[0]
	experts := n.Attrs.Int("experts")
	k := idx.Type.Shape[1]
	rows, slots, offsets := New(n.Outputs[0].Type), New(n.Outputs[1].Type), New(n.Outputs[2].Type)
	count := make([]int, experts+1)
	for i, v := range idx.Data {
		e := int(v)
		if e < 0 || e >= experts {
			return nil, fmt.Errorf("expert %d chosen by token %d (choice %d) is outside [0, %d)", e, i/k, i%k, experts)
		}
		count[e+1]++
	}
	for e := 1; e <= experts; e++ {
		count[e] += count[e-1]
	}
	for e, o := range count {
		offsets.Data[e] = float64(o)
	}
	next := count[:experts] // next free row of each expert
	for i, v := range idx.Data {
		e := int(v)
		r := next[e]
		next[e]++
		rows.Data[r] = float64(i / k)
		slots.Data[r] = float64(i)
	}
	return []*Tensor{rows, slots, offsets}, nil
}
