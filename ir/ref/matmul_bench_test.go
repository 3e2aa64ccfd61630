package ref

import (
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

// BenchmarkMatmul times the reference's dense products at sizes of a small
// model's projections and of phase1's vocabulary head.
func BenchmarkMatmul(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name   string
		a, w   []int
		ta, tb bool
	}{
		{"256x512x512", sh(256, 512), sh(512, 512), false, false},
		{"256x512x512_tb", sh(256, 512), sh(512, 512), false, true},
		{"wgrad_512x256x512_ta", sh(256, 512), sh(256, 512), true, false},
		{"head_256x256x8192_tb", sh(256, 256), sh(8192, 256), false, true},
	} {
		x, w := randT(rng, c.a, -1, 1), randT(rng, c.w, -1, 1)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := EvalOp(ir.OpMatmul, mm(c.ta, c.tb), x, w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	x := randT(rng, sh(512, 256), -1, 1)
	w := randT(rng, sh(8, 512, 256), -1, 1)
	dy := randT(rng, sh(512, 512), -1, 1)
	off, err := FromInts(sh(9), []int{0, 64, 128, 192, 256, 320, 384, 448, 512})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("grouped_8x64x256x512_tb", func(b *testing.B) {
		for b.Loop() {
			if _, err := EvalOp(ir.OpGroupedMM, ir.Attrs{"tb": true}, x, w, off); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("grouped_wgrad_8x512x64x256", func(b *testing.B) {
		for b.Loop() {
			if _, err := EvalOp(ir.OpGroupedMMW, nil, dy, x, off); err != nil {
				b.Fatal(err)
			}
		}
	})
}
