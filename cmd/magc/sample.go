package main

import (
	"fmt"
	"strconv"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/gen"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/train/data"
)

// Tokens of held-out text a training sample starts from, and tokens it adds.
const sampleFrom, sampleLen = 8, 8

// evalSampler gives training's periodic evaluation on text a short greedy
// sample: the first held-out tokens, continued with the current weights
// through the model's decode step on the training device. The step is
// compiled and placed at the first sample; later ones only copy weights.
func (c *runCmd) evalSampler(src *data.Text, dev device.Device) func(get func([]string) (map[string]*ref.Tensor, error)) (string, error) {
	var d *gen.Decoder
	tok := src.Tok
	return func(get func([]string) (map[string]*ref.Tensor, error)) (string, error) {
		if d == nil {
			g, err := loadModel(c.Model, "1", 1)
			if err != nil {
				return "", err
			}
			prog, err := gen.Compile(g, c.config(), dev)
			if err != nil {
				return "", err
			}
			w, err := get(prog.Weights())
			if err != nil {
				return "", err
			}
			if d, err = prog.Start(w); err != nil {
				return "", err
			}
			if tok == nil {
				if tok, err = data.GPT2(); err != nil {
					return "", err
				}
			}
		} else {
			w, err := get(d.Program().Weights())
			if err != nil {
				return "", err
			}
			if err := d.SetWeights(w); err != nil {
				return "", err
			}
		}
		prompt := make([]int, min(sampleFrom, len(src.Valid)))
		for i := range prompt {
			prompt[i] = int(src.Valid[i])
		}
		out, _, err := gen.Generate(d, prompt, gen.Options{MaxTokens: sampleLen}, nil)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s → %s", strconv.Quote(tok.Decode(prompt)), strconv.Quote(tok.Decode(out))), nil
	}
}
