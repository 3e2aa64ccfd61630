package ref

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpCrossEntropy, crossEntropyImpl)
	register(ir.OpCrossEntropyBwd, crossEntropyBwdImpl)
}

// ceTargets checks the targets and returns how many are not ignored.
func ceTargets(y []float64, v, ignore int) (int, error) {
	count := 0
	for r, f := range y {
		t := int(f)
		if t == ignore {
			continue
		}
		if t < 0 || t >= v {
			return 0, fmt.Errorf("target %d at position %d is outside the vocabulary [0, %d) and is not ignore_index %d", t, r, v, ignore)
		}
		count++
	}
	return count, nil
}

// crossEntropyImpl (docs/maths.md, Cross-entropy): mean over targets ≠
// ignore_index of m + ln Σ_j exp(z_j − m) − z_target, m = max_j z_j. When
// every target is ignored the loss is 0 (not 0/0): a batch of padding
// contributes nothing. A target outside [0, V) that is not ignore_index is
// an error.
func crossEntropyImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	z, y := in[0], in[1]
	ignore := n.Attrs.Int("ignore_index")
	rows, v := lastAxis(z.Type.Shape)
	count, err := ceTargets(y.Data, v, ignore)
	if err != nil {
		return nil, err
	}
	var sum float64
	for r := 0; r < rows; r++ {
		if t := int(y.Data[r]); t != ignore {
			m, ls := logSumExp(z.Data[r*v : (r+1)*v])
			sum += (m - z.Data[r*v+t]) + ls // m − z first: exact, no cancellation at large logits
		}
	}
	loss := 0.0
	if count > 0 {
		loss = sum / float64(count)
	}
	return []*Tensor{Scalar(loss)}, nil
}

// logSumExp returns m = max z and ln Σ exp(z − m); their sum is logsumexp(z).
func logSumExp(z []float64) (m, ls float64) {
	m = math.Inf(-1)
	for _, x := range z {
		m = math.Max(m, x)
	}
	var s float64
	for _, x := range z {
		s += math.Exp(x - m)
	}
	return m, math.Log(s)
}

// crossEntropyBwdImpl: dz = (softmax(z) − onehot(y))·dloss/count on rows
// whose target is not ignored, 0 on ignored rows (and everywhere when all
// are ignored, matching the constant 0 loss).
func crossEntropyBwdImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	z, y, dloss := in[0], in[1], in[2].Data[0]
	ignore := n.Attrs.Int("ignore_index")
	rows, v := lastAxis(z.Type.Shape)
	count, err := ceTargets(y.Data, v, ignore)
	if err != nil {
		return nil, err
	}
	dz := New(n.Out().Type)
	for r := 0; r < rows; r++ {
		t := int(y.Data[r])
		if t == ignore {
			continue
		}
		row := dz.Data[r*v : (r+1)*v]
		softmaxRow(row, z.Data[r*v:(r+1)*v])
		row[t] -= 1
		for i := range row {
			row[i] *= dloss / float64(count)
		}
	}
	return []*Tensor{dz}, nil
}
