package pipeline

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
)

func tinyUnit(t *testing.T, until string, dump func(string, *Unit)) *Unit {
	t.Helper()
	g, err := lang.Load("../models/tiny.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := Run(g, &Config{Passes: passes.Config{Train: true}, Verify: true, Dump: dump}, until)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Every phase runs in table order, is timed, and prints what it built.
func TestPhasesRunInOrderAndDump(t *testing.T) {
	var seen []string
	u := tinyUnit(t, "", func(phase string, u *Unit) {
		seen = append(seen, phase)
		var b bytes.Buffer
		if err := DumpPhase(&b, phase, u); err != nil || b.Len() == 0 {
			t.Errorf("dump of %s: %v, %d bytes", phase, err, b.Len())
		}
	})
	if !slices.Equal(seen, Names()) {
		t.Errorf("phases ran as %v, the table is %v", seen, Names())
	}
	if len(u.Times) != len(Phases) || u.Plan == nil || !strings.Contains(u.Source, "kernel void") {
		t.Errorf("unit incomplete: %d timings, plan %v", len(u.Times), u.Plan != nil)
	}
	if _, err := Run(u.Graph, &Config{}, "optimize"); err == nil || !strings.Contains(err.Error(), "no phase") {
		t.Errorf("unknown phase: %v", err)
	}
}

// Run stops after the phase asked for; the CUDA target renders CUDA.
func TestRunUntilAndTarget(t *testing.T) {
	u := tinyUnit(t, "fuse", nil)
	if u.Sched == nil || u.Prog != nil || len(u.Times) != 4 {
		t.Errorf("run until fuse: sched %v, prog %v, %d timings", u.Sched != nil, u.Prog != nil, len(u.Times))
	}
	g, _ := lang.Load("../models/tiny.graph", lang.Options{})
	c, err := Run(g, &Config{Target: "cuda"}, "render")
	if err != nil || !strings.Contains(c.Source, "__global__") {
		t.Fatalf("cuda render: %v", err)
	}
}

// The schedule check catches a group that reads what no earlier group wrote.
func TestVerifyFuseCatchesOrder(t *testing.T) {
	u := tinyUnit(t, "fuse", nil)
	if err := verifyFuse(u); err != nil {
		t.Fatalf("a good schedule: %v", err)
	}
	gs := u.Sched.Groups
	gs[0], gs[len(gs)-1] = gs[len(gs)-1], gs[0]
	if err := verifyFuse(u); err == nil || !strings.Contains(err.Error(), "before any group writes it") {
		t.Errorf("a reordered schedule: %v", err)
	}
}

// A model of more than MaxNodes ops is refused before any phase, naming the
// limit; one at the limit is not refused for its size.
func TestRunRefusesHugeModels(t *testing.T) {
	build := func(ops int) *ir.Graph {
		g, err := lang.Build("huge.graph", fmt.Appendf(nil, "model huge\ninput x: f32[4]\nh = x\nrepeat 2 { repeat %d { h = silu(h) } }\noutput y = h\n", ops/2), lang.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := build(MaxNodes)
	if len(g.Nodes) <= MaxNodes {
		t.Fatalf("%d nodes: the model is not over the limit", len(g.Nodes))
	}
	start := time.Now()
	_, err := Run(g, &Config{}, "")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the model has %d ops, more than the %d magc compiles", len(g.Nodes), MaxNodes)) {
		t.Fatalf("a model of %d ops: %v", len(g.Nodes), err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the refusal took %v", d)
	}
	g = build(MaxNodes - 4)
	if _, err := Run(g, &Config{}, "qlora"); len(g.Nodes) > MaxNodes || err != nil {
		t.Fatalf("a model of %d ops: %v", len(g.Nodes), err)
	}
}
