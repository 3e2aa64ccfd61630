package passes

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// decodeAgainstForward runs the model over a whole sequence and its
// decode step token by token (float64 reference), and returns the largest
// difference between the logits of each position.
func decodeAgainstForward(t *testing.T, name string, batch, seq int) float64 {
	t.Helper()
	full := loadModel(t, name, map[string]int{"batch": batch, "context": seq})
	stepModel := loadModel(t, name, map[string]int{"batch": batch, "context": 1})
	step, states, err := DecodeStep(stepModel)
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.Verify(step); err != nil {
		t.Fatal(err)
	}
	if len(step.Inputs) != 1 || step.Inputs[0].Name != "tokens" || len(step.Outputs) != 1 || len(step.Updates) != len(states) {
		t.Fatalf("step: inputs %v, %d outputs, %d updates for %d states", step.Inputs, len(step.Outputs), len(step.Updates), len(states))
	}
	params, err := ref.InitParams(full, 7)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	vocab := full.Consts["vocab"]
	ids := make([]int, batch*seq)
	for i := range ids {
		ids[i] = r.IntN(vocab)
	}
	tok, _ := ref.FromInts([]int{batch, seq}, ids)
	tgt, _ := ref.FromInts([]int{batch, seq}, make([]int, batch*seq))
	want := eval(t, full, map[string]*ref.Tensor{"tokens": tok, "targets": tgt}, params).Outputs["logits"]

	sp := map[string]*ref.Tensor{}
	for k, v := range params {
		sp[k] = v
	}
	for _, s := range states {
		sp[s.Name] = ref.New(s.Type)
	}
	var worst float64
	for pos := range seq {
		col := make([]int, batch)
		for b := range batch {
			col[b] = ids[b*seq+pos]
		}
		in, _ := ref.FromInts([]int{batch, 1}, col)
		res := eval(t, step, map[string]*ref.Tensor{"tokens": in}, sp)
		got := res.Outputs["logits"]
		for b := range batch {
			for v := range vocab {
				worst = math.Max(worst, math.Abs(got.At(b, 0, v)-want.At(b, pos, v)))
			}
		}
		for _, u := range step.Updates {
			sp[u.Param] = res.Value(u.Value)
		}
	}
	return worst
}

func TestDecodeStepMatchesTheForwardPass(t *testing.T) {
	// tiny: Mamba + MoE + Mamba; the scan's chunk (8) splits the sequence.
	if d := decodeAgainstForward(t, "tiny", 2, 12); d > 1e-9 {
		t.Fatalf("tiny: step-by-step logits differ from the forward's by %.3g", d)
	}
}

func TestDecodeStepRefuses(t *testing.T) {
	g := loadModel(t, "tiny", map[string]int{"batch": 1, "context": 4})
	if _, _, err := DecodeStep(g); err == nil || !strings.Contains(err.Error(), "context 1") {
		t.Fatalf("a 4-token model: got %v, want a refusal naming context 1", err)
	}
}
