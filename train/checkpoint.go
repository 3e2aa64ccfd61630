package train

import (
	"fmt"
	"path/filepath"
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

// SaveCheckpoint writes the named parameters with the step and seed. The
// write is atomic (temp file, fsync, rename): a failed or killed save
// leaves the previous checkpoint as it was.
func SaveCheckpoint(path string, g *ir.Graph, params map[string]*ref.Tensor, step int, seed uint64) error {
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
		"step": strconv.Itoa(step), "seed": strconv.FormatUint(seed, 10),
	}
	return safetensors.WriteFile(path, tensors, meta)
}

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Step   int
	Seed   uint64
	Params map[string]*ref.Tensor
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
		return fmt.Errorf("%s: not a usable checkpoint: %s", filepath.Base(path), fmt.Sprintf(format, args...))
	}
	if md["format"] != checkpointFormat {
		return nil, fail("format %q, want %q", md["format"], checkpointFormat)
	}
	if md["model"] != g.Name || md["mode"] != g.Train.Mode {
		return nil, fail("it is for model %s (%s), this run trains %s (%s)", md["model"], md["mode"], g.Name, g.Train.Mode)
	}
	step, err := strconv.Atoi(md["step"])
	if err != nil || step < 0 {
		return nil, fail("bad step %q", md["step"])
	}
	seed, err := strconv.ParseUint(md["seed"], 10, 64)
	if err != nil {
		return nil, fail("bad seed %q", md["seed"])
	}
	c := &Checkpoint{Step: step, Seed: seed, Params: map[string]*ref.Tensor{}}
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
