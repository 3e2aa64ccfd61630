package golden

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

// clangPrelude declares for clang what nvcc's headers give kernels.cu.
const clangPrelude = "../codegen/cuda/testdata/clang_prelude.h"

// TestCUDAToPTX compiles every emitted CUDA module to PTX with clang, as CI
// can without a CUDA toolkit: the goldens (the patterns, tiny in both modes,
// scm3b in QLoRA) and phase1's full train step. Each kernel must come out
// as an entry point of its own name.
func TestCUDAToPTX(t *testing.T) {
	clang, err := exec.LookPath("clang++")
	if err != nil {
		t.Skip("clang++ is not installed")
	}
	files, err := filepath.Glob("cuda/*.cu")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CUDA goldens: %v", err)
	}
	g, err := lang.Load("../models/phase1.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := pipeline.Run(g, &pipeline.Config{Passes: passes.Config{Mode: "full", Train: true}, Target: "cuda"}, "render")
	if err != nil {
		t.Fatal(err)
	}
	src := u.Source
	dir := t.TempDir()
	phase1 := filepath.Join(dir, "phase1.cu")
	if err := os.WriteFile(phase1, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	files = append(files, phase1)

	// Two at a time: the largest modules take seconds each.
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := compilePTX(clang, f, filepath.Join(dir, filepath.Base(f)+".ptx")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

var kernelName = regexp.MustCompile(`(?m)^extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\($`)
var entryName = regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)

// compilePTX compiles one .cu file to PTX and checks its entry points.
func compilePTX(clang, src, out string) error {
	cmd := exec.Command(clang, "-x", "cuda", "-nocudainc", "-nocudalib", "--cuda-device-only",
		"--cuda-gpu-arch=sm_80", "-Xclang", "-target-feature", "-Xclang", "+ptx70",
		"-Werror", "-Wno-parentheses-equality", // the printer parenthesises every comparison
		"-I", "../codegen/cuda/testdata/include", "-include", clangPrelude, "-S", "-o", out, src)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", src, err, firstLines(string(msg), 40))
	}
	cu, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	ptx, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	var want, got []string
	for _, m := range kernelName.FindAllStringSubmatch(string(cu), -1) {
		want = append(want, m[1])
	}
	for _, m := range entryName.FindAllStringSubmatch(string(ptx), -1) {
		got = append(got, m[1])
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) == 0 || !slices.Equal(want, got) {
		return fmt.Errorf("%s: kernels %v, PTX entries %v", src, want, got)
	}
	return nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
