package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/train"
)

// Loss-scaling flags that no run can use are refused naming the flag.
func TestLossScaleFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-init", "0"}, "--loss-scale-init must be a positive finite f32 number"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-init=-2"}, "--loss-scale-init must be a positive finite f32 number"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-init", "Inf"}, "got +Inf"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-init", "NaN"}, "got NaN"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-init", "1e39"}, "got 1e+39"}, // past f32
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-growth-interval", "0"}, "--loss-scale-growth-interval must be positive, got 0"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-factor", "1"}, "--loss-scale-factor must be a finite number above 1, got 1"},
		{[]string{"run", "--train", "--loss-scale", "--loss-scale-factor", "inf"}, "--loss-scale-factor must be a finite number above 1"},
		{[]string{"run", "--train", "--loss-scale-init", "1024"}, "--loss-scale-init sets up loss scaling: give --loss-scale with it"},
		{[]string{"run", "--train", "--loss-scale-factor", "4"}, "--loss-scale-factor sets up loss scaling"},
		{[]string{"run", "--loss-scale"}, "--loss-scale is for training: give --train with it"},
		{[]string{"compile", "tiny", "--forward", "--loss-scale"}, "--loss-scale is for the train step"},
	} {
		code, _, stderr := magc(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, %q (want %q)", c.args, code, stderr, c.msg)
		}
	}
	// A scale that is not a power of two is fine; unset flags take the defaults.
	init := 1000.0
	c := &runCmd{Train: true, LossScale: true, LossScaleInit: &init}
	if err := c.checkLossScale(); err != nil {
		t.Error(err)
	}
	if s := c.scaler(); *s != (train.LossScaler{Scale: 1000, Factor: 2, Interval: 2000}) {
		t.Errorf("scaler %+v", *s)
	}
	if s := (&runCmd{Train: true}).scaler(); s != nil {
		t.Errorf("a run without --loss-scale has a scaler %+v", *s)
	}
}

// magc run --train --loss-scale trains with a scaler whose state reaches
// summary.json and the checkpoint, and a --resume continues it; the
// progress log shows the scale.
func TestRunWithLossScale(t *testing.T) {
	out := t.TempDir()
	args := []string{"run", "--train", "--device", "ref", "--eval-batches", "1", "--out", out, "--quiet",
		"--loss-scale", "--loss-scale-init", "1024", "--loss-scale-growth-interval", "2", "--loss-scale-factor", "4"}
	code, _, stderr := magc(t, append(args, "--steps", "4")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	summary := func() train.Summary {
		var s train.Summary
		raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
		if err == nil {
			err = json.Unmarshal(raw, &s)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Growth by 4 after steps 2 and 4.
	if s := summary(); s.LossScale != 16384 || s.SkippedSteps == nil || *s.SkippedSteps != 0 {
		t.Errorf("summary.json: loss scale %g, skipped %v", s.LossScale, s.SkippedSteps)
	}
	if !strings.Contains(stderr, "scale 2^12 skipped 0") || !strings.Contains(stderr, "loss scale 2^14, 0 steps skipped") {
		t.Errorf("the log does not show the loss scale:\n%s", stderr)
	}
	ckpt := filepath.Join(out, train.CheckpointFile)
	if p, err := train.ReadProgress(ckpt); err != nil || p.LossScale != 16384 || p.Skipped != 0 {
		t.Fatalf("checkpoint: %+v, %v", p, err)
	}
	code, _, stderr = magc(t, append(args, "--steps", "6", "--resume", ckpt)...)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	if s := summary(); s.LossScale != 65536 || s.Steps != 6 {
		t.Errorf("resumed summary.json: loss scale %g at step %d", s.LossScale, s.Steps)
	}
}

// TestRunF16ScalesAndResumes: --precision f16 trains with loss scaling on
// its own; its checkpoint records the precision, so a resume without the
// flag continues in f16 with its scaler.
func TestRunF16ScalesAndResumes(t *testing.T) {
	out := t.TempDir()
	args := []string{"run", "--train", "--device", "sim", "--eval-batches", "1", "--out", out, "--quiet"}
	code, _, stderr := magc(t, append(args, "--precision", "f16", "--steps", "2")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	read := func() train.Summary {
		var s train.Summary
		raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
		if err == nil {
			err = json.Unmarshal(raw, &s)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := read(); s.Precision != "f16" || s.LossScale != 65536 {
		t.Errorf("summary.json: precision %q, loss scale %g", s.Precision, s.LossScale)
	}
	ckpt := filepath.Join(out, train.CheckpointFile)
	if p, err := train.ReadProgress(ckpt); err != nil || p.Precision != "f16" {
		t.Fatalf("checkpoint: %+v, %v", p, err)
	}
	code, _, stderr = magc(t, append(args, "--steps", "3", "--resume", ckpt)...)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	if s := read(); s.Precision != "f16" || s.LossScale == 0 || s.Steps != 3 {
		t.Errorf("resumed summary.json: precision %q, loss scale %g, steps %d", s.Precision, s.LossScale, s.Steps)
	}
}
