package passes

import (
	"cmp"
	"fmt"
	"math"

	"github.com/scm-magellano/magc/ir"
)

// QLoRA turns a model built for full training into its QLoRA form (Dettmers
// et al. 2023): every weight marked lora becomes a frozen NF4 tensor read
// through dequant, plus a trainable low-rank update (α/r)·B(A x) at each
// linear use; every other parameter is frozen. With mode full it is the identity.
func QLoRA(g *ir.Graph, cfg *Config) (*ir.Graph, error) {
	if cfg.mode(g) != "qlora" {
		return g, nil
	}
	// A model written for full training falls back to the QLoRA recipe (r 64, α 16).
	rank, alpha := cmp.Or(cfg.LoRARank, g.Train.Rank, 64), cmp.Or(g.Train.Alpha, 16)
	scale := alpha / float64(rank)
	type adapter struct{ a, b *ir.Value }
	adapters := map[*ir.Value]adapter{} // dequantised weight → its LoRA factors
	params := map[*ir.Value]*ir.Param{}
	for _, p := range g.Params {
		params[p.Value] = p
	}
	kaiming := ir.Init{Kind: "kaiming_uniform", Args: map[string]float64{"a": math.Sqrt(5), "gain": 1}}
	out, err := ir.Rewrite(g, func(b *ir.Builder, n *ir.Node, in []*ir.Value) []*ir.Value {
		if p := params[n.Out()]; p != nil && n.Op == ir.OpParam {
			q := *p
			if !p.LoRA {
				if q.Role == ir.Trainable {
					q.Role = ir.Frozen
				}
				return []*ir.Value{b.Param(q, n.Out().Type)}
			}
			s := n.Out().Type.Shape
			if len(s) < 2 {
				b.Fail(fmt.Errorf("lora weight %s must be a matrix or a stack of matrices, got %v", p.Name, s))
				return nil
			}
			q.Role = ir.FrozenNF4
			w := b.Param(q, ir.Type{DType: ir.NF4, Shape: s})
			lead := s[:len(s)-2]
			nOut, kIn := s[len(s)-2], s[len(s)-1]
			aShape := append(lead.Clone(), rank, kIn)
			bShape := append(lead.Clone(), nOut, rank)
			fa := b.Param(ir.Param{Name: p.Name + ".lora_a", Role: ir.Trainable, Init: kaiming}, ir.Type{DType: ir.F32, Shape: aShape})
			fb := b.Param(ir.Param{Name: p.Name + ".lora_b", Role: ir.Trainable, Init: ir.Init{Kind: "zeros"}}, ir.Type{DType: ir.F32, Shape: bShape})
			deq := b.Unary(ir.OpDequant, w)
			adapters[deq] = adapter{fa, fb}
			return []*ir.Value{deq}
		}
		for i, v := range in {
			ad, ok := adapters[v]
			if !ok {
				continue
			}
			switch {
			// The low-rank path comes first: x·A is the first reader of x, so
			// a kernel computing x can be x·A's (see passes.lhsPrologue).
			case i == 1 && n.Op == ir.OpMatmul && n.Attrs.Bool("tb") && !n.Attrs.Bool("ta"):
				low := b.Matmul(b.Matmul(in[0], ad.a, false, true), ad.b, false, true)
				base := b.Apply(n.Op, n.Attrs, in...)[0]
				return []*ir.Value{b.Add(base, b.Scale(low, scale))}
			case i == 1 && n.Op == ir.OpGroupedMM && n.Attrs.Bool("tb"):
				attrs := ir.Attrs{"tb": true}
				low := b.Op(ir.OpGroupedMM, attrs, b.Op(ir.OpGroupedMM, attrs, in[0], ad.a, in[2]), ad.b, in[2])
				base := b.Apply(n.Op, n.Attrs, in...)[0]
				return []*ir.Value{b.Add(base, b.Scale(low, scale))}
			}
			b.Fail(fmt.Errorf("a lora weight is read by %s (operand %d); LoRA adapts weights used as linear(x, w) or grouped_matmul(x, w, offsets, tb = true)", n.Op, i))
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.Train = ir.TrainSpec{Mode: "qlora", Rank: rank, Alpha: alpha, LR: g.Train.LR}
	return out, nil
}
