package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
)

// modelFlags select and adjust the model, shared by every command that loads one.
type modelFlags struct {
	Model    string `arg:"" help:"The .graph model file, or the name of a built-in model (tiny, phase1, phase2, phase3, scm3b)."`
	Mode     string `help:"Training mode: full (all weights trainable) or qlora (frozen NF4 + LoRA). Default: the model's train line." enum:"full,qlora," default:""`
	Batch    int    `help:"Override the model's batch size (its 'batch' constant)."`
	Seq      int    `help:"Override the context length (the model's 'context' constant)."`
	LoRARank int    `name:"lora-rank" help:"Override the LoRA rank r of qlora mode."`
}

// load parses the model file, applying overrides.
func (m *modelFlags) load() (*ir.Graph, error) {
	if m.LoRARank < 0 {
		return nil, fmt.Errorf("--lora-rank must be positive, got %d", m.LoRARank)
	}
	return loadModel(m.Model, m.Batch, m.Seq)
}

// loadModel parses a model (a file or a built-in name) with the batch and
// context constants overridden when positive.
func loadModel(model string, batch, seq int) (*ir.Graph, error) {
	if batch < 0 || seq < 0 {
		return nil, fmt.Errorf("--batch and --seq must be positive, got %d and %d", batch, seq)
	}
	over := map[string]int{}
	if batch > 0 {
		over["batch"] = batch
	}
	if seq > 0 {
		over["context"] = seq
	}
	path, read := models.Resolve(model)
	g, err := lang.Load(path, lang.Options{Overrides: over, ReadFile: read})
	if err != nil {
		return nil, err
	}
	for name := range over {
		if _, ok := g.Consts[name]; !ok {
			return nil, fmt.Errorf("%s has no %q constant to override", model, name)
		}
	}
	return g, nil
}

func (m *modelFlags) config() *passes.Config {
	return &passes.Config{Mode: m.Mode, LoRARank: m.LoRARank}
}

type compileCmd struct {
	modelFlags
	Report string `help:"Write report.json (stable keys for tools) to this file." placeholder:"FILE"`
	Dump   string `help:"Print the IR after this pass ('parse' for the graph as written)." placeholder:"PASS"`
}

// report is report.json: keys are stable, tools read them.
type report struct {
	Model               string             `json:"model"`
	Mode                string             `json:"mode"`
	LoRARank            int                `json:"lora_rank,omitempty"`
	ParamsTotal         int64              `json:"params_total"`
	ParamsTrainable     int64              `json:"params_trainable"`
	ParamsFrozenNF4     int64              `json:"params_frozen_nf4"`
	ParamsFrozen        int64              `json:"params_frozen"`
	LayersMamba         int                `json:"layers_mamba"`
	LayersMoE           int                `json:"layers_moe"`
	Vocab               int                `json:"vocab"`
	Context             int                `json:"context"`
	Batch               int                `json:"batch"`
	WeightBytes         int64              `json:"weight_bytes"`
	WeightBytesNF4      int64              `json:"weight_bytes_nf4"`
	TrainableStateBytes int64              `json:"trainable_state_bytes"`
	Nodes               int                `json:"nodes"`
	PassMS              map[string]float64 `json:"pass_ms"`
}

func (c *compileCmd) Run(e *env) error {
	start := time.Now()
	g, err := c.load()
	if err != nil {
		return err
	}
	parseMS := time.Since(start)
	cfg := c.config()
	if c.Dump != "" && c.Dump != "parse" && !slices.Contains(passes.Names(), c.Dump) {
		return fmt.Errorf("--dump %s: no such pass (passes: parse, %s)", c.Dump, strings.Join(passes.Names(), ", "))
	}
	if c.Dump == "parse" {
		return ir.Print(e.stdout, g)
	}
	cfg.Dump = func(pass string, g *ir.Graph) {
		if pass == c.Dump {
			ir.Print(e.stdout, g)
		}
	}
	out, times, err := passes.Run(g, cfg)
	if err != nil {
		return err
	}
	r := buildReport(g, out)
	r.PassMS["parse"] = ms(parseMS)
	for _, t := range times {
		r.PassMS[t.Pass] = ms(t.Dur)
	}
	if c.Dump == "" {
		printSummary(e.stdout, c.Model, r)
	}
	if c.Report != "" {
		return writeJSON(c.Report, r)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// buildReport describes the compiled graph; params_total counts the model's
// own weights (src), not the LoRA adapters added for training.
func buildReport(src, g *ir.Graph) *report {
	return &report{
		Model:               g.Name,
		Mode:                g.Train.Mode,
		LoRARank:            g.Train.Rank,
		ParamsTotal:         src.ParamCount(),
		ParamsTrainable:     g.ParamCount(ir.Trainable),
		ParamsFrozenNF4:     g.ParamCount(ir.FrozenNF4),
		ParamsFrozen:        g.ParamCount(ir.Frozen),
		LayersMamba:         g.LayerCount("mamba"),
		LayersMoE:           g.LayerCount("moe"),
		Vocab:               g.Consts["vocab"],
		Context:             g.Consts["context"],
		Batch:               g.Consts["batch"],
		WeightBytes:         g.ParamBytes(ir.Trainable, ir.Frozen, ir.FrozenNF4),
		WeightBytesNF4:      g.ParamBytes(ir.FrozenNF4),
		TrainableStateBytes: 3 * g.ParamBytes(ir.Trainable), // weights + AdamW m and v, f32
		Nodes:               len(g.Nodes),
		PassMS:              map[string]float64{},
	}
}

func printSummary(w io.Writer, file string, r *report) {
	mode := r.Mode
	if r.Mode == "qlora" {
		mode = fmt.Sprintf("qlora (LoRA r=%d)", r.LoRARank)
	}
	fmt.Fprintf(w, "%s (%s): %s mode\n", r.Model, file, mode)
	fmt.Fprintf(w, "  layers       %d mamba, %d moe\n", r.LayersMamba, r.LayersMoE)
	fmt.Fprintf(w, "  shape        vocab %d, context %d, batch %d\n", r.Vocab, r.Context, r.Batch)
	fmt.Fprintf(w, "  parameters   %s total\n", millions(r.ParamsTotal))
	fmt.Fprintf(w, "    trainable  %s\n", millions(r.ParamsTrainable))
	fmt.Fprintf(w, "    frozen NF4 %s\n", millions(r.ParamsFrozenNF4))
	fmt.Fprintf(w, "    frozen     %s\n", millions(r.ParamsFrozen))
	fmt.Fprintf(w, "  weights      %s (NF4 %s)\n", gigabytes(r.WeightBytes), gigabytes(r.WeightBytesNF4))
	fmt.Fprintf(w, "  trainable + AdamW state %s\n", gigabytes(r.TrainableStateBytes))
}

func millions(n int64) string { return fmt.Sprintf("%.2fM", float64(n)/1e6) }

func gigabytes(n int64) string {
	if n < 1e8 {
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.3f GB", float64(n)/1e9)
}

// writeJSON writes v indented, replacing path atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return internal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
