package train_test

import (
	"bytes"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

func TestLossScalerUpdate(t *testing.T) {
	s := &train.LossScaler{Scale: 8, Factor: 2, Interval: 3}
	for i, c := range []struct {
		norm    float64
		applied bool
		scale   float64
		clean   int
		skipped int
	}{
		{1, true, 8, 1, 0},
		{math.Inf(1), false, 4, 0, 1}, // halved, the clean run starts again
		{1, true, 4, 1, 1},
		{2, true, 4, 2, 1},
		{3, true, 8, 0, 1}, // three clean steps in a row: doubled
		{math.NaN(), false, 4, 0, 2},
		{math.Inf(-1), false, 2, 0, 3},
	} {
		applied, err := s.Update(c.norm)
		if err != nil || applied != c.applied || s.Scale != c.scale || s.Clean != c.clean || s.Skipped != c.skipped {
			t.Fatalf("update %d (norm %v): applied %v, %v, state %+v; want applied %v, scale %g, clean %d, skipped %d",
				i, c.norm, applied, err, s, c.applied, c.scale, c.clean, c.skipped)
		}
	}
	// The scale stops at f32's range at both ends.
	top := &train.LossScaler{Scale: 0x1p127, Factor: 2, Interval: 1}
	if ok, err := top.Update(1); !ok || err != nil || top.Scale != 0x1p127 {
		t.Errorf("growth past f32's largest power of two: %v %v, scale %g", ok, err, top.Scale)
	}
	low := &train.LossScaler{Scale: 0x1p-126, Factor: 2, Interval: 1}
	if _, err := low.Update(math.NaN()); err == nil || !strings.Contains(err.Error(), "not finite at any scale") {
		t.Errorf("backing off below 2^-126: %v", err)
	}
	for scale, want := range map[float64]string{65536: "2^16", 0x1p-3: "2^-3", 1000: "1000", 1e25: "1e+25"} {
		if got := (&train.LossScaler{Scale: scale}).String(); got != want {
			t.Errorf("scale %g prints %q, want %q", scale, got, want)
		}
	}
	if err := train.NewLossScaler().Check(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if s := train.NewLossScaler(); s.Scale != 65536 || s.Factor != 2 || s.Interval != 2000 {
		t.Errorf("defaults %+v", s)
	}
	for _, bad := range []train.LossScaler{
		{Scale: 0, Factor: 2, Interval: 1}, {Scale: math.Inf(1), Factor: 2, Interval: 1}, {Scale: 0x1p128, Factor: 2, Interval: 1},
		{Scale: math.NaN(), Factor: 2, Interval: 1}, {Scale: 1, Factor: 1, Interval: 1}, {Scale: 1, Factor: math.Inf(1), Interval: 1},
		{Scale: 1, Factor: 2, Interval: 0},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// compileTinyScaled is compileTiny (full mode) with the train step built
// for loss scaling.
func compileTinyScaled(t *testing.T) tiny {
	t.Helper()
	g, err := lang.Load("../models/tiny.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Mode: "full"}})
	if err != nil {
		t.Fatal(err)
	}
	step, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Mode: "full", Train: true, LossScale: true}})
	if err != nil {
		t.Fatal(err)
	}
	return tiny{Graphs: train.Graphs{Train: step.Graph, Forward: fwd.Graph}, step: step, fwd: fwd}
}

// trainerOn is trainer on the reference interpreter or the sim, with a
// loss scaler (nil: none).
func trainerOn(t *testing.T, gs tiny, dev, out string, steps int, scaler *train.LossScaler) *train.Trainer {
	t.Helper()
	params, err := ref.InitParams(gs.Train, 9)
	if err != nil {
		t.Fatal(err)
	}
	var st train.Stepper = train.NewRefStepper(gs.Graphs, params)
	if dev == "sim" {
		st = gs.stepper(t, params)
	}
	return &train.Trainer{Src: &data.SelectiveCopying{Seed: 9, BatchSize: 16, Len: 16, M: 2}, Step: st, Graphs: gs.Graphs,
		Device: dev, Synth: true, Scaler: scaler, Opt: train.TrainOptions{Steps: steps, LR: 1e-2, Warmup: 2, Schedule: "cosine",
			MinLR: 1e-4, EvalBatches: 1, Out: out, Seed: 9, Log: &bytes.Buffer{}}}
}

// scaleSpy wraps a stepper: it records each step's inputs, outputs and
// the weights and moments after it, can feed another loss scale at one
// step (an overflow on demand), and can close stop during a step (the
// trainer then stops after it and saves, as on Ctrl-C).
type scaleSpy struct {
	train.Stepper
	names    []string
	at       int
	scale    float64
	stopAt   int
	stop     chan struct{}
	inputs   []train.StepInputs
	outs     []map[string]float64
	snapshot []map[string]*ref.Tensor // before step 1, then after each
}

func (s *scaleSpy) Step(b data.Batch, in train.StepInputs) (map[string]float64, error) {
	if s.snapshot == nil {
		p, err := s.Get(s.names)
		if err != nil {
			return nil, err
		}
		s.snapshot = append(s.snapshot, p)
	}
	s.inputs = append(s.inputs, in)
	if len(s.inputs) == s.at {
		in.LossScale = s.scale
	}
	if len(s.inputs) == s.stopAt {
		close(s.stop)
	}
	out, err := s.Stepper.Step(b, in)
	if err != nil {
		return out, err
	}
	s.outs = append(s.outs, out)
	p, err := s.Get(s.names)
	s.snapshot = append(s.snapshot, p)
	return out, err
}

func spyOn(tr *train.Trainer, at int, scale float64) *scaleSpy {
	var names []string
	for _, p := range tr.Graphs.Train.Params {
		if p.Role == ir.Trainable || p.Role == ir.OptState {
			names = append(names, p.Name)
		}
	}
	s := &scaleSpy{Stepper: tr.Step, names: names, at: at, scale: scale}
	tr.Step = s
	return s
}

func sameParams(a, b map[string]*ref.Tensor) string {
	for n, x := range a {
		if !slices.Equal(x.Data, b[n].Data) {
			return n
		}
	}
	return ""
}

// With loss scaling on, f32 training gives the unscaled run's weights,
// moments and losses bit for bit, on the reference and the sim: the scale
// is a power of two (65536, doubling every 2 clean steps here), and
// scaling by one is exact short of overflow.
func TestLossScalingChangesNothing(t *testing.T) {
	plain, scaled := compileTiny(t, "full"), compileTinyScaled(t)
	for _, dev := range []string{"ref", "sim"} {
		t.Run(dev, func(t *testing.T) {
			a := trainerOn(t, plain, dev, t.TempDir(), 5, nil)
			sa := spyOn(a, 0, 0)
			sc := &train.LossScaler{Scale: 65536, Factor: 2, Interval: 2}
			b := trainerOn(t, scaled, dev, t.TempDir(), 5, sc)
			sb := spyOn(b, 0, 0)
			as, err := a.Run()
			if err != nil {
				t.Fatal(err)
			}
			bs, err := b.Run()
			if err != nil {
				t.Fatal(err)
			}
			var fed []float64
			for _, in := range sb.inputs {
				fed = append(fed, in.LossScale)
			}
			if want := []float64{65536, 65536, 131072, 131072, 262144}; !slices.Equal(fed, want) {
				t.Errorf("scales fed %v, want %v", fed, want)
			}
			for i := range sa.outs {
				for _, k := range []string{"loss", "grad_norm"} {
					if sa.outs[i][k] != sb.outs[i][k] {
						t.Errorf("step %d %s: %.9g scaled, %.9g unscaled", i+1, k, sb.outs[i][k], sa.outs[i][k])
					}
				}
			}
			if n := sameParams(sa.snapshot[5], sb.snapshot[5]); n != "" {
				t.Errorf("after 5 steps %s differs from the unscaled run's", n)
			}
			if !slices.Equal(as.Losses, bs.Losses) {
				t.Errorf("losses %v, unscaled %v", bs.Losses, as.Losses)
			}
			if bs.LossScale != 262144 || bs.SkippedSteps == nil || *bs.SkippedSteps != 0 {
				t.Errorf("summary: loss scale %g, skipped %v", bs.LossScale, bs.SkippedSteps)
			}
			if as.LossScale != 0 || as.SkippedSteps != nil {
				t.Errorf("an unscaled run's summary has loss scale %g, skipped %v", as.LossScale, as.SkippedSteps)
			}
			if s := readSummary(t, b.Opt.Out); s.LossScale != 262144 || s.SkippedSteps == nil || *s.SkippedSteps != 0 {
				t.Errorf("summary.json: loss scale %g, skipped %v", s.LossScale, s.SkippedSteps)
			}
		})
	}
}

// A step whose gradients overflow (a loss scale of 2^1000 at step 2: past
// f32's range on a device, past float64's gradients on the reference)
// changes no weight and no moment (they are not decayed either), halves
// the scale, counts one skipped step and leaves the step out of AdamW's
// count; the run goes on. 5 steps, or 3 and a resume for 2 more, end with
// byte-identical checkpoints on the sim, scaler state included. (The
// reference keeps f32 weights in float64 between steps and a checkpoint
// rounds them, so there the resumed run is held to the same scaler state
// and step inputs only.)
func TestLossScalingSkipsAndResumes(t *testing.T) {
	gs := compileTinyScaled(t)
	scaler := func() *train.LossScaler { return &train.LossScaler{Scale: 65536, Factor: 2, Interval: 2} }
	for _, dev := range []string{"ref", "sim"} {
		t.Run(dev, func(t *testing.T) {
			whole, half := t.TempDir(), t.TempDir()
			a := trainerOn(t, gs, dev, whole, 5, scaler())
			sp := spyOn(a, 2, 0x1p1000)
			s, err := a.Run()
			if err != nil {
				t.Fatal(err)
			}
			if n := sp.outs[1]["grad_norm"]; !math.IsNaN(n) && !math.IsInf(n, 0) {
				t.Fatalf("step 2's grad_norm is %v at a scale of 2^1000", n)
			}
			if n := sameParams(sp.snapshot[1], sp.snapshot[2]); n != "" {
				t.Errorf("the skipped step changed %s", n)
			}
			if n := sameParams(sp.snapshot[2], sp.snapshot[3]); n == "" {
				t.Error("the step after the skipped one changed nothing")
			}
			var steps []int
			var fed []float64
			for _, in := range sp.inputs {
				steps, fed = append(steps, in.Step), append(fed, in.LossScale)
			}
			// Step 2 is fed 65536 (the spy swaps in 2^1000); after it the
			// scale halves, and two clean steps (3, 4) double it again.
			if !slices.Equal(steps, []int{1, 2, 2, 3, 4}) || !slices.Equal(fed, []float64{65536, 65536, 32768, 32768, 65536}) {
				t.Errorf("AdamW steps %v, scales %v", steps, fed)
			}
			if s.LossScale != 65536 || s.SkippedSteps == nil || *s.SkippedSteps != 1 || len(s.Losses) != 5 {
				t.Errorf("summary: loss scale %g, skipped %v, %d losses", s.LossScale, s.SkippedSteps, len(s.Losses))
			}

			// Stopped after step 3 of the same 5 (as Ctrl-C), so the
			// schedule's horizon is the whole run's.
			b := trainerOn(t, gs, dev, half, 5, scaler())
			sb := spyOn(b, 2, 0x1p1000)
			sb.stopAt, sb.stop = 3, make(chan struct{})
			b.Opt.Stop = sb.stop
			if s, err := b.Run(); err != nil || !s.Interrupted || s.Steps != 3 {
				t.Fatalf("the run to stop after step 3: %v, %+v", err, s)
			}
			p, err := train.ReadProgress(filepath.Join(half, train.CheckpointFile))
			if err != nil || p.LossScale != 32768 || p.LossScaleClean != 1 || p.Skipped != 1 {
				t.Fatalf("the checkpoint of step 3 holds %+v, %v", p, err)
			}
			c := trainerOn(t, gs, dev, half, 5, scaler())
			if err := c.Resume(filepath.Join(half, train.CheckpointFile)); err != nil {
				t.Fatal(err)
			}
			if *c.Scaler != (train.LossScaler{Scale: 32768, Factor: 2, Interval: 2, Clean: 1, Skipped: 1}) {
				t.Errorf("resumed scaler %+v", *c.Scaler)
			}
			sc := spyOn(c, 0, 0)
			if _, err := c.Run(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sc.inputs, sp.inputs[3:]) {
				t.Errorf("resumed steps 4-5 ran with %+v, the whole run with %+v", sc.inputs, sp.inputs[3:])
			}
			pw, err := train.ReadProgress(filepath.Join(whole, train.CheckpointFile))
			if err != nil {
				t.Fatal(err)
			}
			ph, err := train.ReadProgress(filepath.Join(half, train.CheckpointFile))
			if err != nil || ph.LossScale != pw.LossScale || ph.LossScaleClean != pw.LossScaleClean || ph.Skipped != pw.Skipped || ph.Step != 5 {
				t.Errorf("resumed run's checkpoint %+v (%v), the whole run's %+v", ph, err, pw)
			}
			if dev == "sim" && !bytes.Equal(checkpointBytes(t, whole), checkpointBytes(t, half)) {
				t.Error("3+2 steps with a resume differ from 5 steps")
			}

			// Without a scaler, the step count would be off by the skipped step.
			d := trainerOn(t, compileTiny(t, "full"), dev, t.TempDir(), 5, nil)
			if err := d.Resume(filepath.Join(half, train.CheckpointFile)); err == nil || !strings.Contains(err.Error(), "--loss-scale") {
				t.Errorf("resuming a run with skipped steps without loss scaling: %v", err)
			}
		})
	}
}

// On the sim, an initial scale of 2^100 overflows f32 gradients for real:
// the step is skipped and the weights stay as initialised.
func TestLossScaleOverflowOnSim(t *testing.T) {
	gs := compileTinyScaled(t)
	tr := trainerOn(t, gs, "sim", t.TempDir(), 1, &train.LossScaler{Scale: 0x1p100, Factor: 2, Interval: 2000})
	sp := spyOn(tr, 0, 0)
	s, err := tr.Run()
	if err != nil {
		t.Fatal(err)
	}
	if n := sameParams(sp.snapshot[0], sp.snapshot[1]); n != "" {
		t.Errorf("the overflowed step changed %s", n)
	}
	if s.LossScale != 0x1p99 || *s.SkippedSteps != 1 {
		t.Errorf("loss scale %g, skipped %d", s.LossScale, *s.SkippedSteps)
	}
}

// A scaler needs a train step built for it, and such a step a scaler; a
// checkpoint with a bad scaler state is refused.
func TestLossScalerMismatchAndBadState(t *testing.T) {
	scaled := compileTinyScaled(t)
	for name, tr := range map[string]*train.Trainer{
		"no scaler":  trainerOn(t, scaled, "ref", t.TempDir(), 1, nil),
		"no input":   trainerOn(t, compileTiny(t, "full"), "ref", t.TempDir(), 1, train.NewLossScaler()),
		"bad scaler": trainerOn(t, scaled, "ref", t.TempDir(), 1, &train.LossScaler{Scale: -1, Factor: 2, Interval: 1}),
	} {
		if _, err := tr.Run(); err == nil || !strings.Contains(err.Error(), "loss scal") {
			t.Errorf("%s: %v", name, err)
		}
	}
	params := map[string]*ref.Tensor{}
	for _, p := range scaled.Train.Params {
		if p.Role == ir.Trainable || p.Role == ir.OptState {
			params[p.Name] = ref.New(p.Value.Type)
		}
	}
	for _, bad := range []train.Progress{
		{Step: 2, LossScale: math.Inf(1)}, {Step: 2, LossScale: 0x1p200}, {Step: 2, LossScale: 1, Skipped: 3}, {Step: 2, LossScale: 1, LossScaleClean: -1},
	} {
		path := filepath.Join(t.TempDir(), train.CheckpointFile)
		if err := train.WriteCheckpoint(path, scaled.Train, params, bad); err != nil {
			t.Fatal(err)
		}
		tr := trainerOn(t, scaled, "ref", t.TempDir(), 3, train.NewLossScaler())
		if err := tr.Resume(path); err == nil || !strings.Contains(err.Error(), "not a usable checkpoint") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
