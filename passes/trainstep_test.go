package passes

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/ref"
)

// tinyOver keeps the tiny model small enough for gradient checks: 8
// tokens, and scans of two chunks.
var tinyOver = map[string]int{"context": 4, "batch": 2, "scan_chunk": 2}

// qloraTiny is the tiny model with a QLoRA train line (its file says full).
func qloraTiny(t *testing.T) *ir.Graph {
	g := loadModel(t, "tiny", tinyOver)
	g.Train = ir.TrainSpec{Mode: "qlora", Rank: 4, Alpha: 8}
	return g
}

// noDeadNodes fails when a computed value is read by nothing: neither a
// node nor the graph's outputs, aux losses or updates.
func noDeadNodes(t *testing.T, g *ir.Graph) {
	t.Helper()
	live := Liveness(g)
	for _, n := range g.Nodes {
		if d, _ := ir.Lookup(n.Op); d.Category == ir.Source {
			continue
		}
		dead := true
		for _, v := range n.Outputs {
			dead = dead && live[v].Last == live[v].Def
		}
		if dead {
			t.Errorf("node %d (%s @%s) is dead", n.ID, n.Op, n.Scope)
		}
	}
}

func TestTrainStepGraph(t *testing.T) {
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			g := qloraTiny(t)
			g.Train.Mode = mode
			out, _ := run(t, g, Config{Train: true})
			noDeadNodes(t, out)
			for _, name := range []string{"loss", "loss_main", "loss_aux", "grad_norm"} {
				if o := out.Output(name); o == nil || !o.Value.Type.Equal(ir.T(ir.F32)) {
					t.Errorf("output %s missing or not an f32 scalar", name)
				}
			}
			if out.Output("logits") != nil {
				t.Error("the train step keeps logits, a tensor output nothing reads")
			}
			if l := out.Output("loss").Value.Node; l.Op != ir.OpAdd || l.Inputs[0] != out.Output("loss_main").Value || l.Inputs[1] != out.Output("loss_aux").Value {
				t.Errorf("loss is not loss_main + loss_aux")
			}
			var inputs []string
			for _, in := range out.Inputs {
				inputs = append(inputs, in.Name+":"+in.Value.Type.String())
			}
			if got := strings.Join(inputs, " "); got != "tokens:i32[2,4] targets:i32[2,4] lr:f32[] step:f32[]" {
				t.Errorf("inputs %s", got)
			}
			updates := map[string]*ir.Value{}
			for _, u := range out.Updates {
				updates[u.Param] = u.Value
			}
			want := DefaultOptimizer(mode)
			trainable := 0
			for _, p := range out.Params {
				if p.Role != ir.Trainable {
					if _, ok := updates[p.Name]; ok && p.Role != ir.OptState {
						t.Errorf("%s parameter %s is updated", p.Role, p.Name)
					}
					continue
				}
				trainable++
				if mode == "qlora" && !strings.Contains(p.Name, ".lora_") {
					t.Errorf("qlora: %s is trainable", p.Name)
				}
				u := updates[p.Name]
				if u == nil || u.Node.Op != ir.OpAdamW {
					t.Fatalf("%s has no adamw update", p.Name)
				}
				for i, suffix := range []string{".adam_m", ".adam_v"} {
					m := out.Param(p.Name + suffix)
					if m == nil || m.Role != ir.OptState || m.Init.Kind != "zeros" || !m.Value.Type.Equal(p.Value.Type) ||
						u.Node.Inputs[2+i] != m.Value || updates[m.Name] != u.Node.Outputs[1+i] {
						t.Errorf("%s%s is not a zero-initialised moment updated by the adamw step", p.Name, suffix)
					}
				}
				wd := want.WeightDecay
				if p.NoDecay {
					wd = 0
				}
				a := u.Node.Attrs
				if a.Float("beta1") != want.Beta1 || a.Float("beta2") != want.Beta2 || a.Float("eps") != want.Eps || a.Float("weight_decay") != wd {
					t.Errorf("%s: adamw %s, want %+v with weight decay %g", p.Name, a.Format(), want, wd)
				}
			}
			if len(out.Updates) != 3*trainable || trainable == 0 {
				t.Errorf("%d updates for %d trainable parameters", len(out.Updates), trainable)
			}
		})
	}
	if o := DefaultOptimizer("qlora"); o.Beta2 != 0.999 || o.Clip != 0.3 || o.WeightDecay != 0 {
		t.Errorf("qlora defaults %+v", o)
	}
	if o := DefaultOptimizer("full"); o.Beta2 != 0.95 || o.Clip != 1 || o.WeightDecay != 0.1 {
		t.Errorf("full defaults %+v", o)
	}
}

// TestForwardOnly: without Train the pipeline leaves the forward alone.
func TestForwardOnly(t *testing.T) {
	g := loadModel(t, "tiny", tinyOver)
	want := g.String()
	out, _ := run(t, g, Config{Remat: "layer"})
	if out.String() != want || g.String() != want {
		t.Error("a forward-only compile changed the graph")
	}
	b := ir.NewBuilder("noloss")
	b.Output("y", b.Param(ir.Param{Name: "w", Role: ir.Trainable, Init: ir.Init{Kind: "zeros"}}, ir.T(ir.F32, 2)))
	g, _ = b.Finish()
	if _, err := runPasses(g, &Config{Mode: "full", Train: true}); err == nil || !strings.Contains(err.Error(), "loss") {
		t.Errorf("a model without a loss output: %v", err)
	}
}

// TestModelGradients checks the train step's gradients of the whole tiny
// model (Mamba + MoE with its aux loss, QLoRA in qlora mode) against
// central differences of its total loss, with clipping off so the adamw
// nodes receive the raw gradients.
func TestModelGradients(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"full", "qlora"} {
		t.Run(mode, func(t *testing.T) {
			g := qloraTiny(t)
			g.Train.Mode = mode
			cfg := Config{Train: true, Optimizer: &Optimizer{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8}}
			train, _ := run(t, g, cfg)
			fwd, err := QLoRA(g, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			fwd = withTotalLoss(t, fwd)
			params, err := ref.InitParams(fwd, 3)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(4, 5))
			// In name order: the draws, and so the routing gap below, must not
			// depend on map iteration order.
			for _, name := range slices.Sorted(maps.Keys(params)) {
				p := params[name]
				if strings.HasSuffix(name, ".lora_b") { // zero at init, which would zero A's gradient
					for i := range p.Data {
						p.Data[i] = float64(float32(0.1 * (rng.Float64()*2 - 1)))
					}
				}
			}
			feeds := tokens(g, rng)
			tf, tp := withOptState(train, feeds, params, 1e-3, 1)
			r := eval(t, train, tf, tp)
			if gap := routingGap(train, r); gap < 1e-4 {
				t.Fatalf("routing gap %g is too close to a tie for finite differences: change the seed", gap)
			}
			grads := adamwGrads(train, r)
			loss := func() float64 { return eval(t, fwd, feeds, params).Outputs["loss"].Data[0] }
			if l := loss(); l != r.Outputs["loss"].Data[0] {
				t.Fatalf("train step loss %g, forward %g", r.Outputs["loss"].Data[0], l)
			}
			var kinds []string
			for _, p := range fwd.Params {
				if p.Role != ir.Trainable {
					continue
				}
				kinds = append(kinds, p.Name)
				numericCheck(t, p.Name, params[p.Name].Data, sample(rng, grads[p.Name].Data, 4), grads[p.Name].Data, loss)
			}
			t.Logf("checked %d parameters: %s", len(kinds), strings.Join(kinds, " "))
			wgrads := 0
			for _, n := range train.Nodes {
				if n.Op == ir.OpGroupedMMW {
					wgrads++
				}
			}
			if mode == "qlora" && wgrads != 4 { // A and B of w13 and w2; none for the NF4 experts
				t.Errorf("%d grouped_matmul_wgrad nodes, want 4", wgrads)
			}
		})
	}
}

// TestAdamWSteps runs three train steps of the tiny model in the reference
// interpreter and compares each update with one computed here from
// docs/maths.md (Gradient clipping, AdamW): the raw gradients come from a
// separate gradient graph, then global-norm clipping and decoupled AdamW
// are applied by hand.
func TestAdamWSteps(t *testing.T) {
	g := loadModel(t, "tiny", map[string]int{"context": 4, "batch": 1})
	opt := Optimizer{Beta1: 0.8, Beta2: 0.9, Eps: 1e-6, WeightDecay: 0.05, Clip: 2}
	train, _ := run(t, g, Config{Train: true, Optimizer: &opt})
	fwd := withTotalLoss(t, g)
	grad := gradGraph(t, fwd)
	params, err := ref.InitParams(fwd, 7)
	if err != nil {
		t.Fatal(err)
	}
	feeds := tokens(g, rand.New(rand.NewPCG(8, 9)))
	tf, tp := withOptState(train, feeds, params, 0, 0)
	const lr = 0.01
	tf["lr"] = ref.Scalar(lr)
	clipped := false
	for step := 1; step <= 3; step++ {
		tf["step"] = ref.Scalar(float64(step))
		gp := map[string]*ref.Tensor{}
		for _, p := range fwd.Params {
			gp[p.Name] = tp[p.Name]
		}
		raw := eval(t, grad, feeds, gp)
		var ss float64
		for _, p := range fwd.Params {
			for _, x := range raw.Outputs["grad."+p.Name].Data {
				ss += x * x
			}
		}
		norm := math.Sqrt(ss)
		factor := math.Min(1, opt.Clip/norm)
		clipped = clipped || factor < 1

		r := eval(t, train, tf, tp)
		closeTo(t, "loss", r.Outputs["loss"].Data, raw.Outputs["loss"].Data)
		closeTo(t, "grad_norm", r.Outputs["grad_norm"].Data, []float64{norm})
		got := map[string]*ref.Tensor{}
		for _, u := range train.Updates {
			got[u.Param] = r.Value(u.Value)
		}
		for _, p := range fwd.Params {
			wd := opt.WeightDecay
			if p.NoDecay {
				wd = 0
			}
			theta, m, v := tp[p.Name].Data, tp[p.Name+".adam_m"].Data, tp[p.Name+".adam_v"].Data
			n := len(theta)
			wantT, wantM, wantV := make([]float64, n), make([]float64, n), make([]float64, n)
			for i, g := range raw.Outputs["grad."+p.Name].Data {
				g *= factor
				wantM[i] = opt.Beta1*m[i] + (1-opt.Beta1)*g
				wantV[i] = opt.Beta2*v[i] + (1-opt.Beta2)*g*g
				mh := wantM[i] / (1 - math.Pow(opt.Beta1, float64(step)))
				vh := wantV[i] / (1 - math.Pow(opt.Beta2, float64(step)))
				wantT[i] = theta[i] - lr*wd*theta[i] - lr*mh/(math.Sqrt(vh)+opt.Eps)
			}
			closeTo(t, p.Name, got[p.Name].Data, wantT)
			closeTo(t, p.Name+".adam_m", got[p.Name+".adam_m"].Data, wantM)
			closeTo(t, p.Name+".adam_v", got[p.Name+".adam_v"].Data, wantV)
		}
		for name, x := range got { // the next step starts from this one's results
			tp[name] = x
		}
	}
	if !clipped {
		t.Error("clipping never engaged: lower the clip so the test covers it")
	}
}

// closeTo compares to float64 round-off.
func closeTo(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); !(d <= 1e-12*math.Max(1, math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %.17g, want %.17g", what, i, got[i], want[i])
		}
	}
}

// TestLossScaledTrainStep: with LossScale the train step takes a
// loss_scale input, and scaling by a power of two changes nothing (a
// product by 2^k is exact in floating point short of overflow), so the
// reference's updates, loss and grad_norm equal the unscaled step's bit for
// bit, with clipping at work, idle and off. A scale that overflows the
// gradients gives a non-finite grad_norm and leaves weights and both
// moments exactly as they were (no decay). A chunked loss still runs each
// chunk's backward before the next chunk's logits.
func TestLossScaledTrainStep(t *testing.T) {
	g := loadModel(t, "tiny", tinyOver)
	// The seed input must not hold back a chunked loss's backward.
	chunked, _ := run(t, g, Config{Train: true, LossScale: true, LossChunkBytes: 2 * 16 * 4})
	checkChunkOrder(t, chunked)
	for _, clip := range []float64{1e-3, 1e6, 0} {
		opt := DefaultOptimizer("full")
		opt.Clip = clip
		plain, _ := run(t, g, Config{Train: true, Optimizer: &opt})
		scaled, _ := run(t, g, Config{Train: true, Optimizer: &opt, LossScale: true})
		noDeadNodes(t, scaled)
		if in := scaled.Inputs[len(scaled.Inputs)-3]; in.Name != "loss_scale" || !in.Value.Type.Equal(ir.T(ir.F32)) {
			t.Fatalf("input %s %v, want loss_scale f32[]", in.Name, in.Value.Type)
		}
		flag := 0
		for _, n := range scaled.Nodes {
			if n.Op != ir.OpAdamW {
				continue
			}
			if len(n.Inputs) != 7 || n.Inputs[6].Node.Op != ir.OpIsFinite || n.Inputs[6].Node.Inputs[0] != scaled.Output("grad_norm").Value {
				t.Fatalf("adamw of %v is not gated by isfinite(grad_norm)", n.Inputs[0])
			}
			flag++
		}
		// Scalars only: the input, 1/s, norm·(1/s), factor·(1/s) and
		// isfinite. Without clipping there was no factor: 1/s becomes it, a
		// broadcast and a product per gradient (which fuse into adamw).
		more := 5
		if clip == 0 {
			more = 4 + 2*flag
		}
		if got := len(scaled.Nodes) - len(plain.Nodes); got != more {
			t.Errorf("clip %g: %d nodes more with scaling, want %d", clip, got, more)
		}
		params, err := ref.InitParams(g, 5)
		if err != nil {
			t.Fatal(err)
		}
		feeds := tokens(g, rand.New(rand.NewPCG(6, 7)))
		pf, pp := withOptState(plain, feeds, params, 0.01, 0)
		sf, sp := withOptState(scaled, feeds, params, 0.01, 0)
		clipped := false
		for step, scale := range []float64{65536, 8, 1, 0x1p-20} {
			pf["step"], sf["step"] = ref.Scalar(float64(step+1)), ref.Scalar(float64(step+1))
			sf["loss_scale"] = ref.Scalar(scale)
			pr, sr := eval(t, plain, pf, pp), eval(t, scaled, sf, sp)
			for _, o := range []string{"loss", "grad_norm"} {
				if p, s := pr.Outputs[o].Data[0], sr.Outputs[o].Data[0]; p != s {
					t.Fatalf("clip %g, step %d, scale %g: %s %.9g, unscaled %.9g", clip, step+1, scale, o, s, p)
				}
			}
			clipped = clipped || clip > 0 && pr.Outputs["grad_norm"].Data[0] > clip
			for i, u := range plain.Updates {
				p, s := pr.Value(u.Value), sr.Value(scaled.Updates[i].Value)
				if u.Param != scaled.Updates[i].Param || !slices.Equal(p.Data, s.Data) {
					t.Fatalf("clip %g, step %d, scale %g: %s differs from the unscaled step", clip, step+1, scale, u.Param)
				}
				pp[u.Param], sp[u.Param] = p, s
			}
		}
		if clipped != (clip == 1e-3) {
			t.Errorf("clip %g: clipped %v", clip, clipped)
		}

		// The reference models f32 maths in float64, so overflowing its
		// gradients takes a scale past f32's range (a device overflows at
		// 2^100: the train package's tests).
		sf["step"], sf["loss_scale"] = ref.Scalar(5), ref.Scalar(0x1p1000)
		r := eval(t, scaled, sf, sp)
		if n := r.Outputs["grad_norm"].Data[0]; !math.IsNaN(n) && !math.IsInf(n, 0) {
			t.Fatalf("clip %g: grad_norm %g at a scale of 2^1000", clip, n)
		}
		if l := r.Outputs["loss"].Data[0]; math.IsNaN(l) || math.IsInf(l, 0) {
			t.Fatalf("clip %g: the loss %g is not finite: the scale reached the forward", clip, l)
		}
		for _, u := range scaled.Updates {
			if !slices.Equal(r.Value(u.Value).Data, sp[u.Param].Data) {
				t.Fatalf("clip %g: the skipped step changed %s", clip, u.Param)
			}
		}
	}
}
