package lang

import (
	"fmt"
	"testing"
)

// layersSource is a model of n small dense layers (a parameter, a matmul,
// an activation and a residual each), the shape of a deep model's graph
// without its arithmetic cost.
func layersSource(n int) []byte {
	return fmt.Appendf(nil, `model deep
const d = 8
layer dense(h) {
    param w: f32[d, d] = normal(std = 0.02)
    return h + silu(linear(h, w))
}
input x: f32[4, d]
h = x
repeat %d { h = dense(h) }
output y = h
`, n)
}

// BenchmarkBuildLayers times graph building against layer count: it should
// grow linearly (the time per layer stays flat).
func BenchmarkBuildLayers(b *testing.B) {
	for _, n := range []int{1000, 4000, 16000, 100000} {
		src := layersSource(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Build("deep.graph", src, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
