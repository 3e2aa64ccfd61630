package codegen_test

import (
	"sync"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/internal/kcheck"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

var (
	devOnce sync.Once
	dev     *sim.Device
)

func simDevice() *sim.Device {
	devOnce.Do(func() { dev = sim.New() })
	return dev
}

// devices are where kernels are checked: the sim, and every GPU present.
func devices(t testing.TB) []device.Device {
	t.Helper()
	ds, err := kcheck.Devices()
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// loadModel loads a model file at a small size and runs the graph passes.
func loadModel(t *testing.T, name string, cfg *passes.Config, over map[string]int) *ir.Graph {
	t.Helper()
	g, err := lang.Load("../models/"+name+".graph", lang.Options{Overrides: over})
	if err != nil {
		t.Fatal(err)
	}
	return model(t, g, cfg)
}

// model runs the graph passes on g, verifying after each.
func model(t *testing.T, g *ir.Graph, cfg *passes.Config) *ir.Graph {
	t.Helper()
	u, err := pipeline.Run(g, &pipeline.Config{Passes: *cfg, Verify: true}, "remat")
	if err != nil {
		t.Fatal(err)
	}
	return u.Graph
}

// reference evaluates g and returns every value; inputs not given get
// deterministic small integers.
func reference(t *testing.T, g *ir.Graph, given map[string]*ref.Tensor) map[*ir.Value]*ref.Tensor {
	t.Helper()
	params, err := ref.InitParams(g, 1)
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]*ref.Tensor{}
	for _, in := range g.Inputs {
		if tt, ok := given[in.Name]; ok {
			inputs[in.Name] = tt
			continue
		}
		tt := ref.New(in.Value.Type)
		for i := range tt.Data {
			tt.Data[i] = float64((i*7 + 3) % 16)
		}
		inputs[in.Name] = tt
	}
	res, err := ref.Eval(g, inputs, params)
	if err != nil {
		t.Fatal(err)
	}
	return res.Values
}

// checkOnSim compiles the groups of s that pick, runs each kernel on the sim
// and compares it with the reference.
func checkOnSim(t *testing.T, g *ir.Graph, s *passes.Schedule, pick func(*passes.Group) bool) int {
	t.Helper()
	return checkOnSimWith(t, g, s, pick, nil)
}

// checkOnSimWith is checkOnSim with some graph inputs given (expert
// offsets, say, which must be valid).
func checkOnSimWith(t *testing.T, g *ir.Graph, s *passes.Schedule, pick func(*passes.Group) bool, inputs map[string]*ref.Tensor) int {
	t.Helper()
	var groups []*passes.Group
	for _, grp := range s.Groups {
		if pick(grp) {
			groups = append(groups, grp)
		}
	}
	return len(compileAndCheck(t, g, &passes.Schedule{Groups: groups, Alias: s.Alias}, inputs).Dispatches)
}

// compileAndCheck compiles schedule s of g, runs every launch on each
// device and compares what it writes with the reference.
func compileAndCheck(t *testing.T, g *ir.Graph, s *passes.Schedule, inputs map[string]*ref.Tensor) *codegen.Program {
	t.Helper()
	prog, err := codegen.Compile(g, s)
	if err != nil {
		t.Fatal(err)
	}
	want := reference(t, g, inputs)
	for _, dev := range devices(t) {
		bad, err := kcheck.CheckProgram(dev, prog, want)
		if err != nil {
			t.Fatalf("%s: %v", dev.Name(), err)
		}
		for _, m := range bad {
			t.Errorf("%s: %v", dev.Name(), m)
		}
	}
	return prog
}

func TestPointwiseKernelsOnSim(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		g := loadModel(t, "tiny", &passes.Config{Mode: mode}, nil)
		for _, fuse := range []bool{false, true} {
			n := checkOnSim(t, g, passes.Fuse(g, fuse), func(grp *passes.Group) bool { return grp.Kind == "pointwise" })
			if n == 0 {
				t.Fatal("no pointwise kernels")
			}
		}
	}
}
