package gen

import (
	"math"
	"slices"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/safetensors"
)

func fixtureIDs(t *testing.T, name string) []int {
	t.Helper()
	f, err := safetensors.Read(fixture + "/expected.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.Tensors[name].Int32s()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// TestGreedyMatchesTransformers: greedy generation from the imported
// fixture gives transformers' generate(do_sample=False) tokens.
func TestGreedyMatchesTransformers(t *testing.T) {
	prompt, greedy := fixtureIDs(t, "prompt_ids"), fixtureIDs(t, "greedy_ids")
	if !slices.Equal(greedy[:len(prompt)], prompt) {
		t.Fatalf("greedy_ids %v do not start with the prompt %v", greedy, prompt)
	}
	want := greedy[len(prompt):]
	path, w := importFixture(t)
	for _, dev := range []device.Device{nil, sim.New()} {
		name := "ref"
		if dev != nil {
			name = dev.Name()
		}
		t.Run(name, func(t *testing.T) {
			model := load(t, path, 1, 1)
			prog, err := Compile(model, passes.Config{Mode: "full"}, dev)
			if err != nil {
				t.Fatal(err)
			}
			d, err := prog.Start(weightsFor(t, prog.Graph, w))
			if err != nil {
				t.Fatal(err)
			}
			var streamed []int
			got, st, err := Generate(d, prompt, Options{MaxTokens: len(want)}, func(id int) error { streamed = append(streamed, id); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) || !slices.Equal(streamed, want) {
				t.Fatalf("greedy tokens %v (streamed %v), transformers gives %v", got, streamed, want)
			}
			if st.PromptTokens != len(prompt) || st.NewTokens != len(want) || st.DecodeSteps != len(want)-1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSamplerFilters(t *testing.T) {
	logits := []float64{1, 3, 2, 0.5, 2.9}
	if Argmax(logits) != 1 || Argmax([]float64{2, 2}) != 0 {
		t.Fatal("argmax")
	}
	count := func(s Sampling) map[int]int {
		sm := newSampler(s)
		c := map[int]int{}
		for range 4000 {
			c[sm.next(logits)]++
		}
		return c
	}
	if c := count(Sampling{Temperature: 1, TopK: 2, Seed: 1}); len(c) != 2 || c[1] == 0 || c[4] == 0 {
		t.Errorf("top-k 2 drew %v, want only tokens 1 and 4", c)
	}
	// Probabilities at T=1: 3 → .38, 2.9 → .35, 2 → .14: top-p 0.7 keeps two.
	if c := count(Sampling{Temperature: 1, TopP: 0.7, Seed: 2}); len(c) != 2 || c[1] == 0 || c[4] == 0 {
		t.Errorf("top-p 0.7 drew %v, want only tokens 1 and 4", c)
	}
	c := count(Sampling{Temperature: 1, Seed: 3})
	if len(c) != 5 {
		t.Errorf("plain sampling drew %v, want every token", c)
	}
	// Frequencies follow the softmax: token 1 against token 3 is e^2.5.
	if r := float64(c[1]) / float64(c[3]); math.Abs(math.Log(r)-2.5) > 0.4 {
		t.Errorf("token 1 drawn %d times, token 3 %d: ratio %.2f, want about e^2.5", c[1], c[3], r)
	}
	// A low temperature is nearly greedy; the same seed repeats the draws.
	if c := count(Sampling{Temperature: 0.01, Seed: 4}); c[1] < 3900 {
		t.Errorf("T=0.01 drew %v", c)
	}
	a, b := newSampler(Sampling{Temperature: 1, Seed: 9}), newSampler(Sampling{Temperature: 1, Seed: 9})
	for range 50 {
		if a.next(logits) != b.next(logits) {
			t.Fatal("the same seed gave different draws")
		}
	}
	for _, bad := range []Sampling{{Temperature: -1}, {TopK: -2}, {TopP: 1.5}} {
		if bad.Check() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
