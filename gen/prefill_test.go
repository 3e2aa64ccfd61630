package gen

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/safetensors"
)

// prefillVersusSteps feeds a prompt of length seq token by token through
// the step and, from zero states again, through the sequence prefill;
// both then step on the same extra tokens. It returns the largest
// difference of the logits after the prompt and after each extra token,
// relative to the largest logit, and the prefill's tokens/s.
func prefillVersusSteps(t *testing.T, path string, weights map[string]safetensors.Tensor, batch, seq, extra int, dev device.Device) (float64, float64) {
	t.Helper()
	model := load(t, path, batch, 1)
	params, err := ref.InitParams(model, 3)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range weightsFor(t, model, weights) {
		params[k] = v
	}
	prog, err := Compile(model, passes.Config{Mode: "full"}, dev)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := CompilePrefill(load(t, path, batch, seq), passes.Config{Mode: "full"}, dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prefill of %d: %d launches", seq, pf.Launches())
	vocab := prog.Vocab
	r := rand.New(rand.NewPCG(7, uint64(seq)))
	ids := make([]int, batch*(seq+extra)) // row-major (batch, seq+extra)
	for i := range ids {
		ids[i] = r.IntN(vocab)
	}
	col := func(pos int) []int {
		c := make([]int, batch)
		for b := range c {
			c[b] = ids[b*(seq+extra)+pos]
		}
		return c
	}
	run := func(d *Decoder, prefill bool) ([][]float64, time.Duration) {
		if err := d.Reset(); err != nil {
			t.Fatal(err)
		}
		var out [][]float64
		var took time.Duration
		if prefill {
			prompt := make([]int, 0, batch*seq)
			for b := range batch {
				prompt = append(prompt, ids[b*(seq+extra):b*(seq+extra)+seq]...)
			}
			start := time.Now()
			l, err := d.Prefill(prompt)
			if err != nil {
				t.Fatal(err)
			}
			took = time.Since(start)
			out = append(out, l)
		} else {
			var l []float64
			for pos := range seq {
				if l, err = d.Step(col(pos)); err != nil {
					t.Fatal(err)
				}
			}
			out = append(out, l)
		}
		for pos := seq; pos < seq+extra; pos++ {
			l, err := d.Step(col(pos))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, l)
		}
		return out, took
	}
	d, err := prog.Start(params)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := run(d, false)
	if err := d.UsePrefill(pf); err != nil {
		t.Fatal(err)
	}
	got, took := run(d, true)
	var diff, scale float64
	for i := range want {
		if len(got[i]) != batch*vocab {
			t.Fatalf("%d logits, want %d", len(got[i]), batch*vocab)
		}
		for j, w := range want[i] {
			diff = math.Max(diff, math.Abs(got[i][j]-w))
			scale = math.Max(scale, math.Abs(w))
		}
	}
	return diff / scale, float64(batch*seq) / took.Seconds()
}

func TestPrefillMatchesStepsOnSim(t *testing.T) {
	dev := sim.New()
	defer dev.Close()
	path, w := importFixture(t)
	for _, tc := range []struct {
		name, path string
		w          map[string]safetensors.Tensor
		batch, seq int
	}{
		{"tiny", "../models/tiny.graph", nil, 2, 11},
		{"tiny-short", "../models/tiny.graph", nil, 1, 2},   // fewer tokens than the conv's K-1
		{"tiny-chunks", "../models/tiny.graph", nil, 1, 16}, // a whole number of scan chunks
		{"imported", path, w, 1, 12},
		{"tinytext", "../models/tinytext.graph", nil, 1, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rate := prefillVersusSteps(t, tc.path, tc.w, tc.batch, tc.seq, 3, dev)
			t.Logf("relative difference %.3g; prefill %.1f tokens/s on the sim", e, rate)
			if e > 1e-5 {
				t.Fatalf("prefill + steps differ from token-by-token steps by %.3g (relative) > 1e-5", e)
			}
		})
	}
}

func TestPrefillMatchesStepsOnRef(t *testing.T) {
	e, _ := prefillVersusSteps(t, "../models/tiny.graph", nil, 2, 5, 2, nil)
	if e > 1e-12 {
		t.Fatalf("prefill + steps differ from token-by-token steps by %.3g (relative) on the reference", e)
	}
}
