package train

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/safetensors"
)

// CheckpointFile is the checkpoint's name in the output directory.
const CheckpointFile = "checkpoint.safetensors"

// checkpointFormat versions the metadata below.
const checkpointFormat = "magc-checkpoint-1"

// Progress is what a checkpoint records of its run besides the tensors.
type Progress struct {
	Step int
	Seed uint64
	// Steps is the run's planned steps, its schedule's horizon; LR the
	// learning rate of step Step. A resume with other --steps continues
	// the schedule from LR (0: not recorded).
	Steps int
	LR    float64
	// Losses are the training losses of steps LossesFrom+1 … Step.
	Losses     []float64
	LossesFrom int
	// Model and Data are the --model and --data the run was given;
	// Precision its --precision ("" for f32).
	Model, Data, Precision string
	// LossScale, LossScaleClean and Skipped are a loss scaler's state
	// (LossScaler's Scale, Clean and Skipped); LossScale 0: the run did
	// not scale.
	LossScale      float64
	LossScaleClean int
	Skipped        int
	// Graph and Mode are the model's name and training mode (read only:
	// WriteCheckpoint takes them from the graph).
	Graph, Mode string
}

// SaveCheckpoint writes the named parameters with the step and seed. The
// write is atomic (temp file, fsync, rename): a failed or killed save
// leaves the previous checkpoint as it was.
func SaveCheckpoint(path string, g *ir.Graph, params map[string]*ref.Tensor, step int, seed uint64) error {
	return WriteCheckpoint(path, g, params, Progress{Step: step, Seed: seed})
}

// WriteCheckpoint is SaveCheckpoint with the run's progress (schedule,
// loss history, model and data) in the metadata.
func WriteCheckpoint(path string, g *ir.Graph, params map[string]*ref.Tensor, p Progress) error {
	tensors := map[string]safetensors.Tensor{}
	for name, t := range params {
		st, err := ToSafetensors(t)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", name, err)
		}
		tensors[name] = st
	}
	meta := map[string]string{
		"format": checkpointFormat, "model": g.Name, "mode": g.Train.Mode,
		"step": strconv.Itoa(p.Step), "seed": strconv.FormatUint(p.Seed, 10),
	}
	if p.Steps > 0 {
		meta["steps"] = strconv.Itoa(p.Steps)
		meta["lr"] = strconv.FormatFloat(p.LR, 'g', -1, 64)
	}
	if len(p.Losses) > 0 {
		b, err := json.Marshal(p.Losses)
		if err != nil {
			return fmt.Errorf("checkpoint losses: %w", err)
		}
		meta["losses"], meta["losses_from"] = string(b), strconv.Itoa(p.LossesFrom)
	}
	if p.LossScale > 0 {
		meta["loss_scale"] = strconv.FormatFloat(p.LossScale, 'g', -1, 64)
		meta["loss_scale_clean"] = strconv.Itoa(p.LossScaleClean)
		meta["skipped_steps"] = strconv.Itoa(p.Skipped)
	}
	if p.Model != "" {
		meta["run_model"] = p.Model
	}
	if p.Data != "" {
		meta["run_data"] = p.Data
	}
	if p.Precision != "" && p.Precision != "f32" {
		meta["run_precision"] = p.Precision
	}
	return safetensors.WriteFile(path, tensors, meta)
}

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Progress
	Params map[string]*ref.Tensor
}

// IsCheckpoint reports whether a safetensors file's metadata is a magc
// training checkpoint's.
func IsCheckpoint(md map[string]string) bool { return md["format"] == checkpointFormat }

// ReadProgress reads a checkpoint's metadata alone (the model and data it
// was trained on, its step), refusing a file that is not a checkpoint.
func ReadProgress(path string) (*Progress, error) {
	f, err := safetensors.Read(path)
	if err != nil {
		return nil, err
	}
	if f.Metadata["format"] != checkpointFormat {
		return nil, fmt.Errorf("%s: not a magc checkpoint (format %q, want %q)", path, f.Metadata["format"], checkpointFormat)
	}
	p, err := progress(f.Metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: not a usable checkpoint: %v", path, err)
	}
	return p, nil
}

// progress parses the metadata SaveCheckpoint writes.
func progress(md map[string]string) (*Progress, error) {
	step, err := strconv.Atoi(md["step"])
	if err != nil || step < 0 {
		return nil, fmt.Errorf("bad step %q", md["step"])
	}
	seed, err := strconv.ParseUint(md["seed"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad seed %q", md["seed"])
	}
	p := &Progress{Step: step, Seed: seed, Model: md["run_model"], Data: md["run_data"], Precision: md["run_precision"], Graph: md["model"], Mode: md["mode"]}
	if s, ok := md["steps"]; ok {
		if p.Steps, err = strconv.Atoi(s); err != nil || p.Steps < step {
			return nil, fmt.Errorf("bad planned steps %q at step %d", s, step)
		}
		if p.LR, err = strconv.ParseFloat(md["lr"], 64); err != nil || !(p.LR >= 0) || math.IsInf(p.LR, 0) {
			return nil, fmt.Errorf("bad learning rate %q", md["lr"])
		}
	}
	if s, ok := md["loss_scale"]; ok {
		if p.LossScale, err = strconv.ParseFloat(s, 64); err != nil || !(p.LossScale >= minLossScale && p.LossScale <= maxLossScale) {
			return nil, fmt.Errorf("bad loss scale %q", s)
		}
		if p.LossScaleClean, err = strconv.Atoi(md["loss_scale_clean"]); err != nil || p.LossScaleClean < 0 || p.LossScaleClean > step {
			return nil, fmt.Errorf("bad count of clean steps %q at step %d", md["loss_scale_clean"], step)
		}
		if p.Skipped, err = strconv.Atoi(md["skipped_steps"]); err != nil || p.Skipped < 0 || p.Skipped > step {
			return nil, fmt.Errorf("bad count of skipped steps %q at step %d", md["skipped_steps"], step)
		}
	}
	if s, ok := md["losses"]; ok {
		if err := json.Unmarshal([]byte(s), &p.Losses); err != nil {
			return nil, fmt.Errorf("bad loss history: %v", err)
		}
		if p.LossesFrom, err = strconv.Atoi(md["losses_from"]); err != nil || p.LossesFrom < 0 || p.LossesFrom+len(p.Losses) != step {
			return nil, fmt.Errorf("the loss history (%d losses after step %q) does not end at step %d", len(p.Losses), md["losses_from"], step)
		}
		for i, l := range p.Losses {
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return nil, fmt.Errorf("the loss of step %d is %v", p.LossesFrom+i+1, l)
			}
		}
	}
	return p, nil
}

// LoadCheckpoint reads a checkpoint and checks it against the train graph:
// same model and mode, and exactly the trainable parameters and optimizer
// state with their shapes. Anything else is refused with the reason.
func LoadCheckpoint(path string, g *ir.Graph, names []string) (*Checkpoint, error) {
	f, err := safetensors.Read(path)
	if err != nil {
		return nil, err
	}
	md := f.Metadata
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: not a usable checkpoint: %s", path, fmt.Sprintf(format, args...))
	}
	if md["format"] != checkpointFormat {
		return nil, fail("format %q, want %q", md["format"], checkpointFormat)
	}
	if md["model"] != g.Name || md["mode"] != g.Train.Mode {
		return nil, fail("it is for model %s (%s), this run trains %s (%s)", md["model"], md["mode"], g.Name, g.Train.Mode)
	}
	p, err := progress(md)
	if err != nil {
		return nil, fail("%v", err)
	}
	c := &Checkpoint{Progress: *p, Params: map[string]*ref.Tensor{}}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
		st, ok := f.Tensors[n]
		if !ok {
			return nil, fail("parameter %s is missing", n)
		}
		if c.Params[n], err = FromSafetensors(n, st, g.Param(n).Value.Type); err != nil {
			return nil, fail("%v", err)
		}
	}
	var extra []string
	for n := range f.Tensors {
		if !want[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return nil, fail("it holds tensors this model does not train: %v", extra)
	}
	return c, nil
}
