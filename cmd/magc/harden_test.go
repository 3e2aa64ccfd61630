package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scm-magellano/magc/safetensors"
	"github.com/scm-magellano/magc/train"
	"github.com/scm-magellano/magc/train/data"
)

// writeInputs writes tiny's eval inputs with one token id and one target
// replaced.
func writeInputs(t *testing.T, dir, name string, tokAt int, tok int32, tgtAt int, tgt int32) string {
	t.Helper()
	tokens, targets := make([]int32, 256), make([]int32, 256)
	for i := range tokens {
		tokens[i], targets[i] = int32(i%16), -100
	}
	tokens[tokAt], targets[tgtAt] = tok, tgt
	a, _ := safetensors.FromInt32([]int{16, 16}, tokens)
	b, _ := safetensors.FromInt32([]int{16, 16}, targets)
	p := filepath.Join(dir, name)
	if err := safetensors.WriteFile(p, map[string]safetensors.Tensor{"tokens": a, "targets": b}, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// Out-of-range token ids and targets are refused by eval on every device,
// naming the input and the position, before anything runs.
func TestEvalRefusesBadIndices(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		path, msg string
	}{
		"token = vocab":  {writeInputs(t, dir, "a", 17, 16, 0, 3), "tokens[1, 1] is 16, outside [0, 16)"},
		"token negative": {writeInputs(t, dir, "b", 255, -1, 0, 3), "tokens[15, 15] is -1"},
		"token -100":     {writeInputs(t, dir, "c", 0, -100, 0, 3), "tokens[0, 0] is -100"},
		"target = vocab": {writeInputs(t, dir, "d", 0, 1, 40, 16), "targets[2, 8] is 16, outside [0, 16) or -100 (ignored)"},
		"target -1":      {writeInputs(t, dir, "e", 0, 1, 3, -1), "targets[0, 3] is -1"},
		"target huge":    {writeInputs(t, dir, "f", 0, 1, 3, 1<<31-1), "targets[0, 3] is 2147483647, outside"},
	}
	for _, dev := range []string{"ref", "sim"} {
		for name, c := range cases {
			code, _, stderr := magc(t, "eval", "tiny", "--inputs", c.path, "--out", filepath.Join(dir, "o"), "--device", dev)
			if code != 1 || !strings.Contains(stderr, c.msg) {
				t.Errorf("%s, %s: exit %d, %q (want %q)", dev, name, code, stderr, c.msg)
			}
		}
	}
	good := writeInputs(t, dir, "g", 0, 15, 0, 15)
	if code, _, stderr := magc(t, "eval", "tiny", "--inputs", good, "--out", filepath.Join(dir, "o"), "--device", "sim"); code != 0 {
		t.Errorf("good inputs: exit %d: %s", code, stderr)
	}
}

// Zero, negative and non-finite flags are refused by every command that
// takes them, naming the flag; none is read as "the default".
func TestBadFlagsRefused(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"--batch", "0"}, "--batch must be a positive"},
		{[]string{"--batch=-2"}, "--batch must be a positive"},
		{[]string{"--batch", "1.5"}, "--batch must be a positive"},
		{[]string{"--seq", "0"}, "--seq must be positive, got 0"},
		{[]string{"--seq=-4"}, "--seq must be positive, got -4"},
		{[]string{"--lora-rank", "0"}, "--lora-rank must be positive, got 0"},
		{[]string{"--lora-rank=-1"}, "--lora-rank must be positive"},
	}
	commands := map[string][]string{
		"compile": {"compile", "tiny"},
		"run":     {"run", "--train", "--out", t.TempDir()},
		"eval":    {"eval", "tiny", "--inputs", "in", "--out", "out"},
		"bench":   {"bench", "--device", "sim"},
	}
	for cmd, base := range commands {
		for _, c := range cases {
			args := append(append([]string(nil), base...), c.args...)
			code, _, stderr := magc(t, args...)
			if code != 1 || !strings.Contains(stderr, c.msg) {
				t.Errorf("%s %v: exit %d, %q", cmd, c.args, code, stderr)
			}
		}
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"compile", "tiny", "--arena", "0"}, "--arena must be a positive size"},
		{[]string{"compile", "tiny", "--arena", "NaNGB"}, "--arena must be a positive size"},
		{[]string{"compile", "tiny", "--arena", "1e400GB"}, "--arena must be a positive size"},
		{[]string{"compile", "tiny", "--max-buffer", "0B"}, "--max-buffer must be a positive size"},
		{[]string{"run", "--lr", "0"}, "--lr must be a positive finite number, got 0"},
		{[]string{"run", "--lr=-1e-3"}, "--lr must be a positive finite number"},
		{[]string{"run", "--lr", "NaN"}, "--lr must be a positive finite number, got NaN"},
		{[]string{"run", "--lr", "Inf"}, "--lr must be a positive finite number, got +Inf"},
		{[]string{"run", "--min-lr=-1"}, "--min-lr must be a finite number, 0 or more"},
		{[]string{"run", "--min-lr", "nan"}, "--min-lr must be a finite number"},
		{[]string{"run", "--eval-batches", "0"}, "--eval-batches must be positive, got 0"},
		{[]string{"run", "--steps", "0"}, "--steps must be positive"},
		{[]string{"run", "--warmup=-1"}, "--warmup must be 0 or more"},
		{[]string{"run", "--save-every=-1"}, "--save-every must be 0 or more"},
		{[]string{"run", "--batch", "max"}, "--batch max is for magc compile and bench"},
	} {
		code, _, stderr := magc(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, %q (want %q)", c.args, code, stderr, c.msg)
		}
	}
	// --batch max that reaches its search cap says so.
	code, _, stderr := magc(t, "compile", "tiny", "--batch", "max")
	if code != 0 || !strings.Contains(stderr, "batch 16384 fits") || !strings.Contains(stderr, "the search stops there") {
		t.Errorf("--batch max on tiny: exit %d, %q", code, stderr)
	}
}

// TestMain lets a test run magc in a child process (for signals).
func TestMain(m *testing.M) {
	if args := os.Getenv("MAGC_TEST_CHILD"); args != "" {
		os.Exit(run(strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// SIGINT during training saves the step done, writes summary.json and
// loss.png for the steps done, and says so.
func TestInterruptSaves(t *testing.T) {
	out := t.TempDir()
	args := []string{"run", "--train", "--steps", "100000", "--save-every", "1", "--eval-every", "0", "--eval-batches", "1", "--out", out, "--quiet", "--device", "ref"}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAGC_TEST_CHILD="+strings.Join(args, "\x1f"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	for i := 0; i < 600; i++ {
		if _, err := os.Stat(ckpt); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	var s train.Summary
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err == nil {
		err = json.Unmarshal(raw, &s)
	}
	if err != nil || !s.Interrupted || s.Steps < 1 || len(s.Losses) != s.Steps {
		t.Fatalf("summary.json: %+v, %v\n%s", s, err, stderr.String())
	}
	p, err := train.ReadProgress(ckpt)
	if err != nil || p.Step != s.Steps {
		t.Fatalf("checkpoint at %+v (%v), summary at step %d", p, err, s.Steps)
	}
	if _, err := os.Stat(filepath.Join(out, "loss.png")); err != nil {
		t.Error(err)
	}
	if msg := stderr.String(); !strings.Contains(msg, fmt.Sprintf("interrupted: stopped after step %d of 100000, saved", s.Steps)) || !strings.Contains(msg, "--resume "+ckpt) {
		t.Errorf("stderr: %s", msg)
	}
}

// Lost work: a fresh run into an --out holding a checkpoint is refused
// unless --force; evaluating a checkpoint takes its model and data from it;
// non-finite --base weights and eval --params are refused by name.
func TestCheckpointsKeptAndUsed(t *testing.T) {
	out := t.TempDir()
	base := []string{"run", "--train", "--steps", "2", "--eval-every", "0", "--eval-batches", "1", "--quiet", "--out", out, "--data", "induction-heads"}
	if code, _, stderr := magc(t, base...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	before, _ := os.ReadFile(ckpt)
	code, _, stderr := magc(t, base...)
	if code != 1 || !strings.Contains(stderr, "holds a checkpoint of tiny at step 2 from another run") || !strings.Contains(stderr, "--force") {
		t.Errorf("second fresh run: exit %d, %s", code, stderr)
	}
	if after, _ := os.ReadFile(ckpt); !bytes.Equal(before, after) {
		t.Error("the refused run changed the checkpoint")
	}
	if code, _, stderr := magc(t, append(base, "--force")...); code != 0 {
		t.Errorf("--force: exit %d, %s", code, stderr)
	}
	// Evaluating it: induction heads (from the checkpoint), not the default task.
	code, stdout, stderr := magc(t, "run", "--resume", ckpt, "--eval-batches", "1")
	if code != 0 || !strings.Contains(stdout, "induction heads") {
		t.Errorf("evaluating the checkpoint: exit %d, %s %s", code, stdout, stderr)
	}
	// Resuming for more steps carries the loss history.
	if code, _, stderr := magc(t, "run", "--train", "--resume", ckpt, "--steps", "3", "--eval-every", "0", "--eval-batches", "1", "--quiet", "--out", out); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	var s train.Summary
	raw, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if json.Unmarshal(raw, &s); len(s.Losses) != 3 || s.ResumedFrom != 2 {
		t.Errorf("summary after resuming: %+v", s)
	}

	// NaN in --base and eval --params.
	nan := filepath.Join(t.TempDir(), "nan.safetensors")
	w := make([]float32, 16*64)
	w[70] = float32(math.NaN())
	st, _ := safetensors.FromFloat32("F32", []int{16, 64}, w)
	safetensors.WriteFile(nan, map[string]safetensors.Tensor{"embed": st}, nil)
	code, _, stderr = magc(t, "run", "--train", "--base", nan, "--out", t.TempDir(), "--steps", "1", "--quiet")
	if code != 1 || !strings.Contains(stderr, "embed: element 70 is NaN") {
		t.Errorf("--base with NaN: exit %d, %s", code, stderr)
	}
	in := writeInputs(t, t.TempDir(), "in", 0, 1, 0, 1)
	code, _, stderr = magc(t, "eval", "tiny", "--inputs", in, "--out", filepath.Join(t.TempDir(), "o"), "--params", nan)
	if code != 1 || !strings.Contains(stderr, "embed: element 70 is NaN") {
		t.Errorf("eval --params with NaN: exit %d, %s", code, stderr)
	}
}

// Work too large for the machine is refused before anything is allocated,
// and devices or endless files are refused before they are read.
func TestRunawayCostRefused(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.graph")
	os.WriteFile(huge, []byte("model huge\ninput tokens: i32[2, 4]\nparam embed: f32[1000000, 1000000] = normal(std = 0.02)\noutput y = gather(embed, tokens)\n"), 0o644)
	in := filepath.Join(dir, "in.safetensors")
	tt, _ := safetensors.FromInt32([]int{2, 4}, make([]int32, 8))
	safetensors.WriteFile(in, map[string]safetensors.Tensor{"tokens": tt}, nil)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--mode", "qlora", "--lora-rank", "1099511627776", "--device", "ref", "--out", dir}, "needs about"},
		{[]string{"run", "--train", "--mode", "qlora", "--lora-rank", "1099511627776", "--device", "ref", "--out", dir}, "more than this machine's"},
		{[]string{"eval", huge, "--inputs", in, "--out", filepath.Join(dir, "o")}, "evaluating huge needs about 8000"},
		{[]string{"compile", "/dev/zero"}, "/dev/zero is not a regular file"},
		{[]string{"run", "--resume", "/dev/zero"}, "/dev/zero: not a regular file"},
		{[]string{"eval", "tiny", "--inputs", "/dev/zero", "--out", filepath.Join(dir, "o")}, "not a regular file"},
		{[]string{"run", "--train", "--model", "tinytext", "--data", "/dev/zero", "--out", t.TempDir()}, "/dev/zero is not a regular file"},
	} {
		start := time.Now()
		code, _, stderr := magc(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.msg) || time.Since(start) > 20*time.Second {
			t.Errorf("%v: exit %d after %v, %q (want %q)", c.args, code, time.Since(start), stderr, c.msg)
		}
	}
	if err := checkHostMemory("x", 10<<30, 8<<30); err == nil || !strings.Contains(err.Error(), "x needs about 10.737 GB of memory, more than this machine's 8.590 GB") {
		t.Errorf("checkHostMemory: %v", err)
	}
	if err := checkHostMemory("x", 10<<30, 0); err != nil {
		t.Errorf("unknown RAM refuses: %v", err)
	}
}

// Messages a user meets: a typo in a task lists the tasks, a checkpoint
// given as --base points to --resume, write errors name the user's path
// and not a temp file, and --help lists the built-in models.
func TestClearCommandMessages(t *testing.T) {
	code, _, stderr := magc(t, "run", "--train", "--data", "selective-copyin", "--out", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "tasks: selective-copying, induction-heads") || !strings.Contains(stderr, "did you mean selective-copying?") {
		t.Errorf("task typo: exit %d, %s", code, stderr)
	}
	out := t.TempDir()
	if code, _, stderr := magc(t, "run", "--train", "--steps", "1", "--eval-batches", "1", "--quiet", "--out", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	code, _, stderr = magc(t, "run", "--train", "--base", ckpt, "--out", t.TempDir(), "--quiet")
	if code != 1 || !strings.Contains(stderr, "is a training checkpoint (tiny at step 1)") || !strings.Contains(stderr, "--resume "+ckpt) {
		t.Errorf("checkpoint as --base: exit %d, %s", code, stderr)
	}
	// eval --params takes a checkpoint's weights (its moments are no parameters).
	in := writeInputs(t, t.TempDir(), "in", 0, 1, 0, 1)
	if code, _, stderr := magc(t, "eval", "tiny", "--inputs", in, "--out", filepath.Join(t.TempDir(), "o"), "--params", ckpt); code != 0 {
		t.Errorf("eval --params checkpoint: exit %d, %s", code, stderr)
	}
	// A failed write names the file asked for, not a temp file beside it
	// (the parent here is a file, which no permission can get around).
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	target := filepath.Join(notDir, "o.safetensors")
	code, _, stderr = magc(t, "eval", "tiny", "--inputs", in, "--out", target)
	if code != 1 || !strings.Contains(stderr, "writing "+target+": not a directory") || strings.Contains(stderr, ".tmp") {
		t.Errorf("--out under a file: exit %d, %s", code, stderr)
	}
	code, _, stderr = magc(t, "compile", "tiny", "--report", filepath.Join(notDir, "r.json"))
	if code != 1 || !strings.Contains(stderr, "r.json: not a directory") || strings.Contains(stderr, ".tmp") {
		t.Errorf("--report under a file: exit %d, %s", code, stderr)
	}
	code, stdout, _ := magc(t, "--help")
	if code != 0 || !strings.Contains(stdout, "tinytext") {
		t.Errorf("--help does not list the built-in models:\n%s", stdout)
	}
}

// eval --f64 writes the reference interpreter's outputs at its own
// precision.
func TestEvalF64(t *testing.T) {
	dir := t.TempDir()
	in := writeInputs(t, dir, "in", 0, 1, 0, 1)
	out := filepath.Join(dir, "o.safetensors")
	if code, _, stderr := magc(t, "eval", "tiny", "--inputs", in, "--out", out, "--f64"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f, err := safetensors.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors["loss"].DType != "F64" || f.Tensors["logits"].DType != "F64" {
		t.Errorf("dtypes: loss %s, logits %s", f.Tensors["loss"].DType, f.Tensors["logits"].DType)
	}
	v, _ := f.Tensors["logits"].Float64s()
	exact := 0
	for _, x := range v {
		if float64(float32(x)) == x {
			exact++
		}
	}
	if exact == len(v) {
		t.Error("every F64 logit is an f32 value: not the interpreter's precision")
	}
}

// Every --data file the README's workflow names exists in the repository
// and loads as text for the model it trains.
func TestReadmeDataFilesExist(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(readme), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[0] != "magc" || f[i] != "--data" || strings.HasPrefix(f[i+1], "/") {
				continue
			}
			n++
			if _, err := data.LoadText(filepath.Join("../..", f[i+1]), 1, 4, 32); err != nil {
				t.Errorf("README: %s: %v", line, err)
			}
		}
	}
	if n == 0 {
		t.Error("the README's workflow names no --data file")
	}
}

// A model too large for the machine is refused up front, naming the need,
// before any weight is initialised (issue 13 item 10: scm3b on the sim once
// worked two minutes at 9 GB before failing). Played on a 16 GB machine so
// the test means the same everywhere.
func TestRunRefusesModelLargerThanMachine(t *testing.T) {
	defer func(f func() int64) { physicalMemory = f }(physicalMemory)
	physicalMemory = func() int64 { return 16 << 30 }
	out := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	code, _, stderr := magc(t, "run", "--train", "--model", "scm3b", "--device", "sim", "--steps", "1", "--out", out)
	if code != 1 || !strings.Contains(stderr, "scm3b's weights and arenas on sim needs about") ||
		!strings.Contains(stderr, "more than this machine's 17.180 GB") {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("refused after %v: the estimate should come before any work", d)
	}
	if _, err := os.Stat(filepath.Join(out, "checkpoint.safetensors")); err == nil {
		t.Error("a refused run wrote a checkpoint")
	}
	// On the reference interpreter, which keeps every value of the step.
	code, _, stderr = magc(t, "run", "--train", "--model", "scm3b", "--device", "ref", "--steps", "1", "--out", out)
	if code != 1 || !strings.Contains(stderr, "the reference interpreter's step of scm3b needs about") {
		t.Fatalf("scm3b on ref: exit %d, %q", code, stderr)
	}
}

// A --seq too long for the arena is refused by a size estimate before the
// compile (which took a minute at phase1 --seq 1000000 before the memory plan
// refused it), on compile and on run; the models as shipped pass the estimate.
func TestLongSeqRefusedBeforeCompile(t *testing.T) {
	start := time.Now()
	code, _, stderr := magc(t, "compile", "phase1", "--seq", "1000000")
	if code != 1 || !strings.Contains(stderr, "the grouped_matmul at blocks.graph:") ||
		!strings.Contains(stderr, "f32[2000000,2048], 16.384 GB, larger than an arena segment (8.590 GB, --max-buffer)") {
		t.Fatalf("compile: exit %d, %q", code, stderr)
	}
	code, _, stderr = magc(t, "run", "--model", "phase1", "--seq", "1000000", "--device", "sim", "--out", filepath.Join(t.TempDir(), "o"))
	if code != 1 || !strings.Contains(stderr, "larger than an arena segment") {
		t.Fatalf("run: exit %d, %q", code, stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("refusals took %v: the estimate should come before the compile", d)
	}
	for _, m := range []string{"tiny", "phase1", "phase2", "phase3", "scm3b"} {
		g, err := loadModel(m, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkValueSizes(g, 8<<30); err != nil {
			t.Errorf("%s as shipped: %v", m, err)
		}
	}
}
