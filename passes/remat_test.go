package passes

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// sameResults fails unless both evaluations give bit-identical outputs and
// updates.
func sameResults(t *testing.T, what string, a *ir.Graph, ra *ref.Result, b *ir.Graph, rb *ref.Result) {
	t.Helper()
	vals := func(g *ir.Graph, r *ref.Result) map[string][]float64 {
		m := map[string][]float64{}
		for _, o := range g.Outputs {
			m["output "+o.Name] = r.Value(o.Value).Data
		}
		for _, u := range g.Updates {
			m["update "+u.Param] = r.Value(u.Value).Data
		}
		return m
	}
	va, vb := vals(a, ra), vals(b, rb)
	if len(va) != len(vb) {
		t.Fatalf("%s: %d results, want %d", what, len(vb), len(va))
	}
	for name, x := range va {
		y := vb[name]
		if len(x) != len(y) {
			t.Fatalf("%s: %s missing or resized", what, name)
		}
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s: %s[%d] = %.17g, want %.17g", what, name, i, y[i], x[i])
			}
		}
	}
}

// checkRemat checks a rematerialised graph against the graph before remat
// and the pass's report: the activations its backward actually reads weigh
// what Stats says, the added nodes cost Stats' FLOPs, no backward node reads
// a forward dequant, and, under "layer", the backward reads no value computed
// inside a region except the region's outputs.
func checkRemat(t *testing.T, base, out *ir.Graph, cfg *Config) {
	t.Helper()
	s := cfg.Stats
	if got := ActivationBytes(out); got != s.ActivationBytes {
		t.Errorf("%s: the backward reads %d bytes of activations, Stats says %d", cfg.Remat, got, s.ActivationBytes)
	}
	if got := FlopsPerStep(out) - FlopsPerStep(base); got != s.RecomputeFLOPs {
		t.Errorf("%s: recomputation adds %d FLOPs, Stats says %d", cfg.Remat, got, s.RecomputeFLOPs)
	}
	if ActivationBytes(base) != s.ActivationBytes+s.ActivationBytesSaved {
		t.Errorf("%s: saved %d bytes of %d, kept %d", cfg.Remat, s.ActivationBytesSaved, ActivationBytes(base), s.ActivationBytes)
	}
	p := newRematPlan(out)
	for _, n := range out.Nodes {
		for _, v := range n.Inputs {
			if !p.fwd[n.ID] && p.fwd[v.Node.ID] && v.Node.Op == ir.OpDequant {
				t.Errorf("%s: backward node %d (%s) reads the forward's dequantised weight", cfg.Remat, n.ID, n.Op)
			}
		}
	}
	if cfg.Remat != "layer" {
		return
	}
	outside := map[*ir.Value]bool{} // region values the forward reads outside the region
	for _, n := range out.Nodes {
		for _, v := range n.Inputs {
			if p.fwd[n.ID] && v.Node.Region != n.Region {
				outside[v] = true
			}
		}
	}
	for _, n := range out.Nodes {
		for _, v := range n.Inputs {
			if !p.fwd[n.ID] && p.fwd[v.Node.ID] && v.Node.Region != 0 && v.Node.Op != ir.OpParam && !outside[v] {
				t.Errorf("backward node %d (%s @%s) reads %v (%s), computed inside region %d", n.ID, n.Op, n.Scope, v, v.Node.Op, v.Node.Region)
			}
		}
	}
}

// TestRematTiny: the tiny model's train step, in both modes, gives
// bit-identical losses, gradient norm and updates with every policy.
func TestRematTiny(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			g := qloraTiny(t)
			g.Train.Mode = mode
			cfg := &Config{Train: true}
			base, err := QLoRA(g, cfg)
			if err == nil {
				base, err = TrainStep(base, cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			params, err := ref.InitParams(base, 11)
			if err != nil {
				t.Fatal(err)
			}
			for name, p := range params { // a nonzero LoRA B, so every path carries gradient
				if strings.HasSuffix(name, ".lora_b") {
					for i := range p.Data {
						p.Data[i] = float64(float32(0.01 * float64(i%7-3)))
					}
				}
			}
			feeds, params := withOptState(base, tokens(g, rand.New(rand.NewPCG(12, 13))), params, 1e-3, 1)
			want := eval(t, base, feeds, params)
			noneG, noneCfg := run(t, g, Config{Train: true})
			layer, layerCfg := run(t, g, Config{Train: true, Remat: "layer"})
			none := noneCfg.Stats.ActivationBytes
			budget := (none + layerCfg.Stats.ActivationBytes) / 2
			auto, autoCfg := run(t, g, Config{Train: true, Remat: "auto", MemoryBudget: budget})
			if mode == "full" && noneG.String() != base.String() {
				t.Error("remat none changed a full-mode train step")
			}
			for _, c := range []struct {
				g   *ir.Graph
				cfg *Config
			}{{noneG, noneCfg}, {layer, layerCfg}, {auto, autoCfg}} {
				checkRemat(t, base, c.g, c.cfg)
				sameResults(t, c.cfg.Remat, base, want, c.g, eval(t, c.g, feeds, params))
			}
			s, l := autoCfg.Stats, layerCfg.Stats
			if s.ActivationBytes > budget || s.RecomputeFLOPs >= l.RecomputeFLOPs || l.ActivationBytes >= none {
				t.Errorf("none keeps %d bytes; layer keeps %d for %d FLOPs; auto (budget %d) keeps %d for %d FLOPs",
					none, l.ActivationBytes, l.RecomputeFLOPs, budget, s.ActivationBytes, s.RecomputeFLOPs)
			}
			t.Logf("none keeps %d bytes; layer keeps %d for %d FLOPs; auto (budget %d) keeps %d for %d FLOPs",
				none, l.ActivationBytes, l.RecomputeFLOPs, budget, s.ActivationBytes, s.RecomputeFLOPs)
		})
	}
}

// TestRematPhase1: phase1's 11 checkpointed layers at its real widths
// (d_model 512, 8 experts of d_ff 1024), context 8, two scan chunks. The
// vocabulary is cut to 512: the tied embedding and head sit outside every
// region, and at 50257 the reference's head matmuls alone take seconds. All
// gradients and the loss must be bit-identical across policies.
func TestRematPhase1(t *testing.T) {
	if testing.Short() {
		t.Skip("phase1 takes several seconds in the reference interpreter")
	}
	t.Parallel()
	g := withTotalLoss(t, loadModel(t, "phase1", map[string]int{"context": 8, "batch": 1, "scan_chunk": 4, "vocab": 512}))
	base := gradGraph(t, g)
	params := quickParams(t, base, 1)
	feeds := tokens(g, rand.New(rand.NewPCG(2, 3)))
	layerCfg := &Config{Remat: "layer"}
	layer, err := Remat(base, layerCfg)
	if err != nil {
		t.Fatal(err)
	}
	autoCfg := &Config{Remat: "auto", MemoryBudget: (ActivationBytes(base) + layerCfg.Stats.ActivationBytes) / 2}
	auto, err := Remat(base, autoCfg)
	if err != nil {
		t.Fatal(err)
	}
	want := eval(t, base, feeds, params)
	for _, c := range []struct {
		g   *ir.Graph
		cfg *Config
	}{{layer, layerCfg}, {auto, autoCfg}} {
		if err := ir.Verify(c.g); err != nil {
			t.Fatal(err)
		}
		checkRemat(t, base, c.g, c.cfg)
		sameResults(t, c.cfg.Remat, base, want, c.g, eval(t, c.g, feeds, params))
		t.Logf("%s: %+v", c.cfg.Remat, c.cfg.Stats)
	}
}

func TestRematErrors(t *testing.T) {
	g := loadModel(t, "tiny", tinyOver)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Train: true, Remat: "lazy"}, "unknown remat policy"},
		{Config{Train: true, Remat: "auto"}, "positive memory budget"},
	} {
		if _, err := runPasses(g, &c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
	// A budget nothing can meet makes auto recompute all it can: at most
	// what layer keeps; the planner then judges the whole arena.
	least := Config{Train: true, Remat: "auto", MemoryBudget: 1}
	layer := Config{Train: true, Remat: "layer"}
	if _, err := runPasses(g, &least); err != nil {
		t.Fatal(err)
	}
	if _, err := runPasses(g, &layer); err != nil {
		t.Fatal(err)
	}
	if least.Stats.ActivationBytes > layer.Stats.ActivationBytes {
		t.Errorf("auto at its least keeps %d bytes, more than layer's %d", least.Stats.ActivationBytes, layer.Stats.ActivationBytes)
	}
}
