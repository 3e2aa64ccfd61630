package ref

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

// Tests of the ops the training passes emit: ge, rmsnorm_bwd,
// cross_entropy_bwd, adamw.

func TestGE(t *testing.T) {
	x := f32(t, sh(5), 1, 2, math.NaN(), 3, -1)
	y := f32(t, sh(5), 1, 3, 1, math.Inf(-1), math.NaN())
	expect(t, "ge", run(t, ir.OpGE, nil, x, y)[0], sh(5), 0, 1, 0, 0, 1, 0)
}

func TestRMSNormBwd(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	x := randT(rng, sh(3, 5), -1, 1)
	g := randT(rng, sh(5), 0.5, 1.5)
	dy := randT(rng, sh(3, 5), -1, 1)
	at := ir.Attrs{"eps": 1e-2}
	loss := func() float64 { return dot(run(t, ir.OpRMSNorm, at, x, g)[0].Data, dy.Data) }
	grads := run(t, ir.OpRMSNormBwd, at, x, g, dy)
	gradCheck(t, "dx", x.Data, grads[0].Data, loss)
	gradCheck(t, "dgamma", g.Data, grads[1].Data, loss)
}

func TestCrossEntropyBwd(t *testing.T) {
	// Hand case: logits (0, 0), target 0, dloss 2, one counted row.
	z := f32(t, sh(2, 2), 0, 0, 5, 1)
	y := i32(t, sh(2), 0, -100)
	expect(t, "hand", run(t, ir.OpCrossEntropyBwd, nil, z, y, Scalar(2))[0], sh(2, 2), 1e-15, -1, 1, 0, 0)

	rng := rand.New(rand.NewPCG(23, 24))
	zz := randT(rng, sh(2, 3, 4), -2, 2)
	yy := i32(t, sh(2, 3), 3, -100, 0, 1, -100, 2)
	dl := Scalar(0.7)
	loss := func() float64 { return dl.Data[0] * run(t, ir.OpCrossEntropy, nil, zz, yy)[0].Data[0] }
	gradCheck(t, "dz", zz.Data, run(t, ir.OpCrossEntropyBwd, nil, zz, yy, dl)[0].Data, loss)

	all := i32(t, sh(2, 3), -100, -100, -100, -100, -100, -100)
	for _, v := range run(t, ir.OpCrossEntropyBwd, nil, zz, all, dl)[0].Data {
		if v != 0 {
			t.Fatal("all targets ignored: gradient is not 0")
		}
	}
	if _, err := EvalOp(ir.OpCrossEntropyBwd, nil, zz, i32(t, sh(2, 3), 4, 0, 0, 0, 0, 0), dl); err == nil {
		t.Fatal("target 4 of 4 classes: no error")
	}
}

func TestAdamW(t *testing.T) {
	at := ir.Attrs{"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
	theta := f32(t, sh(2), 1, -2)
	g := f32(t, sh(2), 0.5, 0)
	zero := f32(t, sh(2), 0, 0)
	out := run(t, ir.OpAdamW, at, theta, g, zero, zero, Scalar(0.1), Scalar(1))
	// Element 0: decay to 0.99; m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25;
	// θ = 0.99 − 0.1·0.5/(0.5 + 1e-8). Element 1 (g = 0): decay only.
	expect(t, "theta", out[0], sh(2), 1e-15, 0.99-0.05/(0.5+1e-8), -2+0.02)
	expect(t, "m", out[1], sh(2), 1e-15, 0.05, 0)
	expect(t, "v", out[2], sh(2), 1e-15, 0.00025, 0)

	// Step 2 from there with g = −1 on element 0.
	out2 := run(t, ir.OpAdamW, at, out[0], f32(t, sh(2), -1, 0), out[1], out[2], Scalar(0.1), Scalar(2))
	m := 0.9*0.05 + 0.1*-1
	v := 0.999*0.00025 + 0.001
	th := out[0].Data[0] * (1 - 0.01)
	th -= 0.1 * (m / (1 - 0.81)) / (math.Sqrt(v/(1-0.999*0.999)) + 1e-8)
	expect(t, "theta2", out2[0], sh(2), 1e-14, th, (-2+0.02)*0.99)

	// Gated by a seventh operand: 1 is the step above, 0 keeps θ, m, v
	// (no decay either), as a loss-scaled step with overflowed gradients.
	gated := run(t, ir.OpAdamW, at, out[0], f32(t, sh(2), -1, 0), out[1], out[2], Scalar(0.1), Scalar(2), Scalar(1))
	expect(t, "gated theta2", gated[0], sh(2), 0, out2[0].Data...)
	kept := run(t, ir.OpAdamW, at, out[0], f32(t, sh(2), math.Inf(1), math.NaN()), out[1], out[2], Scalar(0.1), Scalar(2), Scalar(0))
	for k, want := range []*Tensor{out[0], out[1], out[2]} {
		expect(t, "kept", kept[k], sh(2), 0, want.Data...)
	}

	for _, bad := range []float64{0, math.NaN()} {
		if _, err := EvalOp(ir.OpAdamW, at, theta, g, zero, zero, Scalar(0.1), Scalar(bad)); err == nil || !strings.Contains(err.Error(), "count from 1") {
			t.Fatalf("step %g: %v", bad, err)
		}
	}
}
