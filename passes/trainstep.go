package passes

import (
	"fmt"

	"github.com/scm-magellano/magc/ir"
)

// Optimizer holds the AdamW and clipping hyper-parameters baked into the
// train step. The learning rate is not here: it is the graph input "lr", so
// the host can run any schedule.
type Optimizer struct {
	Beta1, Beta2, Eps float64
	// WeightDecay is λ of decoupled decay; parameters marked NoDecay get 0.
	WeightDecay float64
	// Clip is the global gradient-norm bound c; 0 turns clipping off.
	Clip float64
}

// DefaultOptimizer is the recipe of a training mode (docs/maths.md, AdamW): full
// training follows the Mamba LM recipe, QLoRA the QLoRA paper's.
func DefaultOptimizer(mode string) Optimizer {
	if mode == "qlora" {
		return Optimizer{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0, Clip: 0.3}
	}
	return Optimizer{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Clip: 1.0}
}

// TrainStep turns a forward graph into one training step:
//
//	loss = output "loss" + Σ aux losses        (outputs loss, loss_main, loss_aux)
//	grads = ∂loss/∂θ for every trainable θ      (Gradients)
//	grads ·= min(1, c/‖grads‖₂)                 (output grad_norm, before clipping)
//	θ, m, v = adamw(θ, grad, m, v, lr, step)    (graph Updates)
//
// The moments are new OptState parameters "<θ>.adam_m" and "<θ>.adam_v",
// zero-initialised; "lr" and "step" (counting from 1) are f32 scalar inputs.
// With cfg.Train off the graph is returned unchanged (forward-only use).
//
// With cfg.LossScale, the f32 scalar input "loss_scale" s seeds the
// backward, so the gradients are s·grads, and
//
//	‖grads‖ = ‖s·grads‖·(1/s)                    (output grad_norm)
//	grads = s·grads · min(1, c/‖grads‖)·(1/s)     (unscaled in the clip factor)
//	θ, m, v = adamw(…, isfinite(‖grads‖))         (a non-finite norm keeps θ, m, v)
//
// Unscaling adds no pass over the gradients: 1/s folds into the scalar
// norm and clip factor (with clipping off 1/s is the factor, applied where
// adamw reads the gradient). The host backs s off and leaves the step out
// of AdamW's count when grad_norm is not finite (train.LossScaler).
func TrainStep(g *ir.Graph, cfg *Config) (*ir.Graph, error) {
	if !cfg.Train {
		return g, nil
	}
	opt := DefaultOptimizer(cfg.mode(g))
	if cfg.Optimizer != nil {
		opt = *cfg.Optimizer
	}
	g, err := ir.Rewrite(g, nil) // a copy: the caller's graph stays as it was
	if err != nil {
		return nil, err
	}
	// A step reports scalars; keeping the forward's tensor outputs (logits:
	// T×vocab floats, 1.6 GB for scm3b at batch 16) alive to the end of the
	// step would cost memory for nothing. Evaluation uses the forward graph.
	outs := g.Outputs[:0]
	for _, o := range g.Outputs {
		if o.Value.Type.Shape.Elems() == 1 {
			outs = append(outs, o)
		}
	}
	g.Outputs = outs
	if g, err = chunkLoss(g, cfg.LossChunkBytes); err != nil {
		return nil, err
	}
	main := g.Output("loss")
	if main == nil || !main.Value.Type.Equal(ir.T(ir.F32)) {
		return nil, fmt.Errorf("trainstep: the model needs an f32 scalar output named loss")
	}
	b := ir.Extend(g)
	lossMain := main.Value
	var aux *ir.Value
	for _, v := range g.AuxLosses {
		if aux == nil {
			aux = v
		} else {
			aux = b.Add(aux, v)
		}
	}
	total := lossMain
	if aux != nil {
		total = b.Add(lossMain, aux)
	} else {
		aux = b.Const(0, ir.T(ir.F32))
	}
	main.Value = total
	b.Output("loss_main", lossMain)
	b.Output("loss_aux", aux)

	var params []*ir.Param
	var wrt []*ir.Value
	for _, p := range g.Params {
		if p.Role == ir.Trainable {
			params = append(params, p)
			wrt = append(wrt, p.Value)
		}
	}
	forward := len(g.Nodes)
	var scale *ir.Value
	if cfg.Scaled() {
		// After forward: scheduleLossChunks then moves it, as the seed it
		// is, ahead of the first chunk's backward.
		scale = b.Input("loss_scale", ir.T(ir.F32))
	}
	grads, err := SeededGradients(b, total, scale, wrt)
	if err != nil {
		return nil, err
	}
	b.Pos, b.Scope = ir.Pos{}, optimizerScope
	for i, gr := range grads {
		if gr == nil { // the loss does not depend on it: decay still applies
			grads[i] = b.Const(0, wrt[i].Type)
		}
	}
	norm := clipGrads(b, grads, opt.Clip, scale)
	b.Output("grad_norm", norm)
	var apply *ir.Value // nil: every step applies
	if scale != nil {
		apply = b.Unary(ir.OpIsFinite, norm)
	}

	lr := b.Input("lr", ir.T(ir.F32))
	step := b.Input("step", ir.T(ir.F32))
	zeros := ir.Init{Kind: "zeros"}
	for i, p := range params {
		m := b.Param(ir.Param{Name: p.Name + ".adam_m", Role: ir.OptState, Init: zeros}, p.Value.Type)
		v := b.Param(ir.Param{Name: p.Name + ".adam_v", Role: ir.OptState, Init: zeros}, p.Value.Type)
		wd := opt.WeightDecay
		if p.NoDecay {
			wd = 0
		}
		a := ir.Attrs{"beta1": opt.Beta1, "beta2": opt.Beta2, "eps": opt.Eps, "weight_decay": wd}
		args := []*ir.Value{p.Value, grads[i], m, v, lr, step}
		if apply != nil {
			args = append(args, apply)
		}
		out := b.Apply(ir.OpAdamW, a, args...)
		g.Updates = append(g.Updates,
			&ir.Update{Param: p.Name, Value: out[0]},
			&ir.Update{Param: p.Name + ".adam_m", Value: out[1]},
			&ir.Update{Param: p.Name + ".adam_v", Value: out[2]})
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("trainstep: %w", err)
	}
	if g, err = scheduleLossChunks(g, forward); err != nil {
		return nil, err
	}
	return ir.Prune(g) // gradient sums can leave superseded nodes behind
}

// A norm reduction reads at most normChunk gradients (under the buffers a
// kernel may bind) and, unless one gradient is larger, normChunkElems
// elements, so fp32 sums stay as accurate as one parameter's.
const (
	normChunk      = 16
	normChunkElems = 1 << 23
)

// clipGrads scales every gradient in place (grads[i] is replaced) by
// min(1, c/‖g‖₂), ‖g‖ taken over all of them, and returns ‖g‖ before
// clipping. When ‖g‖ = 0, c/‖g‖ = +Inf and the factor is 1. With c ≤ 0
// only the norm is computed. With a loss scale s (not nil) the gradients
// are s·g: the norm of the sum of squares is multiplied by 1/s and the
// factor by 1/s too, so unscaling costs scalar work only (with c ≤ 0 the
// factor is 1/s alone).
func clipGrads(b *ir.Builder, grads []*ir.Value, c float64, scale *ir.Value) *ir.Value {
	scalar := ir.T(ir.F32)
	var sumsq *ir.Value
	// Sum squares over a flat concatenation of up to normChunk gradients at
	// a time: one reduction kernel per chunk instead of one per parameter
	// (fusion reads the concatenation in place, it is never stored).
	for start := 0; start < len(grads); {
		var flat []*ir.Value
		var elems int64
		for ; start < len(grads) && len(flat) < normChunk; start++ {
			n := grads[start].Type.Shape.Elems()
			if len(flat) > 0 && elems+n > normChunkElems {
				break
			}
			flat, elems = append(flat, b.Reshape(grads[start], int(n))), elems+n
		}
		cat := flat[0]
		if len(flat) > 1 {
			cat = b.Op(ir.OpConcat, ir.Attrs{"axis": 0}, flat...)
		}
		s := b.Reduce(ir.OpReduceSum, b.Unary(ir.OpSquare, cat), false, 0)
		if sumsq == nil {
			sumsq = s
		} else {
			sumsq = b.Add(sumsq, s)
		}
	}
	if sumsq == nil {
		return b.Const(0, scalar)
	}
	norm := b.Unary(ir.OpSqrt, sumsq)
	var factor *ir.Value
	if scale != nil {
		inv := b.Div(b.Const(1, scalar), scale)
		norm = b.Mul(norm, inv)
		factor = inv
	}
	if c > 0 {
		clip := b.Op(ir.OpMin, nil, b.Const(1, scalar), b.Div(b.Const(c, scalar), norm))
		if factor != nil {
			clip = b.Mul(clip, factor)
		}
		factor = clip
	}
	if factor == nil {
		return norm
	}
	for i, gr := range grads {
		grads[i] = b.Mul(gr, b.BroadcastTo(factor, gr.Type.Shape))
	}
	return norm
}
