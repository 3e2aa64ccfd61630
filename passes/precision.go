package passes

import (
	"cmp"
	"fmt"

	"github.com/scm-magellano/magc/ir"
)

// Precisions are the storage precisions a step compiles in: f32 keeps
// everything in f32; f16 and bf16 keep activations and the gradients flowing
// between layers in that half type (mixed precision, Micikevicius et al.
// 2018). Arithmetic is f32 in every case: a kernel converts what it loads to
// f32 and rounds what it stores, so a cast costs no launch and no round trip.
var Precisions = []string{"f32", "f16", "bf16"}

// PrecisionType is the storage type of a precision name ("" is f32).
func PrecisionType(p string) (ir.DType, error) {
	switch p {
	case "", "f32":
		return ir.F32, nil
	case "f16":
		return ir.F16, nil
	case "bf16":
		return ir.BF16, nil
	}
	return ir.Invalid, fmt.Errorf("unknown precision %q (want f32, f16 or bf16)", p)
}

// keepsF32 is the rule, by the op that computes a value: results of these
// ops stay f32 whatever the precision, for the reason given. Every other
// float result a kernel writes to memory is stored in the half type.
// Parameters, their gradients and AdamW's moments are f32 too (see
// paramGradients); inputs and constants are stored as declared.
var keepsF32 = map[ir.Op]string{
	ir.OpReduceSum:    "sums: norm statistics, gradient-norm parts, parameter gradients",
	ir.OpReduceMean:   "means: the losses",
	ir.OpReduceMax:    "row maxima that later sums are shifted by",
	ir.OpSoftmax:      "router probabilities: they choose the experts",
	ir.OpTopK:         "the chosen experts' gates",
	ir.OpCrossEntropy: "the loss",
	ir.OpAdamW:        "master weights and AdamW moments",
}

// keepsOutputF32 names results kept f32 by their position: the selective
// scan's chunk states carry the recurrence across chunks.
var keepsOutputF32 = map[ir.Op]int{ir.OpScan: 1}

// optimizerScope is where TrainStep builds the gradient norm, the clip
// factor and AdamW: all of it stays f32. With loss scaling in f16 the
// scaled norm s·‖g‖ passes 65504 at ‖g‖ = 1 and the factor min(1, c/‖g‖)/s
// lies among f16's subnormals, so either would break the update.
const optimizerScope = "optimizer"

// Precision chooses the storage type of every value a kernel of s writes
// to memory (Value.Store): the half type of p, or f32 by the rule above.
// A reshape that needs no kernel shares its operand's memory, so both take
// one type: half only when the rule allows it for every one of them.
func Precision(g *ir.Graph, s *Schedule, p string) (*PrecisionStats, error) {
	half, err := PrecisionType(p)
	if err != nil {
		return nil, err
	}
	st := &PrecisionStats{Precision: cmp.Or(p, "f32")}
	for _, n := range g.Nodes {
		for _, v := range n.Outputs {
			v.Store = ir.Invalid
		}
	}
	if half == ir.F32 {
		return st, nil
	}
	keep := map[*ir.Value]bool{}
	for _, o := range g.Outputs {
		keep[o.Value] = true
	}
	for _, v := range g.AuxLosses {
		keep[v] = true
	}
	for _, u := range g.Updates {
		keep[u.Value] = true
	}
	for v := range paramGradients(g) {
		keep[v] = true
	}
	allowed := func(v *ir.Value) bool {
		n := v.Node
		switch {
		case v.Type.DType != ir.F32, keep[v], keepsF32[n.Op] != "", n.Scope == optimizerScope,
			n.Op == ir.OpInput, n.Op == ir.OpParam, n.Op == ir.OpConst:
			return false
		case v.Type.Shape.Elems() == 1: // scalars (scales, norms) cost nothing in f32
			return false
		}
		i, ok := keepsOutputF32[n.Op]
		return !ok || i != v.Index
	}
	// A memory owner stores half when it and every alias of it may.
	ok := map[*ir.Value]bool{}
	var stored []*ir.Value
	for _, grp := range s.Groups {
		for _, v := range grp.Outputs {
			ok[v] = allowed(v)
			stored = append(stored, v)
		}
	}
	for v, o := range s.Alias {
		if _, known := ok[o]; known {
			ok[o] = ok[o] && allowed(v)
		}
	}
	for _, v := range stored {
		if ok[v] {
			v.Store = half
			st.HalfValues++
			st.BytesSaved += v.Type.Bytes() - v.Stored().Bytes()
		} else if v.Type.DType == ir.F32 {
			st.F32Values++
		}
	}
	for v, o := range s.Alias {
		v.Store = o.Store
	}
	return st, nil
}

// PrecisionStats says what the precision pass chose.
type PrecisionStats struct {
	Precision             string
	HalfValues, F32Values int   // values in memory, by storage type
	BytesSaved            int64 // bytes of one step's values the half type saves
}

// paramGradients are the values a parameter's gradient is made of: AdamW's
// gradient operand and, back from it, the element-wise ops and reshapes of
// the parameter's size that produce it (clipping's scale, the adding up of
// a shared weight's parts). They stay f32, the "master" precision of the
// update. The walk stops where the size changes: the sum or contraction
// that reduces the flowing gradients to the parameter's size is the last
// value kept, and what it reads flows between layers (half).
func paramGradients(g *ir.Graph) map[*ir.Value]bool {
	out := map[*ir.Value]bool{}
	for _, n := range g.Nodes {
		if n.Op != ir.OpAdamW {
			continue
		}
		size := n.Inputs[0].Type.Shape.Elems()
		work := []*ir.Value{n.Inputs[1]}
		for len(work) > 0 {
			v := work[len(work)-1]
			work = work[:len(work)-1]
			if out[v] || v.Type.Shape.Elems() != size {
				continue
			}
			out[v] = true
			if m := v.Node; m.Op == ir.OpReshape || elementwise(m.Op) {
				work = append(work, m.Inputs...)
			}
		}
	}
	return out
}

func elementwise(op ir.Op) bool {
	d, ok := ir.Lookup(op)
	return ok && d.Category == ir.Elementwise
}
