// Command magc compiles .graph models into Metal (or CUDA) kernels and a
// static plan, trains them, and uses them.
//
//	magc compile models/scm3b.graph --report r.json
//	magc run --train
//	magc bench --model phase1 --device cuda --profile
//	magc import DIR -o OUT; magc generate --model M --prompt P; magc export --checkpoint F -o OUT
//	magc eval models/tiny.graph --inputs in.safetensors --out out.safetensors
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/pipeline"
)

// Exit codes.
const (
	exitOK       = 0
	exitUser     = 1 // bad input: a message says what and where
	exitInternal = 2 // a bug in magc
)

type cli struct {
	Compile  compileCmd  `cmd:"" help:"Parse, verify and compile a .graph model; print a summary."`
	Eval     evalCmd     `cmd:"" help:"Evaluate a model's outputs on given inputs, with the float64 reference interpreter or on a device."`
	Run      runCmd      `cmd:"" help:"Train a model (--train) or evaluate it, on the sim, Metal, CUDA or the reference interpreter."`
	Bench    benchCmd    `cmd:"" help:"Time a model's train step on a device: first step, steady-state tokens/s, and (--profile) each kernel against its roofline."`
	Import   importCmd   `cmd:"" help:"Import a Hugging Face MambaForCausalLM checkpoint as a model file and weights."`
	Generate generateCmd `cmd:"" help:"Generate text from a model with compiled recurrent decoding."`
	Export   exportCmd   `cmd:"" help:"Write a trained model in the Hugging Face MambaForCausalLM layout (LoRA merged), or its LoRA adapters alone."`
}

// env is what commands write to; tests substitute buffers.
type env struct {
	stdout, stderr io.Writer
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run executes one magc command line and returns its exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "magc: internal error: %v\n%s\nPlease report this with the command line and model file.\n", r, debug.Stack())
			code = exitInternal
		}
	}()
	var c cli
	exit := -1
	parser, err := kong.New(&c,
		kong.Name("magc"),
		kong.Description("magc compiles dataflow-graph models (Mamba, mixture of experts, QLoRA) into fused Metal (or CUDA) kernels, trains them, and generates with them. Built-in models: "+strings.Join(models.Names(), ", ")+"."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code }),
		kong.UsageOnError(),
		kong.Vars{"models": strings.Join(models.Names(), ", "), "phases": strings.Join(pipeline.Names(), ", ")},
	)
	if err != nil {
		fmt.Fprintf(stderr, "magc: internal error: %v\n", err)
		return exitInternal
	}
	ctx, err := parser.Parse(args)
	if exit >= 0 { // --help
		return exit
	}
	if err != nil {
		fmt.Fprintf(stderr, "magc: %v\n", err)
		return exitUser
	}
	if err := ctx.Run(&env{stdout: stdout, stderr: stderr}); err != nil {
		var ie *internalError
		if errors.As(err, &ie) {
			fmt.Fprintf(stderr, "magc: internal error: %v\n", ie.err)
			return exitInternal
		}
		fmt.Fprintf(stderr, "magc: %v\n", err)
		return exitUser
	}
	return exitOK
}

// internalError marks a failure that is magc's fault, not the input's.
type internalError struct{ err error }

func (e *internalError) Error() string { return e.err.Error() }

func internal(err error) error {
	if err == nil {
		return nil
	}
	return &internalError{err}
}
