package ref

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpAdamW, adamwImpl)
}

// adamwImpl is one decoupled AdamW step (docs/maths.md, AdamW; PyTorch's
// order) on (θ, g, m, v, lr, step), step t counting from 1:
//
//	θ ← θ − lr·λ·θ
//	m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//	θ ← θ − lr·m̂/(√v̂ + ε),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
//
// A step below 1 is an error: the bias corrections would divide by 0. An
// optional seventh operand, a scalar, gates the step: 0 returns θ, m and v
// unchanged (a step skipped for overflowed gradients), anything else applies it.
func adamwImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	b1, b2 := n.Attrs.Float("beta1"), n.Attrs.Float("beta2")
	eps, wd := n.Attrs.Float("eps"), n.Attrs.Float("weight_decay")
	lr, step := in[4].Data[0], in[5].Data[0]
	if !(step >= 1) {
		return nil, fmt.Errorf("adamw step %g: steps count from 1", step)
	}
	if len(in) > 6 && in[6].Data[0] == 0 {
		return []*Tensor{in[0].Clone(), in[2].Clone(), in[3].Clone()}, nil
	}
	c1, c2 := 1-math.Pow(b1, step), 1-math.Pow(b2, step)
	theta, m, v := New(n.Outputs[0].Type), New(n.Outputs[1].Type), New(n.Outputs[2].Type)
	for i, p := range in[0].Data {
		g := in[1].Data[i]
		m.Data[i] = b1*in[2].Data[i] + (1-b1)*g
		v.Data[i] = b2*in[3].Data[i] + (1-b2)*g*g
		p -= lr * wd * p
		theta.Data[i] = p - lr*(m.Data[i]/c1)/(math.Sqrt(v.Data[i]/c2)+eps)
	}
	return []*Tensor{theta, m, v}, nil
}
