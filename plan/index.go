package plan

import (
	"fmt"
	"math"
	"strconv"

	"github.com/scm-magellano/magc/ir"
)

// IndexRange is the values an integer input may hold: indices in
// [0, Below), plus Ignore where every use of the input is a loss that skips
// that value (targets' -100). The host checks inputs against it before any
// device sees them; kernels also clamp their gathers, but a clamped index
// is a wrong answer, not a refusal.
type IndexRange struct {
	Below  int  `json:"below"`
	Ignore *int `json:"ignore,omitempty"`
	// Of says what the values index, for messages ("the 50257 rows of %3").
	Of string `json:"-"`
}

// IndexRanges finds each integer input of g that indexes something (a
// gather's table, a scatter's rows, a loss's vocabulary, a router's
// experts), following it through ops that only move values (reshape,
// transpose, broadcast, slice, concat). An input with several such uses
// takes the tightest bound; Ignore survives only if every use allows it.
func IndexRanges(g *ir.Graph) map[string]IndexRange {
	type use struct {
		n   *ir.Node
		arg int
	}
	users := map[*ir.Value][]use{}
	for _, n := range g.Nodes {
		for i, v := range n.Inputs {
			users[v] = append(users[v], use{n, i})
		}
	}
	out := map[string]IndexRange{}
	for _, in := range g.Inputs {
		if in.Value.Type.DType.IsFloat() {
			continue
		}
		type limit struct {
			below int
			of    string
			ign   *int
		}
		var limits []limit
		bound := func(below int, of string, ign *int) { limits = append(limits, limit{below, of, ign}) }
		seen := map[*ir.Value]bool{}
		var walk func(v *ir.Value)
		walk = func(v *ir.Value) {
			if seen[v] {
				return
			}
			seen[v] = true
			for _, u := range users[v] {
				n := u.n
				switch n.Op {
				case ir.OpReshape, ir.OpTranspose, ir.OpBroadcast, ir.OpSlice, ir.OpConcat:
					walk(n.Out())
				case ir.OpGather:
					if u.arg == 1 {
						rows := n.Inputs[0].Type.Shape[0]
						bound(rows, fmt.Sprintf("the %d rows of the gathered table", rows), nil)
					}
				case ir.OpScatter:
					if u.arg == 0 {
						rows := n.Attrs.Int("rows")
						bound(rows, fmt.Sprintf("the %d rows scatter_add writes", rows), nil)
					}
				case ir.OpCrossEntropy, ir.OpCrossEntropyBwd:
					if u.arg == 1 {
						s := n.Inputs[0].Type.Shape
						v := s[len(s)-1]
						ign := n.Attrs.Int("ignore_index")
						bound(v, fmt.Sprintf("the loss's vocabulary of %d", v), &ign)
					}
				case ir.OpMoERoute:
					if u.arg == 0 {
						e := n.Attrs.Int("experts")
						bound(e, fmt.Sprintf("the %d experts", e), nil)
					}
				}
			}
		}
		walk(in.Value)
		if len(limits) == 0 {
			continue
		}
		r := IndexRange{Below: limits[0].below, Of: limits[0].of, Ignore: limits[0].ign}
		for _, l := range limits[1:] {
			if l.below < r.Below {
				r.Below, r.Of = l.below, l.of
			}
			if l.ign == nil || r.Ignore == nil || *l.ign != *r.Ignore {
				r.Ignore = nil
			}
		}
		out[in.Name] = r
	}
	return out
}

// Check refuses the first value outside the range, naming the input, the
// position (row-major coordinates in shape) and what the values index.
func (r IndexRange) Check(name string, shape []int, v []float64) error {
	for i, x := range v {
		if x >= 0 && x < float64(r.Below) && x == math.Trunc(x) {
			continue
		}
		if r.Ignore != nil && x == float64(*r.Ignore) {
			continue
		}
		allowed := fmt.Sprintf("[0, %d)", r.Below)
		if r.Ignore != nil {
			allowed += fmt.Sprintf(" or %d (ignored)", *r.Ignore)
		}
		of := r.Of
		if of == "" {
			of = fmt.Sprintf("%d rows", r.Below)
		}
		return fmt.Errorf("%s%v is %s, outside %s: its values index %s", name, coords(shape, i), strconv.FormatFloat(x, 'f', -1, 64), allowed, of)
	}
	return nil
}

// coords spells flat index i of shape as [a, b, …].
func coords(shape []int, i int) string {
	if len(shape) == 0 {
		return ""
	}
	c := make([]int, len(shape))
	for k := len(shape) - 1; k >= 0; k-- {
		if shape[k] > 0 {
			c[k] = i % shape[k]
			i /= shape[k]
		}
	}
	s := "["
	for k, x := range c {
		if k > 0 {
			s += ", "
		}
		s += fmt.Sprint(x)
	}
	return s + "]"
}
