package passes

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
)

// loadModel builds models/<name>.graph with constant overrides.
func loadModel(t *testing.T, name string, over map[string]int) *ir.Graph {
	t.Helper()
	g, err := lang.Load("../models/"+name+".graph", lang.Options{Overrides: over})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// run applies the graph passes, verifying the graph after each.
func run(t *testing.T, g *ir.Graph, cfg Config) (*ir.Graph, *Config) {
	t.Helper()
	g, err := runPasses(g, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, &cfg
}

// runPasses applies the graph passes in the pipeline's order (the
// pipeline package imports this one, so tests here cannot use it).
func runPasses(g *ir.Graph, cfg *Config) (*ir.Graph, error) {
	for _, pass := range []func(*ir.Graph, *Config) (*ir.Graph, error){QLoRA, TrainStep, Remat} {
		var err error
		if g, err = pass(g, cfg); err != nil {
			return nil, err
		}
		if err := ir.Verify(g); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// eval runs the reference interpreter.
func eval(t *testing.T, g *ir.Graph, feeds, params map[string]*ref.Tensor) *ref.Result {
	t.Helper()
	r, err := ref.Eval(g, feeds, params)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// withTotalLoss copies g with its "loss" output replaced by loss + Σ aux
// losses: the objective the train step differentiates.
func withTotalLoss(t *testing.T, g *ir.Graph) *ir.Graph {
	t.Helper()
	c, err := ir.Rewrite(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := ir.Extend(c)
	o := c.Output("loss")
	for _, v := range c.AuxLosses {
		o.Value = b.Add(o.Value, v)
	}
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	return c
}

// tokens feeds random token ids to the model's tokens and targets inputs.
func tokens(g *ir.Graph, rng *rand.Rand) map[string]*ref.Tensor {
	feeds := map[string]*ref.Tensor{}
	for _, name := range []string{"tokens", "targets"} {
		in := g.Inputs[0]
		for _, x := range g.Inputs {
			if x.Name == name {
				in = x
			}
		}
		t := ref.New(in.Value.Type)
		for i := range t.Data {
			t.Data[i] = float64(rng.IntN(g.Consts["vocab"]))
		}
		feeds[name] = t
	}
	return feeds
}

// quickParams initialises g's parameters like ref.InitParams, except that
// large ones are filled from a xorshift generator, uniform with the scale of
// their init: ref.InitParams spends seconds on phase1's 77M weights. Values
// are float32-representable, as parameters are stored.
func quickParams(t *testing.T, g *ir.Graph, seed uint64) map[string]*ref.Tensor {
	t.Helper()
	out := map[string]*ref.Tensor{}
	for _, p := range g.Params {
		typ := p.Value.Type
		if typ.Shape.Elems() < 1<<16 || typ.DType != ir.F32 {
			x, err := ref.InitParam(p, seed)
			if err != nil {
				t.Fatal(err)
			}
			out[p.Name] = x
			continue
		}
		bound := 1 / math.Sqrt(float64(typ.Shape[len(typ.Shape)-1]))
		if p.Init.Kind == "normal" {
			bound = p.Init.Args["std"] * math.Sqrt(3)
		}
		x := ref.New(typ)
		s := seed*0x9E3779B97F4A7C15 + uint64(x.Type.Shape.Elems()) + uint64(len(p.Name))
		for i := range x.Data {
			s ^= s << 13
			s ^= s >> 7
			s ^= s << 17
			x.Data[i] = float64(float32(bound * (float64(s>>11)/(1<<53)*2 - 1)))
		}
		out[p.Name] = x
	}
	return out
}

// withOptState adds the train step's extra feeds and parameters to a
// model's: zero moments, lr and step.
func withOptState(train *ir.Graph, feeds, params map[string]*ref.Tensor, lr, step float64) (map[string]*ref.Tensor, map[string]*ref.Tensor) {
	f := map[string]*ref.Tensor{"lr": ref.Scalar(lr), "step": ref.Scalar(step)}
	for k, v := range feeds {
		f[k] = v
	}
	p := map[string]*ref.Tensor{}
	for _, q := range train.Params {
		if t, ok := params[q.Name]; ok {
			p[q.Name] = t
		} else {
			p[q.Name] = ref.New(q.Value.Type)
		}
	}
	return f, p
}

// adamwGrads maps each parameter the train step updates to the gradient its
// adamw node receives (after clipping).
func adamwGrads(g *ir.Graph, r *ref.Result) map[string]*ref.Tensor {
	out := map[string]*ref.Tensor{}
	for _, n := range g.Nodes {
		if n.Op == ir.OpAdamW {
			out[n.Inputs[0].Node.Attrs.String("name")] = r.Value(n.Inputs[1])
		}
	}
	return out
}

// numericCheck compares analytic gradients at the given flat indices of x
// with central differences of loss (docs/maths.md, Gradient checks:
// ε = 1e-6, pass when |analytic − numeric| ≤ 1e-5 + 1e-3·|numeric|).
func numericCheck(t *testing.T, what string, x []float64, idx []int, analytic []float64, loss func() float64) {
	t.Helper()
	const eps = 1e-6
	for _, i := range idx {
		orig := x[i]
		x[i] = orig + eps
		fp := loss()
		x[i] = orig - eps
		fm := loss()
		x[i] = orig
		num := (fp - fm) / (2 * eps)
		if d := math.Abs(analytic[i] - num); !(d <= 1e-5+1e-3*math.Abs(num)) {
			t.Errorf("%s[%d]: analytic %.10g, numeric %.10g (diff %.3g)", what, i, analytic[i], num, d)
			return
		}
	}
}

// sample picks k distinct flat indices of n, always including the largest
// |g| (so a check never looks only at zeros).
func sample(rng *rand.Rand, g []float64, k int) []int {
	best := 0
	for i, v := range g {
		if math.Abs(v) > math.Abs(g[best]) {
			best = i
		}
	}
	idx := []int{best}
	for _, i := range rng.Perm(len(g)) {
		if len(idx) >= k {
			break
		}
		if i != best {
			idx = append(idx, i)
		}
	}
	return idx
}

// all lists 0..n-1.
func all(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// routingGap is the smallest gap, over the rows of every topk's input,
// between the k-th and (k+1)-th largest and between the two largest
// entries: routing changes (and the aux loss's top-1 count jumps) only when
// a perturbation closes one.
func routingGap(g *ir.Graph, r *ref.Result) float64 {
	gap := math.Inf(1)
	for _, n := range g.Nodes {
		if n.Op != ir.OpTopK {
			continue
		}
		x := r.Value(n.Inputs[0])
		k := n.Attrs.Int("k")
		w := x.Type.Shape[len(x.Type.Shape)-1]
		for row := 0; row+w <= len(x.Data); row += w {
			s := append([]float64(nil), x.Data[row:row+w]...)
			for i := range s { // descending
				for j := i + 1; j < len(s); j++ {
					if s[j] > s[i] {
						s[i], s[j] = s[j], s[i]
					}
				}
			}
			gap = math.Min(gap, s[0]-s[1])
			if k < w {
				gap = math.Min(gap, s[k-1]-s[k])
			}
		}
	}
	return gap
}
