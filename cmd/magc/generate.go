package main

import (
	"cmp"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/scm-magellano/magc/gen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/train"
)

type generateCmd struct {
	deviceFlag
	Model       string  `required:"" help:"Model file or built-in name (${models})."`
	Checkpoint  string  `help:"A training checkpoint (magc run --train's checkpoint.safetensors)." placeholder:"FILE"`
	Weights     string  `help:"Weights named as the model's parameters (magc import's weights.safetensors)." placeholder:"FILE"`
	Base        string  `help:"The base weights a QLoRA checkpoint was trained from (the same as --weights)." placeholder:"FILE"`
	Prompt      *string `help:"The prompt text, tokenised with the model's tokenizer (tokenizer.json beside an imported model, else GPT-2 BPE)."`
	Tokens      string  `help:"The prompt as token ids, comma- or space-separated (instead of --prompt)." placeholder:"IDS"`
	MaxTokens   int     `name:"max-tokens" default:"64" help:"Tokens to generate at most."`
	Temperature float64 `default:"0" help:"Sampling temperature; 0 is greedy."`
	TopK        int     `name:"top-k" default:"0" help:"Sample among the k likeliest tokens (0: all)."`
	TopP        float64 `name:"top-p" default:"0" help:"Sample among the likeliest tokens whose probability reaches p (0: all)."`
	Seed        uint64  `default:"0" help:"Seed for sampling (and for initialising parameters no file gives)."`
	Mode        string  `enum:"full,qlora," default:"" help:"Compile the model in this mode (default: the checkpoint's, else full)."`
	IgnoreEOS   bool    `name:"ignore-eos" help:"Keep generating after the end-of-text token."`
	StepPrefill bool    `name:"step-prefill" help:"Feed the prompt through the decode step token by token instead of the sequence prefill."`
	CompileOnly bool    `name:"compile-only" help:"Compile the decode step (Metal) and print what a step costs (with --report, as JSON); generate nothing."`
	Report      string  `help:"Write the decode step's report (launches, bytes per token, the M4 prediction) to this JSON file." placeholder:"FILE"`
}

// compileOnly compiles the step for Metal without a device and reports it.
func (c *generateCmd) compileOnly(e *env, g *ir.Graph, cfg passes.Config) error {
	prog, err := gen.Plan(g, cfg, "msl")
	if err != nil {
		return err
	}
	r := prog.Report()
	fmt.Fprintf(e.stdout, "%s decode step (%s, batch %d): %d kernels, %d launches, %s of global memory traffic per token\n",
		r.Model, r.Mode, r.Batch, r.Kernels, r.Launches, gigabytes(r.BytesPerToken))
	fmt.Fprintf(e.stdout, "  weights %s, states %s, arena %s\n", gigabytes(r.WeightBytes), gigabytes(r.StateBytes), gigabytes(r.ArenaBytes))
	fmt.Fprintf(e.stdout, "  predicted on an M4 (roofline, not measured): %.2f ms a step, %.1f tokens/s; bandwidth bound alone (%.0f GB/s): %.1f tokens/s\n",
		r.PredictedM4StepMS, r.PredictedM4TokensPS, r.PredictionBandwidth/1e9, r.BandwidthM4TokensPS)
	if c.Report != "" {
		return train.WriteJSON(c.Report, r)
	}
	return nil
}

func (c *generateCmd) Run(e *env) error {
	if c.CompileOnly {
		g, err := loadModel(c.Model, "1", 1)
		if err != nil {
			return err
		}
		return c.compileOnly(e, g, passes.Config{Mode: c.Mode})
	}
	if c.MaxTokens < 1 {
		return fmt.Errorf("--max-tokens must be positive, got %d", c.MaxTokens)
	}
	if (c.Prompt == nil) == (c.Tokens == "") {
		return fmt.Errorf("give the prompt as --prompt TEXT or as --tokens IDS (one of them)")
	}
	if c.Weights != "" && c.Base != "" && c.Weights != c.Base {
		return fmt.Errorf("--weights and --base name the same thing; give one")
	}
	weights := cmp.Or(c.Weights, c.Base)
	sampling := gen.Sampling{Temperature: c.Temperature, TopK: c.TopK, TopP: c.TopP, Seed: c.Seed}
	if err := sampling.Check(); err != nil {
		return err
	}
	g, err := loadModel(c.Model, "1", 1) // one sequence, one token a step
	if err != nil {
		return err
	}
	cfg := passes.Config{Mode: cmp.Or(c.Mode, "full")}
	if c.Checkpoint != "" {
		_, info, err := gen.ReadCheckpointInfo(c.Checkpoint)
		if err != nil {
			return err
		}
		if c.Mode != "" && c.Mode != info.Mode {
			return fmt.Errorf("%s was trained in %s mode, not %s", c.Checkpoint, info.Mode, c.Mode)
		}
		cfg.Mode, cfg.LoRARank = info.Mode, info.LoRARank
	}
	vocab := g.Consts["vocab"]
	path, _ := models.Resolve(c.Model)
	if _, err := os.Stat(path); err != nil {
		path = "" // built in: no tokenizer.json beside it
	}
	tok, stop, tokErr := gen.TokenizerFor(path, vocab)
	var prompt []int
	if c.Prompt != nil {
		if tokErr != nil {
			return tokErr
		}
		if prompt, err = tok.Encode(*c.Prompt); err != nil {
			return fmt.Errorf("tokenising the prompt: %v", err)
		}
	} else if prompt, err = parseTokens(c.Tokens, vocab); err != nil {
		return err
	}
	switch {
	case len(prompt) == 0:
		return fmt.Errorf("the prompt is empty")
	case len(prompt) > gen.MaxPromptTokens:
		return fmt.Errorf("the prompt has %d tokens; the limit is %d", len(prompt), gen.MaxPromptTokens)
	}
	if c.IgnoreEOS {
		stop = nil
	}
	dev, err := c.open()
	if err != nil {
		return err
	}
	if dev != nil {
		defer dev.Close()
	}
	prog, err := gen.Compile(g, cfg, dev)
	if err != nil {
		return err
	}
	if weights == "" && c.Checkpoint == "" {
		fmt.Fprintf(e.stderr, "warning: no --weights or --checkpoint: %s has its initial (random) weights\n", g.Name)
	}
	params, err := gen.LoadWeights(prog.Graph, c.Seed, weights, c.Checkpoint)
	if err != nil {
		return err
	}
	d, err := prog.Start(params)
	if err != nil {
		return err
	}
	prefill := "token by token"
	if !c.StepPrefill {
		// The prefill is compiled for this prompt's length.
		pg, err := loadModel(c.Model, "1", len(prompt))
		if err != nil {
			return err
		}
		pf, err := gen.CompilePrefill(pg, cfg, dev)
		if err != nil {
			return err
		}
		if err := d.UsePrefill(pf); err != nil {
			return err
		}
		prefill = "sequence"
		if n := pf.Launches(); n > 0 {
			prefill += fmt.Sprintf(", %d launches", n)
		}
	}
	stream := &gen.TextStream{W: e.stdout}
	emit := func(id int) error {
		if tok == nil {
			_, err := fmt.Fprintf(e.stdout, "%d ", id)
			return err
		}
		return stream.Write(tok.Bytes(id))
	}
	_, st, err := gen.Generate(d, prompt, gen.Options{Sampling: sampling, MaxTokens: c.MaxTokens, Stop: stop}, emit)
	if err != nil {
		return err
	}
	if err := stream.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	where := c.name()
	if n := prog.Launches(); n > 0 {
		where += fmt.Sprintf(", %d launches a step", n)
	}
	fmt.Fprintf(e.stderr, "prefill (%s): %d tokens, %.1f tokens/s; decode: %d tokens, %.1f tokens/s (%s)\n",
		prefill, st.PromptTokens, st.PrefillRate(), st.NewTokens, st.DecodeRate(), where)
	if c.Report != "" {
		type measured struct {
			*gen.Report
			Device          string  `json:"device"`
			PrefillTokensPS float64 `json:"measured_prefill_tokens_per_s"`
			DecodeTokensPS  float64 `json:"measured_decode_tokens_per_s"`
		}
		return train.WriteJSON(c.Report, measured{prog.Report(), c.name(), st.PrefillRate(), st.DecodeRate()})
	}
	return nil
}

// parseTokens reads comma- or space-separated token ids.
func parseTokens(s string, vocab int) ([]int, error) {
	var ids []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		id, err := strconv.Atoi(f)
		if err != nil || id < 0 || id >= vocab {
			return nil, fmt.Errorf("--tokens: %q is not a token id in [0, %d)", f, vocab)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
