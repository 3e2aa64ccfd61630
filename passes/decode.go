package passes

import (
	"fmt"

	"github.com/scm-magellano/magc/ir"
)

// DecodeState is one recurrent state of a decode step: a parameter the
// step reads and overwrites (a graph Update), so it stays in the arena
// from token to token.
type DecodeState struct {
	Name  string // the parameter: "<layer>.conv_state" or "<layer>.ssm_state"
	Layer string // the layer's scope ("mamba.3")
	Type  ir.Type
}

// DecodeStep derives the recurrent step of a model (docs/maths.md,
// Selective scan and Causal convolution, read one token at a time): one
// token per sequence in, logits out, each Mamba layer's states carried in
// parameters. g is the model as written, built with a time axis of one
// (its context constant 1), so every op but the two sequence ops already
// computes one step. Those become element-wise ops and a reduction:
//
//	causal_conv1d: w = [state ; x_t] (K rows), out = Σ_k w[k]·conv_w[:,k] + b,
//	               state ← w[1:]
//	selective_scan: s ← exp(Δ_t·A) ⊙ s + (Δ_t·B_t)·u_t,  y = s·C_t + D·u_t
//
// The step keeps the output "logits" only (no loss, no aux losses); the
// inputs the logits do not read (targets) go. States are zero-initialised
// frozen parameters: zero is the state before the first token.
func DecodeStep(g *ir.Graph) (*ir.Graph, []DecodeState, error) {
	if g.Output("logits") == nil {
		return nil, nil, fmt.Errorf("%s has no output named logits to decode", g.Name)
	}
	var states []DecodeState
	var updates []stateUpdate
	newState := func(b *ir.Builder, scope, kind string, t ir.Type) *ir.Value {
		name := stateName(scope, kind, len(states))
		states = append(states, DecodeState{Name: name, Layer: scope, Type: t})
		return b.Param(ir.Param{Name: name, Role: ir.Frozen, Init: ir.Init{Kind: "zeros"}, NoDecay: true}, t)
	}
	out, err := ir.Rewrite(g, func(b *ir.Builder, n *ir.Node, in []*ir.Value) []*ir.Value {
		switch n.Op {
		case ir.OpConv:
			x, w, bias := in[0], in[1], in[2]
			bs, l, c, k := x.Type.Shape[0], x.Type.Shape[1], x.Type.Shape[2], w.Type.Shape[1]
			if l != 1 {
				b.Fail(fmt.Errorf("causal_conv1d over %d steps: DecodeStep takes the model built with context 1", l))
				return nil
			}
			if k == 1 {
				return nil // no history: the conv is already one step
			}
			s := newState(b, n.Scope, "conv_state", ir.T(x.Type.DType, bs, k-1, c))
			win := b.Op(ir.OpConcat, ir.Attrs{"axis": 1}, s, x) // (B, K, C), oldest first
			taps := b.Op(ir.OpTranspose, ir.Attrs{"perm": []int{1, 0}}, w)
			y := b.Reduce(ir.OpReduceSum, b.Binary(ir.OpMul, win, taps), true, 1)
			updates = append(updates, stateUpdate{states[len(states)-1].Name, b.Slice(win, 1, 1, k)})
			return []*ir.Value{b.Binary(ir.OpAdd, y, bias)}
		case ir.OpScan:
			u, dt, a, bm, cm, d := in[0], in[1], in[2], in[3], in[4], in[5]
			bs, l, e, nn := u.Type.Shape[0], u.Type.Shape[1], u.Type.Shape[2], a.Type.Shape[1]
			if l != 1 {
				b.Fail(fmt.Errorf("selective_scan over %d steps: DecodeStep takes the model built with context 1", l))
				return nil
			}
			s := newState(b, n.Scope, "ssm_state", ir.T(ir.F32, bs, e, nn))
			dtc := b.Reshape(dt, bs, e, 1)
			uc := b.Reshape(u, bs, e, 1)
			decay := b.Unary(ir.OpExp, b.Binary(ir.OpMul, dtc, a))                                      // (B, E, N)
			inject := b.Binary(ir.OpMul, b.Binary(ir.OpMul, dtc, b.Reshape(bm, bs, 1, nn)), uc)         // Δ·B·u, as the scan orders it
			next := b.Add(b.Mul(decay, s), inject)                                                      // (B, E, N)
			y := b.Reduce(ir.OpReduceSum, b.Binary(ir.OpMul, next, b.Reshape(cm, bs, 1, nn)), false, 2) // (B, E)
			y = b.Add(y, b.Binary(ir.OpMul, b.Reshape(u, bs, e), d))
			updates = append(updates, stateUpdate{states[len(states)-1].Name, next})
			// The scan's second result is the state at the start of each
			// chunk: one chunk, the state before this token.
			return []*ir.Value{b.Reshape(y, bs, 1, e), b.Reshape(s, bs, 1, e, nn)}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(states) == 0 {
		return nil, nil, fmt.Errorf("%s has no causal_conv1d or selective_scan: nothing recurrent to decode", g.Name)
	}
	return keepDecoded(out, out.Output("logits"), updates, states)
}

// dropUnusedInputs removes inputs nothing reads (a step has no targets).
func dropUnusedInputs(g *ir.Graph) error {
	uses := g.Uses()
	dead := map[*ir.Node]bool{}
	ins := g.Inputs[:0]
	for _, in := range g.Inputs {
		if len(uses[in.Value]) == 0 {
			dead[in.Value.Node] = true
			continue
		}
		ins = append(ins, in)
	}
	g.Inputs = ins
	nodes := g.Nodes[:0]
	for _, n := range g.Nodes {
		if !dead[n] {
			n.ID = len(nodes)
			nodes = append(nodes, n)
		}
	}
	g.Nodes = nodes
	return ir.Verify(g)
}

// stateName names a layer's recurrent state; DecodeStep and DecodePrefill
// agree on it, so a prefill's states land where the step reads them.
func stateName(scope, kind string, i int) string {
	if scope == "" {
		return fmt.Sprintf("layer%d.%s", i, kind)
	}
	return scope + "." + kind
}

// DecodePrefill derives the sequence prefill of a model: g built with its
// context set to the prompt length L, run as written (the same sequence
// ops), plus each Mamba layer's final states as graph updates of the
// parameters DecodeStep reads, so a step after it continues the prompt.
//
//	conv state: the conv's last K-1 inputs (zeros in front when L < K-1);
//	ssm state:  selective_scan returns the state at the start of each
//	            chunk, not the last one. The scan runs on its inputs padded
//	            with zeros to a whole number of chunks plus one step; a step
//	            with Δ = 0 leaves the state as it is (exp(0·A)·s + 0), so
//	            the start of the last chunk holds the state after token L.
//	            The first ⌈L/chunk⌉ chunk states and the first L outputs are
//	            those of the unpadded scan.
//
// The states start from zero: a prefill begins new sequences. The output
// "logits" holds the last position only, (B, 1, V), unless all is set.
func DecodePrefill(g *ir.Graph, all bool) (*ir.Graph, []DecodeState, error) {
	lo := g.Output("logits")
	if lo == nil {
		return nil, nil, fmt.Errorf("%s has no output named logits to decode", g.Name)
	}
	var states []DecodeState
	var updates []stateUpdate
	setState := func(b *ir.Builder, scope, kind string, v *ir.Value) {
		name := stateName(scope, kind, len(states))
		states = append(states, DecodeState{Name: name, Layer: scope, Type: v.Type})
		b.Param(ir.Param{Name: name, Role: ir.Frozen, Init: ir.Init{Kind: "zeros"}, NoDecay: true}, v.Type)
		updates = append(updates, stateUpdate{name, v})
	}
	// padTime appends n zero steps on axis 1.
	padTime := func(b *ir.Builder, x *ir.Value, n int) *ir.Value {
		s := append(ir.Shape(nil), x.Type.Shape...)
		s[1] = n
		return b.Op(ir.OpConcat, ir.Attrs{"axis": 1}, x, b.Const(0, ir.T(x.Type.DType, s...)))
	}
	var last *ir.Value // the logits at the last position
	out, err := ir.Rewrite(g, func(b *ir.Builder, n *ir.Node, in []*ir.Value) []*ir.Value {
		if n.Op == ir.OpInput || n.Op == ir.OpParam || n.Op == ir.OpConst {
			return nil
		}
		if !all && n.Out() == lo.Value {
			if s := lo.Value.Type.Shape; len(s) == 3 {
				res := b.Apply(n.Op, n.Attrs, in...)
				last = b.Slice(res[0], 1, s[1]-1, s[1])
				return res
			}
		}
		switch n.Op {
		case ir.OpConv:
			x, w := in[0], in[1]
			bs, l, c, k := x.Type.Shape[0], x.Type.Shape[1], x.Type.Shape[2], w.Type.Shape[1]
			res := b.Apply(n.Op, n.Attrs, in...)
			if k == 1 {
				return res
			}
			if l < k-1 {
				x = b.Op(ir.OpConcat, ir.Attrs{"axis": 1}, b.Const(0, ir.T(x.Type.DType, bs, k-1-l, c)), x)
				l = k - 1
			}
			setState(b, n.Scope, "conv_state", b.Slice(x, 1, l-(k-1), l))
			return res
		case ir.OpScan:
			u, dt, a, bm, cm, d := in[0], in[1], in[2], in[3], in[4], in[5]
			bs, l, e, nn := u.Type.Shape[0], u.Type.Shape[1], u.Type.Shape[2], a.Type.Shape[1]
			chunk := n.Attrs.Int("chunk")
			chunks := ir.ScanChunks(l, chunk)
			pad := chunks*chunk + 1 - l
			res := b.Apply(n.Op, n.Attrs, padTime(b, u, pad), padTime(b, dt, pad), a, padTime(b, bm, pad), padTime(b, cm, pad), d)
			last := b.Reshape(b.Slice(res[1], 1, chunks, chunks+1), bs, e, nn)
			setState(b, n.Scope, "ssm_state", last)
			return []*ir.Value{b.Slice(res[0], 1, 0, l), b.Slice(res[1], 1, 0, chunks)}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(states) == 0 {
		return nil, nil, fmt.Errorf("%s has no causal_conv1d or selective_scan: nothing recurrent to decode", g.Name)
	}
	logits := out.Output("logits")
	if last != nil {
		logits = &ir.Output{Name: "logits", Value: last}
	}
	return keepDecoded(out, logits, updates, states)
}

// stateUpdate is a state parameter's new value.
type stateUpdate struct {
	param string
	v     *ir.Value
}

// keepDecoded leaves only what decoding reads of out: the logits and the
// state updates; what nothing else needs is pruned.
func keepDecoded(out *ir.Graph, logits *ir.Output, updates []stateUpdate, states []DecodeState) (*ir.Graph, []DecodeState, error) {
	out.Outputs = []*ir.Output{logits}
	out.AuxLosses = nil
	for _, u := range updates {
		out.Updates = append(out.Updates, &ir.Update{Param: u.param, Value: u.v})
	}
	out, err := ir.Prune(out)
	if err != nil {
		return nil, nil, err
	}
	if err := dropUnusedInputs(out); err != nil {
		return nil, nil, err
	}
	return out, states, nil
}
