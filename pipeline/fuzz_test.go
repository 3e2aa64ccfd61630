package pipeline_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

// FuzzCompile takes every graph the language accepts through the whole
// pipeline (train step, remat, fusion, lowering, MSL, memory plan): any
// input must compile or fail with an error, never panic.
//
//	go test ./codegen -run '^$' -fuzz FuzzCompile -fuzztime 2m
func FuzzCompile(f *testing.F) {
	blocks, err := os.ReadFile("../models/blocks.graph")
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []string{"tiny"} {
		src, err := os.ReadFile("../models/" + m + ".graph")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src), true, "layer")
	}
	f.Add("input x: f32[3, 5]\nparam w: f32[4, 5] = normal(std = 1)\noutput loss = mean(square(linear(x, w)))\n", true, "auto")
	f.Add("input x: f32[2, 8]\nparam g: f32[8] = ones\noutput loss = sum(softmax(rmsnorm(x, g, eps = 1e-5)))\n", false, "none")
	f.Fuzz(func(t *testing.T, src string, train bool, remat string) {
		read := func(p string) ([]byte, error) {
			if strings.HasSuffix(p, "blocks.graph") {
				return blocks, nil
			}
			return nil, errors.New("no such file")
		}
		g, err := lang.Build("fuzz.graph", []byte(src), lang.Options{ReadFile: read})
		if err != nil || g.ParamCount() > 1<<20 {
			return // the language's own fuzz target covers errors; keep compiles small
		}
		if remat != "auto" && remat != "layer" {
			remat = "none"
		}
		_, _ = pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Train: train, Remat: remat}})
	})
}
