package pipeline

import (
	"fmt"
	"testing"

	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/passes"
)

// BenchmarkCompileLayers times the whole train-step compile of a generated
// model of N small dense layers (four ops each), and reports each phase's
// share (ms) so a phase that stops scaling linearly shows. Every phase grows
// about linearly with N; MaxNodes bounds N at 37,500 such layers.
func BenchmarkCompileLayers(b *testing.B) {
	for _, n := range []int{1000, 2000, 4000, 8000, 16000} {
		src := fmt.Appendf(nil, `model deep
const d = 8
layer dense(h) {
    param w: f32[d, d] = normal(std = 0.02)
    return h + silu(linear(h, w))
}
input x: f32[4, d]
h = x
repeat %d { h = dense(h) }
output loss = mean(h * h)
`, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			phases := map[string]float64{}
			for b.Loop() {
				g, err := lang.Build("deep.graph", src, lang.Options{})
				if err != nil {
					b.Fatal(err)
				}
				u, err := Run(g, &Config{Passes: passes.Config{Mode: "full", Train: true}}, "")
				if err != nil {
					b.Fatal(err)
				}
				for _, t := range u.Times {
					phases[t.Phase] += float64(t.Dur.Milliseconds())
				}
			}
			for p, ms := range phases {
				b.ReportMetric(ms/float64(b.N), p+"-ms")
			}
		})
	}
}
