package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// trainerMain uses the package that --emit-go writes as a program outside
// magc would: it sets the weights, trains two steps on the sim and prints
// the losses and whether the embedding moved.
const trainerMain = `package main

import (
	"fmt"
	"os"
	"strings"

	"example.com/trainer/tiny"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir"
)

func main() {
	m, err := tiny.New(sim.New())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := m.Runner()
	for _, name := range r.Params() {
		b, _ := r.Buffer(name)
		if b.Role != ir.Trainable {
			continue // AdamW moments start at zero
		}
		v := make([]float32, b.Bytes/4)
		for i := range v {
			v[i] = 0.02 * float32((i*7)%13-6) / 6
			if strings.HasSuffix(name, "norm") || name == tiny.ParamNormF {
				v[i] = 1
			}
		}
		if err := m.SetParam(name, v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	before, _ := m.Param(tiny.ParamEmbed)
	b, _ := r.Buffer(tiny.InputTokens)
	tokens, targets := make([]int32, b.Bytes/4), make([]int32, b.Bytes/4)
	for i := range tokens {
		tokens[i], targets[i] = int32(i%16), int32((i+1)%16)
	}
	for step := 1; step <= 2; step++ {
		out, err := m.Step(tokens, targets, 1e-2, step)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("loss", out.Loss)
	}
	after, err := m.Param(tiny.ParamEmbed)
	fmt.Println("embed moved", err == nil && after[0] != before[0])
}
`

// The package that `magc compile --emit-go` writes builds in a module of its
// own and trains on the sim with nothing of magc but the plan runner and a
// device: it links no compiler package.
func TestEmitGoPackageRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a program")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if code, _, stderr := magc(t, "compile", "../../models/tiny.graph", "--emit-go", filepath.Join(dir, "tiny")); code != 0 {
		t.Fatalf("magc compile --emit-go: exit %d: %s", code, stderr)
	}
	for _, f := range []string{"tiny.go", "kernels.metal", "plan.json"} {
		if _, err := os.Stat(filepath.Join(dir, "tiny", f)); err != nil {
			t.Fatal(err)
		}
	}
	goMod := "module example.com/trainer\n\ngo 1.26\n\nrequire github.com/scm-magellano/magc v0.0.0\n\n" +
		"replace github.com/scm-magellano/magc => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"go.mod": goMod, "go.sum": string(sum), "main.go": trainerMain} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Everything the program needs is in the module cache: no network.
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	list := exec.Command(goTool, "list", "-deps", "./tiny")
	list.Dir, list.Env = dir, env
	deps, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(deps)) {
		for _, compiler := range []string{"magc/passes", "magc/codegen", "magc/pipeline", "magc/ir/lang", "magc/ir/ref", "magc/train", "jennifer", "gonum.org/v1/plot"} {
			if strings.Contains(dep, compiler) {
				t.Errorf("the emitted package links %s", dep)
			}
		}
	}
	t.Logf("go list -deps ./tiny (magc's):\n%s", grepMagc(string(deps)))
	cmd := exec.Command(goTool, "run", ".")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	var losses []float64
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "loss "); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
				t.Errorf("loss %q is not a finite positive number", v)
			}
			losses = append(losses, x)
		}
	}
	if len(losses) != 2 || !strings.Contains(string(out), "embed moved true") {
		t.Errorf("the program printed:\n%s\nwant two losses and a moved embedding", out)
	}
}

func grepMagc(deps string) string {
	var out []string
	for _, d := range strings.Fields(deps) {
		if strings.Contains(d, "scm-magellano/magc") {
			out = append(out, d)
		}
	}
	return strings.Join(out, "\n")
}
