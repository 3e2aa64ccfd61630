package train_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

// spy wraps a stepper: it records each step's learning rate, can replace an
// output at one step, and can call a hook after a step.
type spy struct {
	train.Stepper
	lrs    map[int]float64
	at     int
	output string
	value  float64
	after  func(step int)
}

func (s *spy) Step(b data.Batch, in train.StepInputs) (map[string]float64, error) {
	lr, step := in.LR, in.Step
	out, err := s.Stepper.Step(b, in)
	if s.lrs == nil {
		s.lrs = map[int]float64{}
	}
	s.lrs[step] = lr
	if err == nil && step == s.at {
		out[s.output] = s.value
	}
	if s.after != nil {
		s.after(step)
	}
	return out, err
}

func readSummary(t *testing.T, dir string) train.Summary {
	t.Helper()
	var s train.Summary
	raw, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err == nil {
		err = json.Unmarshal(raw, &s)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Non-finite weights and negative second moments in a checkpoint are
// refused, naming the tensor.
func TestCheckpointNonFiniteRefused(t *testing.T) {
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	if _, err := trainer(t, gs, dir, 1).Run(); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Read(filepath.Join(dir, train.CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	spoil := func(name string, v float32) string {
		ts := map[string]safetensors.Tensor{}
		for n, st := range f.Tensors {
			ts[n] = st
		}
		x, _ := ts[name].Float32s()
		x = append([]float32(nil), x...)
		x[1] = v
		ts[name], _ = safetensors.FromFloat32("F32", ts[name].Shape, x)
		p := filepath.Join(t.TempDir(), "c.safetensors")
		if err := safetensors.WriteFile(p, ts, f.Metadata); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, c := range map[string]struct {
		path, msg string
	}{
		"NaN weight":        {spoil("embed", float32(math.NaN())), "embed: element 1 is NaN"},
		"Inf moment":        {spoil("embed.adam_m", float32(math.Inf(1))), "embed.adam_m: element 1 is +Inf"},
		"-Inf weight":       {spoil("embed", float32(math.Inf(-1))), "embed: element 1 is -Inf"},
		"negative 2nd mom.": {spoil("embed.adam_v", -1e-3), "embed.adam_v: element 1 is -0.001"},
	} {
		err := trainer(t, gs, t.TempDir(), 2).Resume(c.path)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v (want %q)", name, err, c.msg)
		}
	}
	// A negative first moment is fine (gradients have signs).
	if err := trainer(t, gs, t.TempDir(), 2).Resume(spoil("embed.adam_m", -1)); err != nil {
		t.Errorf("negative first moment refused: %v", err)
	}
}

// The non-finite stop names what was not finite (even when the loss is
// finite) and says truly which checkpoint is left.
func TestNonFiniteStopSaysWhat(t *testing.T) {
	gs := compileTiny(t, "full")
	for _, c := range []struct {
		save       int
		out        string
		want, kept string
	}{
		{0, "grad_norm", "grad_norm is NaN", "no checkpoint was saved"},
		{1, "loss", "loss is +Inf", "the checkpoint of step 2"},
	} {
		dir := t.TempDir()
		tr := trainer(t, gs, dir, 5)
		tr.Opt.SaveEvery = c.save
		v := math.NaN()
		if c.out == "loss" {
			v = math.Inf(1)
		}
		tr.Step = &spy{Stepper: tr.Step, at: 3, output: c.out, value: v}
		_, err := tr.Run()
		if err == nil || !strings.Contains(err.Error(), "step 3: not finite: "+c.want) || !strings.Contains(err.Error(), c.kept) {
			t.Errorf("save every %d: %v", c.save, err)
		}
		if c.save == 0 && !strings.Contains(err.Error(), "every parameter is still finite") {
			t.Errorf("no word on the parameters: %v", err)
		}
	}
	// A forced fresh run that fails before saving leaves the earlier run's
	// checkpoint, and says so.
	dir := t.TempDir()
	if _, err := trainer(t, gs, dir, 1).Run(); err != nil {
		t.Fatal(err)
	}
	tr := trainer(t, gs, dir, 5)
	tr.Step = &spy{Stepper: tr.Step, at: 2, output: "loss", value: math.NaN()}
	if _, err := tr.Run(); err == nil || !strings.Contains(err.Error(), "this run saved nothing; "+filepath.Join(dir, train.CheckpointFile)+", from an earlier run, is unchanged") {
		t.Errorf("forced run failing before its first save: %v", err)
	}
}

// A fresh run into a directory holding another run's checkpoint is
// refused unless forced; resuming that very checkpoint is fine.
func TestOutHoldingACheckpoint(t *testing.T) {
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	if err := train.CheckOut(dir, "", false); err != nil {
		t.Fatalf("empty directory: %v", err)
	}
	if _, err := trainer(t, gs, dir, 1).Run(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, train.CheckpointFile)
	err := train.CheckOut(dir, "", false)
	if err == nil || !strings.Contains(err.Error(), "checkpoint of tiny at step 1") || !strings.Contains(err.Error(), "--resume "+path) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("fresh run: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.safetensors")
	b, _ := os.ReadFile(path)
	os.WriteFile(other, b, 0o644)
	if err := train.CheckOut(dir, other, false); err == nil || strings.Contains(err.Error(), "--resume") {
		t.Errorf("resuming another checkpoint into it: %v", err)
	}
	if err := train.CheckOut(dir, path, false); err != nil {
		t.Errorf("resuming its own checkpoint: %v", err)
	}
	if err := train.CheckOut(dir, "", true); err != nil {
		t.Errorf("--force: %v", err)
	}
}

// A resume with a longer horizon continues the schedule from the
// checkpoint's rate (no jump back up), and the summary covers every step.
func TestResumeContinuesScheduleAndHistory(t *testing.T) {
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	first := trainer(t, gs, dir, 6)
	sp := &spy{Stepper: first.Step}
	first.Step = sp
	if _, err := first.Run(); err != nil {
		t.Fatal(err)
	}
	before := readSummary(t, dir).Losses
	more := trainer(t, gs, dir, 12)
	sp2 := &spy{Stepper: more.Step}
	more.Step = sp2
	if err := more.Resume(filepath.Join(dir, train.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := more.Run(); err != nil {
		t.Fatal(err)
	}
	end := sp.lrs[6] // the first run ends at its floor
	for s := 7; s <= 12; s++ {
		if sp2.lrs[s] > end+1e-12 || sp2.lrs[s] < first.Opt.MinLR-1e-12 {
			t.Errorf("step %d: lr %g, after the first run ended at %g", s, sp2.lrs[s], end)
		}
	}
	s := readSummary(t, dir)
	if len(s.Losses) != 12 || s.Steps != 12 || s.ResumedFrom != 6 || s.FirstLoss != before[0] {
		t.Fatalf("summary after the resume: %d losses, steps %d, resumed from %d, first loss %v (want %v)", len(s.Losses), s.Steps, s.ResumedFrom, s.FirstLoss, before[0])
	}
	for i := range before {
		if s.Losses[i] != before[i] {
			t.Errorf("loss %d: %v, the first run had %v", i+1, s.Losses[i], before[i])
		}
	}
	// Halfway through its warm-up-free decay, a horizon change is continuous.
	mid := trainer(t, gs, t.TempDir(), 12)
	mid.Opt.From, mid.Opt.FromLR = 6, 3e-3
	if got := mid.Opt.LearningRate(6 + 1); got > 3e-3 || got < 2.5e-3 {
		t.Errorf("the step after a continuation point: %g", got)
	}
}

// Stopping (SIGINT in magc run) saves the step done, and writes the summary
// and loss plot for the steps done.
func TestStopSavesAndSummarises(t *testing.T) {
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	tr := trainer(t, gs, dir, 50)
	stop := make(chan struct{})
	tr.Opt.Stop = stop
	tr.Step = &spy{Stepper: tr.Step, after: func(step int) {
		if step == 3 {
			close(stop)
		}
	}}
	sum, err := tr.Run()
	if err != nil {
		t.Fatal(err)
	}
	s := readSummary(t, dir)
	if !sum.Interrupted || !s.Interrupted || s.Steps != 3 || len(s.Losses) != 3 {
		t.Fatalf("summary: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(dir, "loss.png")); err != nil {
		t.Fatal(err)
	}
	p, err := train.ReadProgress(filepath.Join(dir, train.CheckpointFile))
	if err != nil || p.Step != 3 || len(p.Losses) != 3 || p.Steps != 50 {
		t.Fatalf("checkpoint: %+v, %v", p, err)
	}
	if !strings.Contains(tr.Opt.Log.(*bytes.Buffer).String(), "checkpoint.safetensors at step 3") {
		t.Errorf("log: %s", tr.Opt.Log)
	}
	// Resumed with the same --steps, it follows the original schedule exactly.
	again := trainer(t, gs, dir, 50)
	if err := again.Resume(filepath.Join(dir, train.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if again.Opt.From != 0 {
		t.Errorf("same horizon, yet the schedule is re-based at %d", again.Opt.From)
	}
}

// --base weights and eval --params go through FromSafetensors: non-finite
// values are refused there, by name.
func TestFromSafetensorsNonFinite(t *testing.T) {
	typ := ir.T(ir.F32, 2, 2)
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		st, _ := safetensors.FromFloat32("F32", []int{2, 2}, []float32{0, 1, v, 3})
		if _, err := train.FromSafetensors("w", st, typ); err == nil || !strings.Contains(err.Error(), "w: element 2") {
			t.Errorf("%v: %v", v, err)
		}
		if _, err := train.FromSafetensors("q", st, ir.T(ir.NF4, 2, 64)); err == nil {
			t.Errorf("%v as an NF4 weight: accepted", v)
		}
	}
	var _ = ref.New
}
