package train_test

import (
	"strings"
	"testing"

	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/plan"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

// badBatches are batches of the tiny model (vocabulary 16) with one index
// out of range each: every class a probe might feed.
func badBatches(b data.Batch) map[string]data.Batch {
	mk := func(tokens bool, at int, v int32) data.Batch {
		c := data.Batch{B: b.B, L: b.L, Tokens: append([]int32(nil), b.Tokens...), Targets: append([]int32(nil), b.Targets...)}
		if tokens {
			c.Tokens[at] = v
		} else {
			c.Targets[at] = v
		}
		return c
	}
	last := len(b.Tokens) - 1
	return map[string]data.Batch{
		"token = vocab":      mk(true, 3, 16),
		"token negative":     mk(true, last, -1),
		"token -100":         mk(true, 0, -100), // ignore_index is for targets only
		"token huge":         mk(true, 5, 1<<30),
		"target = vocab":     mk(false, last, 16),
		"target negative":    mk(false, 2, -2),
		"target min int32":   mk(false, 7, -1<<31),
		"target at -100 + 1": mk(false, 1, -99),
	}
}

// Out-of-range token ids and targets are refused on the host, before the
// reference interpreter or a device sees them, naming the input and where.
func TestSteppersRefuseBadIndices(t *testing.T) {
	c := compileTiny(t, "full")
	params, err := ref.InitParams(c.Train, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := (&data.SelectiveCopying{Seed: 1, BatchSize: c.Train.Consts["batch"], Len: c.Train.Consts["context"], M: 2}).Batch(1)
	steppers := map[string]train.Stepper{"ref": train.NewRefStepper(c.Graphs, params), "sim": c.stepper(t, params)}
	for dev, s := range steppers {
		for name, b := range badBatches(good) {
			which := "tokens"
			if strings.HasPrefix(name, "target") {
				which = "targets"
			}
			_, err := s.Step(b, train.StepInputs{LR: 1e-2, Step: 1})
			if err == nil || !strings.Contains(err.Error(), which) || !strings.Contains(err.Error(), "outside [0, 16)") {
				t.Errorf("%s, %s: Step gave %v", dev, name, err)
			}
			if which == "tokens" {
				if _, err := s.Logits(b); err == nil || !strings.Contains(err.Error(), "tokens") {
					t.Errorf("%s, %s: Logits gave %v", dev, name, err)
				}
			}
		}
		// The refusals left the weights alone: a good step still runs.
		if out, err := s.Step(good, train.StepInputs{LR: 1e-2, Step: 1}); err != nil || out["loss"] <= 0 {
			t.Errorf("%s: a good batch after the refusals: %v, %v", dev, out, err)
		}
	}
}

// plan.json records the ranges, and a Runner refuses writes outside them
// whichever way they come (values or raw bytes).
func TestRunnerRefusesBadIndices(t *testing.T) {
	c := compileTiny(t, "full")
	r, err := plan.NewRunner(sim.New(), c.step.Plan, c.step.Source)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := r.Buffer("tokens")
	if !ok || tok.Index == nil || tok.Index.Below != 16 || tok.Index.Ignore != nil {
		t.Fatalf("tokens buffer %+v: want index range [0, 16) without ignore", tok)
	}
	tg, _ := r.Buffer("targets")
	if tg.Index == nil || tg.Index.Below != 16 || tg.Index.Ignore == nil || *tg.Index.Ignore != -100 {
		t.Fatalf("targets buffer %+v: want [0, 16) or -100", tg)
	}
	n := int(c.step.Graph.Consts["batch"] * c.step.Graph.Consts["context"])
	ids := make([]int32, n)
	if err := r.WriteInt32("tokens", ids); err != nil {
		t.Fatal(err)
	}
	ids[n-1] = 16
	if err := r.WriteInt32("tokens", ids); err == nil || !strings.Contains(err.Error(), "tokens[") {
		t.Errorf("token 16 written: %v", err)
	}
	raw := make([]byte, 4*n)
	raw[0], raw[1], raw[2], raw[3] = 0xff, 0xff, 0xff, 0xff // -1
	if err := r.WriteBytes("tokens", raw); err == nil {
		t.Error("token -1 written as bytes")
	}
	ids[n-1] = -100
	if err := r.WriteInt32("targets", ids); err != nil {
		t.Errorf("target -100 (ignored) refused: %v", err)
	}
	if err := r.WriteInt32("tokens", ids); err == nil {
		t.Error("token -100 written")
	}
	// A plan that claims a range for a float buffer is invalid.
	p := *c.step.Plan
	p.Buffers = append([]plan.Buffer(nil), p.Buffers...)
	for i := range p.Buffers {
		if p.Buffers[i].Name == "lr" {
			p.Buffers[i].Index = &plan.IndexRange{Below: 4}
		}
	}
	if err := plan.Validate(&p); err == nil {
		t.Error("an index range on the f32 lr buffer passed validation")
	}
}

// RunGraph (magc eval on a device) checks its inputs too.
func TestRunGraphRefusesBadIndices(t *testing.T) {
	c := compileTiny(t, "full")
	params, err := ref.InitParams(c.fwd.Graph, 1)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]*ref.Tensor{}
	for _, i := range c.fwd.Graph.Inputs {
		in[i.Name] = ref.New(i.Value.Type)
	}
	in["tokens"].Data[5] = 99
	if _, err := train.RunGraph(sim.New(), c.fwd, in, params); err == nil || !strings.Contains(err.Error(), "input tokens[0, 5] is 99") {
		t.Errorf("RunGraph with token 99: %v", err)
	}
}
