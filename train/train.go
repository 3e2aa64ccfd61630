package train

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/train/data"
)

// TrainOptions configure a training run.
type TrainOptions struct {
	Steps       int
	LR          float64
	MinLR       float64 // the cosine schedule's floor
	Warmup      int     // linear warm-up steps
	Schedule    string  // "cosine" or "constant"
	EvalEvery   int     // steps between evaluations (0: only at the end)
	EvalBatches int
	SaveEvery   int // steps between checkpoints (0: only at the end)
	Out         string
	Seed        uint64
	Log         io.Writer // progress and summary
	Progress    bool      // draw a progress bar (else print a line every 5% of the steps)
	// Stop, when closed, ends the run after the step in progress: it is
	// saved, and the summary and loss plot cover the steps done.
	Stop <-chan struct{}
	// Model and Data are recorded in checkpoints, so that evaluating one
	// needs neither.
	Model, Data string

	// Sample, when set, returns a short text sample from the current
	// weights (read through get); periodic evaluations print it.
	Sample func(get func(names []string) (map[string]*ref.Tensor, error)) (string, error)

	// From and FromLR continue a schedule whose horizon changed (a resume
	// with other --steps): after step From the rate decays from FromLR, the
	// rate at From, instead of jumping to where a schedule of Steps would be.
	From   int
	FromLR float64
}

// LearningRate is the schedule's rate at step (counting from 1): linear
// warm-up, then constant or a cosine decay to MinLR at the last step.
func (o *TrainOptions) LearningRate(step int) float64 {
	if o.Warmup > 0 && step <= o.Warmup {
		return o.LR * float64(step) / float64(o.Warmup)
	}
	if o.Schedule != "cosine" || o.Steps <= o.Warmup {
		return o.LR
	}
	if o.From > 0 && step > o.From {
		p := float64(step-o.From) / float64(o.Steps-o.From)
		return o.MinLR + (o.FromLR-o.MinLR)*0.5*(1+math.Cos(math.Pi*p))
	}
	p := float64(step-o.Warmup) / float64(o.Steps-o.Warmup)
	return o.MinLR + (o.LR-o.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}

// Summary is summary.json.
type Summary struct {
	Model        string    `json:"model"`
	Data         string    `json:"data"`
	Device       string    `json:"device"`
	Precision    string    `json:"precision"`
	Steps        int       `json:"steps"`
	Interrupted  bool      `json:"interrupted,omitempty"`
	ResumedFrom  int       `json:"resumed_from,omitempty"`
	Tokens       int64     `json:"tokens"`
	Seconds      float64   `json:"seconds"`
	TokensPerS   float64   `json:"tokens_per_s"`
	FirstLoss    float64   `json:"first_loss"`
	FinalLoss    float64   `json:"final_loss"`
	EvalLoss     float64   `json:"eval_loss"`
	EvalAccuracy *float64  `json:"eval_accuracy,omitempty"`
	LossesFrom   int       `json:"losses_from,omitempty"`
	Losses       []float64 `json:"losses"`
	// With loss scaling: the scale at the end and the steps skipped for a
	// non-finite gradient norm, resumed parts included.
	LossScale    float64 `json:"loss_scale,omitempty"`
	SkippedSteps *int    `json:"skipped_steps,omitempty"`
}

// Trainer runs the training loop over a Stepper.
type Trainer struct {
	Opt    TrainOptions
	Src    data.Source
	Step   Stepper
	Graphs Graphs
	Device string
	// Precision is the storage precision the step was compiled in (f32, f16, bf16).
	Precision string
	Synth     bool // the source is a synthetic task: report accuracy
	Start     int  // steps already done (after a resume)
	// Scaler runs dynamic loss scaling; set exactly when the train step is
	// built for it (passes.Config.LossScale), before Resume.
	Scaler *LossScaler
	// Losses are the training losses of steps LossesFrom+1 …: a resume
	// carries the checkpoint's history, so they cover the whole run.
	Losses     []float64
	LossesFrom int
	summary    Summary
	resumed    string // the checkpoint resumed from
	saved      int    // the last step this run saved (0: none)
	lr         float64
}

// trainable names the parameters a checkpoint holds: trainable weights and optimizer state.
func (t *Trainer) trainable() []string {
	var names []string
	for _, p := range t.Graphs.Train.Params {
		if p.Role == ir.Trainable || p.Role == ir.OptState {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	return names
}

// Run trains from t.Start to Opt.Steps, evaluating, checkpointing and
// writing the summary, loss curve and final checkpoint into Opt.Out. When
// Opt.Stop closes, it stops after the step in progress and does the same
// for the steps done.
func (t *Trainer) Run() (*Summary, error) {
	o := &t.Opt
	if t.Start >= o.Steps {
		return nil, fmt.Errorf("the checkpoint is at step %d: nothing to train up to --steps %d", t.Start, o.Steps)
	}
	if err := t.checkScaler(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	var bar *progressbar.ProgressBar
	if o.Progress {
		bar = progressbar.NewOptions(o.Steps,
			progressbar.OptionSetWriter(o.Log), progressbar.OptionSetDescription("training"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		bar.Set(t.Start)
	}
	start := time.Now()
	var tokens int64
	last := t.Start // the last step done
	interrupted := false
	for step := t.Start + 1; step <= o.Steps && !interrupted; step++ {
		b := t.Src.Batch(step)
		lr := o.LearningRate(step)
		in := StepInputs{LR: lr, Step: step}
		if t.Scaler != nil {
			in.Step -= t.Scaler.Skipped
			in.LossScale = t.Scaler.Scale
		}
		out, err := t.Step.Step(b, in)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w; %s", step, err, t.kept())
		}
		check := out
		if t.Scaler != nil {
			applied, err := t.Scaler.Update(out["grad_norm"])
			if err != nil {
				return nil, fmt.Errorf("step %d: %w; stopping. %s", step, err, t.kept())
			}
			if !applied { // the step changed nothing: its norm is no failure
				check = maps.Clone(out)
				delete(check, "grad_norm")
			}
		}
		if bad := nonFinite(check); bad != "" {
			return nil, fmt.Errorf("step %d: %s; stopping. %s; try a lower --lr", step, t.whatIsNonFinite(bad), t.kept())
		}
		last, t.lr = step, lr
		t.Losses = append(t.Losses, out["loss"])
		tokens += int64(b.B * b.L)
		rate := float64(tokens) / time.Since(start).Seconds()
		status := fmt.Sprintf("step %d loss %.4f lr %.2e", step, out["loss"], lr)
		if t.Scaler != nil {
			status += fmt.Sprintf(" scale %s skipped %d", t.Scaler, t.Scaler.Skipped)
		}
		status += fmt.Sprintf(" %.0f tok/s", rate)
		switch {
		case bar != nil:
			bar.Add(1) // the count first: Describe draws at once, with it
			bar.Describe(status)
		case step%max(1, o.Steps/20) == 0:
			fmt.Fprintln(o.Log, status) // a log, not a terminal: a line now and then
		}
		select {
		case <-o.Stop:
			interrupted = step < o.Steps
			continue
		default:
		}
		if o.EvalEvery > 0 && step%o.EvalEvery == 0 && step < o.Steps {
			loss, acc, err := t.evaluate()
			if err != nil {
				return nil, err
			}
			t.logEval(bar, step, loss, acc)
			if o.Sample != nil {
				text, err := o.Sample(t.Step.Get)
				if err != nil {
					return nil, fmt.Errorf("sampling at step %d: %w", step, err)
				}
				fmt.Fprintf(o.Log, "step %d: sample %s\n", step, text)
			}
		}
		if o.SaveEvery > 0 && step%o.SaveEvery == 0 && step < o.Steps {
			if err := t.save(step); err != nil {
				return nil, err
			}
		}
	}
	secs := time.Since(start).Seconds()
	if bar != nil {
		bar.Finish()
	}
	if err := t.save(last); err != nil {
		return nil, err
	}
	loss, acc, err := t.evaluate()
	if err != nil {
		return nil, err
	}
	s := &t.summary
	*s = Summary{Model: t.Graphs.Train.Name, Data: t.Src.Name(), Device: t.Device, Precision: cmp.Or(t.Precision, "f32"), Steps: last, Interrupted: interrupted,
		ResumedFrom: t.Start, Tokens: tokens, Seconds: secs, TokensPerS: float64(tokens) / math.Max(secs, 1e-9),
		EvalLoss: loss, LossesFrom: t.LossesFrom, Losses: t.Losses}
	if len(t.Losses) > 0 {
		s.FirstLoss, s.FinalLoss = t.Losses[0], t.Losses[len(t.Losses)-1]
	}
	if t.Synth {
		s.EvalAccuracy = &acc
	}
	if t.Scaler != nil {
		skipped := t.Scaler.Skipped
		s.LossScale, s.SkippedSteps = t.Scaler.Scale, &skipped
	}
	if err := WriteJSON(filepath.Join(o.Out, "summary.json"), s); err != nil {
		return nil, err
	}
	if err := PlotLoss(t.Losses, t.LossesFrom, filepath.Join(o.Out, "loss.png"), t.Graphs.Train.Name+" on "+t.Src.Name()); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "trained %d steps (%d tokens) in %.1f s: %.0f tokens/s on %s\n", last-t.Start, tokens, secs, s.TokensPerS, t.Device)
	fmt.Fprintf(o.Log, "loss %.4f → %.4f; eval loss %.4f", s.FirstLoss, s.FinalLoss, loss)
	if t.Synth {
		fmt.Fprintf(o.Log, ", eval accuracy %.1f%%", 100*acc)
	}
	if t.Scaler != nil {
		fmt.Fprintf(o.Log, "; loss scale %s, %d steps skipped", t.Scaler, t.Scaler.Skipped)
	}
	fmt.Fprintf(o.Log, "\nwrote %s (summary.json, loss.png, checkpoint.safetensors at step %d)\n", o.Out, last)
	return s, nil
}

// checkScaler refuses a scaler without a train step built for loss
// scaling, and such a step without a scaler.
func (t *Trainer) checkScaler() error {
	takes := false
	for _, in := range t.Graphs.Train.Inputs {
		takes = takes || in.Name == "loss_scale"
	}
	switch {
	case takes && t.Scaler == nil:
		return fmt.Errorf("the train step of %s is built for loss scaling and the trainer has no loss scaler", t.Graphs.Train.Name)
	case !takes && t.Scaler != nil:
		return fmt.Errorf("the trainer scales the loss, but the train step of %s has no loss_scale input (build it with loss scaling)", t.Graphs.Train.Name)
	case t.Scaler != nil:
		return t.Scaler.Check()
	}
	return nil
}

// kept says truthfully which checkpoint a failed run leaves.
func (t *Trainer) kept() string {
	path := filepath.Join(t.Opt.Out, CheckpointFile)
	switch {
	case t.saved > 0:
		return fmt.Sprintf("the checkpoint of step %d in %s is the latest", t.saved, path)
	case t.resumed != "":
		return fmt.Sprintf("this run saved nothing; %s (step %d), which it resumed from, is unchanged", t.resumed, t.Start)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Sprintf("this run saved nothing; %s, from an earlier run, is unchanged", path)
	}
	return "no checkpoint was saved"
}

// CheckOut refuses to start training into out when it holds a checkpoint
// of another run (one not being resumed), unless force: a fresh run would
// replace it at its first save.
func CheckOut(out, resume string, force bool) error {
	path := filepath.Join(out, CheckpointFile)
	info, err := os.Stat(path)
	if err != nil || force {
		return nil
	}
	if resume != "" {
		if ri, err := os.Stat(resume); err == nil && os.SameFile(info, ri) {
			return nil
		}
	}
	what := "a checkpoint"
	if p, err := ReadProgress(path); err == nil {
		what = fmt.Sprintf("a checkpoint of %s at step %d", p.Graph, p.Step)
	}
	hint := "continue it with --resume " + path + ", "
	if resume != "" {
		hint = ""
	}
	return fmt.Errorf("%s holds %s from another run, which this run would replace: %strain into another --out, or give --force to replace it", path, what, hint)
}

// nonFinite lists the step outputs that are not finite numbers ("" if none).
func nonFinite(out map[string]float64) string {
	var bad []string
	for name, x := range out {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			bad = append(bad, fmt.Sprintf("%s is %v", name, x))
		}
	}
	sort.Strings(bad)
	return strings.Join(bad, ", ")
}

// whatIsNonFinite completes a report of non-finite step outputs with the
// parameters the step left non-finite (the update wrote them).
func (t *Trainer) whatIsNonFinite(bad string) string {
	msg := "not finite: " + bad
	var names []string
	for _, p := range t.Graphs.Train.Params {
		if p.Role == ir.Trainable {
			names = append(names, p.Name)
		}
	}
	params, err := t.Step.Get(names)
	if err != nil {
		return msg
	}
	var hit []string
	for _, n := range names {
		p := params[n]
		if p == nil || p.Type.DType == ir.NF4 {
			continue
		}
		for _, x := range p.Data {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				hit = append(hit, n)
				break
			}
		}
	}
	switch {
	case len(hit) > 4:
		msg += fmt.Sprintf("; the update left %d parameters non-finite (%s, …)", len(hit), strings.Join(hit[:4], ", "))
	case len(hit) > 0:
		msg += "; the update left non-finite: " + strings.Join(hit, ", ")
	default:
		msg += "; every parameter is still finite"
	}
	return msg
}

func (t *Trainer) logEval(bar *progressbar.ProgressBar, step int, loss, acc float64) {
	msg := fmt.Sprintf("step %d: eval loss %.4f", step, loss)
	if t.Synth {
		msg += fmt.Sprintf(", accuracy %.1f%%", 100*acc)
	}
	if bar != nil {
		bar.Clear()
	}
	fmt.Fprintln(t.Opt.Log, msg)
}

// Evaluate runs the held-out batches through the forward pass.
func (t *Trainer) Evaluate() (loss, acc float64, err error) { return t.evaluate() }

// evaluate computes the mean cross-entropy and argmax accuracy over the
// scored targets of the held-out batches.
func (t *Trainer) evaluate() (loss, acc float64, err error) {
	var correct, scored int
	var sum float64
	for i := 0; i < max(t.Opt.EvalBatches, 1); i++ {
		b := t.Src.Eval(i)
		logits, err := t.Step.Logits(b)
		if err != nil {
			return 0, 0, fmt.Errorf("evaluation: %w", err)
		}
		vocab := logits.Type.Shape[len(logits.Type.Shape)-1]
		l32 := logits.Float32()
		c, n := data.Accuracy(b, l32, vocab)
		correct, scored = correct+c, scored+n
		sum += crossEntropySum(b, l32, vocab)
	}
	if scored == 0 {
		return 0, 0, nil
	}
	return sum / float64(scored), float64(correct) / float64(scored), nil
}

func crossEntropySum(b data.Batch, logits []float32, vocab int) float64 {
	var s float64
	for p, y := range b.Targets {
		if y == data.Ignore {
			continue
		}
		row := logits[p*vocab : (p+1)*vocab]
		m := math.Inf(-1)
		for _, x := range row {
			m = math.Max(m, float64(x))
		}
		var z float64
		for _, x := range row {
			z += math.Exp(float64(x) - m)
		}
		s += m + math.Log(z) - float64(row[y])
	}
	return s
}

// WriteJSON writes v as indented JSON, replacing path atomically (a temp
// file, then a rename) so readers never see half a file.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		os.Remove(tmp)
		return pathError(path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return pathError(path, err)
	}
	return nil
}

// pathError words a failure to write path without the temp file's name.
func pathError(path string, err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("writing %s: %w", path, pe.Err)
	case errors.As(err, &le):
		return fmt.Errorf("writing %s: %w", path, le.Err)
	}
	return err
}

func (t *Trainer) save(step int) error {
	params, err := t.Step.Get(t.trainable())
	if err != nil {
		return err
	}
	o := &t.Opt
	p := Progress{Step: step, Seed: o.Seed, Steps: o.Steps, LR: t.lr, Losses: t.Losses, LossesFrom: t.LossesFrom, Model: o.Model, Data: o.Data, Precision: t.Precision}
	if t.Scaler != nil {
		p.LossScale, p.LossScaleClean, p.Skipped = t.Scaler.Scale, t.Scaler.Clean, t.Scaler.Skipped
	}
	err = WriteCheckpoint(filepath.Join(o.Out, CheckpointFile), t.Graphs.Train, params, p)
	if err != nil {
		return fmt.Errorf("saving the checkpoint of step %d: %w; %s", step, err, t.kept())
	}
	t.saved = step
	return nil
}

// Resume loads the checkpoint at path into the stepper and continues from its step.
func (t *Trainer) Resume(path string) error {
	c, err := LoadCheckpoint(path, t.Graphs.Train, t.trainable())
	if err != nil {
		return err
	}
	if c.Seed != t.Opt.Seed {
		return fmt.Errorf("%s was trained with --seed %d, this run has --seed %d: the data would differ", path, c.Seed, t.Opt.Seed)
	}
	switch {
	case c.LossScale > 0 && t.Scaler != nil:
		t.Scaler.Scale, t.Scaler.Clean, t.Scaler.Skipped = c.LossScale, c.LossScaleClean, c.Skipped
	case c.Skipped > 0 && t.Scaler == nil:
		return fmt.Errorf("%s was trained with loss scaling, which skipped %d steps: resume it with --loss-scale (AdamW's step count leaves them out)", path, c.Skipped)
	}
	if err := t.Step.Set(c.Params); err != nil {
		return err
	}
	t.Start, t.resumed, t.lr = c.Step, path, c.LR
	t.Losses, t.LossesFrom = c.Losses, c.LossesFrom
	if len(c.Losses) == 0 {
		t.LossesFrom = c.Step
	}
	// A new horizon continues the schedule from where it was; the same
	// horizon (an interrupted run) follows it exactly.
	o := &t.Opt
	if c.Steps > 0 && c.Steps != o.Steps && c.Step > 0 && c.Step >= o.Warmup {
		o.From, o.FromLR = c.Step, c.LR
	}
	return nil
}
