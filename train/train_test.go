package train_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

func trainer(t *testing.T, gs tiny, out string, steps int) *train.Trainer {
	t.Helper()
	params, err := ref.InitParams(gs.Train, 9)
	if err != nil {
		t.Fatal(err)
	}
	st := gs.stepper(t, params)
	return &train.Trainer{Src: &data.SelectiveCopying{Seed: 9, BatchSize: 16, Len: 16, M: 2}, Step: st, Graphs: gs.Graphs,
		Device: "sim", Synth: true, Opt: train.TrainOptions{Steps: steps, LR: 1e-2, Warmup: 2, Schedule: "cosine",
			MinLR: 1e-4, EvalBatches: 1, Out: out, Seed: 9, Log: &bytes.Buffer{}}}
}

func checkpointBytes(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, train.CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A run of 4 steps and a run of 2 steps resumed for 2 more end with
// byte-identical checkpoints (weights, moments, step).
func TestResumeIsBitExact(t *testing.T) {
	gs := compileTiny(t, "full")
	whole, half := t.TempDir(), t.TempDir()
	if _, err := trainer(t, gs, whole, 4).Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := trainer(t, gs, half, 2).Run(); err != nil {
		t.Fatal(err)
	}
	resumed := trainer(t, gs, half, 4)
	if err := resumed.Resume(filepath.Join(half, train.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if resumed.Start != 2 {
		t.Fatalf("resumed at step %d, want 2", resumed.Start)
	}
	if _, err := resumed.Run(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(checkpointBytes(t, whole), checkpointBytes(t, half)) {
		t.Fatal("2+2 steps with a resume differ from 4 steps")
	}
	var s train.Summary
	raw, _ := os.ReadFile(filepath.Join(whole, "summary.json"))
	if err := json.Unmarshal(raw, &s); err != nil || s.Steps != 4 || s.EvalAccuracy == nil {
		t.Fatalf("summary.json: %v %+v", err, s)
	}
	if _, err := os.Stat(filepath.Join(whole, "loss.png")); err != nil {
		t.Fatal(err)
	}
}

// Corrupt and mismatched checkpoints are refused with their reason.
func TestBadCheckpointsAreRefused(t *testing.T) {
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	if _, err := trainer(t, gs, dir, 1).Run(); err != nil {
		t.Fatal(err)
	}
	good := checkpointBytes(t, dir)
	write := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	var names []string
	for _, p := range gs.Train.Params {
		if p.Role == ir.Trainable || p.Role == ir.OptState {
			names = append(names, p.Name)
		}
	}
	params := map[string]*ref.Tensor{}
	for _, n := range names[1:] {
		params[n] = ref.New(gs.Train.Param(n).Value.Type)
	}
	missing := filepath.Join(t.TempDir(), "missing.safetensors")
	if err := train.SaveCheckpoint(missing, gs.Train, params, 1, 9); err != nil {
		t.Fatal(err)
	}
	qlora := compileTiny(t, "qlora")
	cases := map[string]struct {
		path string
		g    tiny
		msg  string
	}{
		"truncated":  {write("t.safetensors", good[:len(good)/2]), gs, "t.safetensors"},
		"garbage":    {write("g.safetensors", []byte("not a checkpoint at all")), gs, "g.safetensors"},
		"wrong mode": {filepath.Join(dir, train.CheckpointFile), qlora, "this run trains tiny (qlora)"},
		"missing":    {missing, gs, "is missing"},
	}
	for name, c := range cases {
		tr := trainer(t, c.g, t.TempDir(), 2)
		if err := tr.Resume(c.path); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want an error mentioning %q", name, err, c.msg)
		}
	}
}

// A checkpoint write killed midway (SIGKILL while the file is being
// written) leaves the previous checkpoint intact and loadable.
func TestKilledCheckpointWriteKeepsThePrevious(t *testing.T) {
	if os.Getenv("MAGC_WRITE_FOREVER") != "" {
		// The child: write a large checkpoint over the parent's; it is killed midway.
		gs := compileTiny(t, "full")
		big := map[string]*ref.Tensor{"x": ref.New(ir.T(ir.F32, 64<<20))}
		train.SaveCheckpoint(os.Getenv("MAGC_WRITE_FOREVER"), gs.Train, big, 99, 9)
		return
	}
	gs := compileTiny(t, "full")
	dir := t.TempDir()
	if _, err := trainer(t, gs, dir, 1).Run(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, train.CheckpointFile)
	before := checkpointBytes(t, dir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledCheckpointWriteKeepsThePrevious$")
	cmd.Env = append(os.Environ(), "MAGC_WRITE_FOREVER="+path)
	// Kill the writer while it writes the temp file next to the checkpoint.
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := false
	for i := 0; i < 400 && !seen; i++ {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.tmp*"))
		seen = len(matches) > 0
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !seen {
		t.Fatal("the writer never started its temp file")
	}
	if !bytes.Equal(before, checkpointBytes(t, dir)) {
		t.Fatal("the previous checkpoint changed")
	}
	tr := trainer(t, gs, t.TempDir(), 2)
	if err := tr.Resume(path); err != nil {
		t.Fatalf("the previous checkpoint no longer loads: %v", err)
	}
}
