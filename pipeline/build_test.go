package pipeline_test

import (
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

func scm3b(b *testing.B, batch int) *ir.Graph {
	g, err := lang.Load("../models/scm3b.graph", lang.Options{Overrides: map[string]int{"batch": batch}})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkBuildScm3b compiles the flagship's QLoRA train step end to end
// (passes, fusion, lowering, MSL rendering, memory plan) at batch 1:
//
//	go test ./pipeline -run '^$' -bench BuildScm3b -count 5
func BenchmarkBuildScm3b(b *testing.B) {
	g := scm3b(b, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := pipeline.Compile(g, &pipeline.Config{Passes: passes.Config{Train: true}, Mem: passes.DefaultMemOptions()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanScm3b times the memory planner alone on the flagship's train
// step at batch 16 with every checkpoint region recomputed, the plan that
// fits the M4's 10.6 GB:
//
//	go test ./pipeline -run '^$' -bench PlanScm3b -count 5
func BenchmarkPlanScm3b(b *testing.B) {
	u, err := pipeline.Run(scm3b(b, 16), &pipeline.Config{Passes: passes.Config{Train: true, Remat: "layer"}, Mem: passes.DefaultMemOptions()}, "render")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var m *codegen.Memory
	for i := 0; i < b.N; i++ {
		if m, err = codegen.PlaceMemory(u.Graph, u.Prog, passes.DefaultMemOptions()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.Plan.ArenaBytes)/1e9, "arena_GB")
	b.ReportMetric(m.Plan.Ratio(), "arena/lower_bound")
}
