package ref

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/scm-magellano/magc/ir"
)

// InitParams initialises every parameter of g by its init rule (see
// InitParam). The result depends only on seed and each parameter's name,
// kind and type, not on the order of the parameters.
func InitParams(g *ir.Graph, seed uint64) (map[string]*Tensor, error) {
	out := make(map[string]*Tensor, len(g.Params))
	for _, p := range g.Params {
		t, err := InitParam(p, seed)
		if err != nil {
			return nil, err
		}
		out[p.Name] = t
	}
	return out, nil
}

// InitParam initialises one parameter following ir/init.go, with fan_in the
// last axis of its shape. Random draws come from a PCG seeded with seed and
// the FNV-64a hash of the name, in row-major order. Values are produced in
// float32, the precision parameters are stored in, and then converted to the
// parameter's dtype, so every executor can start from the identical weights.
// A FrozenNF4 parameter (dtype nf4) is initialised in f32 by its rule, then
// quantised with block 64 and double quantisation.
func InitParam(p *ir.Param, seed uint64) (*Tensor, error) {
	if p.Value == nil {
		return nil, fmt.Errorf("ref: parameter %q has no value", p.Name)
	}
	typ := p.Value.Type
	w, err := initValues(p.Init, typ.Shape, seed, p.Name)
	if err != nil {
		return nil, fmt.Errorf("ref: parameter %q: %v", p.Name, err)
	}
	if typ.DType == ir.NF4 {
		return QuantizeNF4(typ.Shape, w)
	}
	return FromFloat32(typ, w)
}

// initArgs returns the init's arguments with ir.InitDefaults filled in, and
// an error for an unknown kind or a missing argument.
func initArgs(in ir.Init) (map[string]float64, error) {
	names, ok := ir.InitKinds[in.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown init %q", in.Kind)
	}
	args := map[string]float64{}
	for _, n := range names {
		v, ok := in.Args[n]
		if !ok {
			v, ok = ir.InitDefaults[in.Kind][n]
		}
		if !ok {
			return nil, fmt.Errorf("init %s needs argument %q", in.Kind, n)
		}
		args[n] = v
	}
	return args, nil
}

func initValues(in ir.Init, shape ir.Shape, seed uint64, name string) ([]float32, error) {
	args, err := initArgs(in)
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	out := make([]float32, shape.Elems())
	last := 1
	if len(shape) > 0 {
		last = shape[len(shape)-1]
	}
	fill := func(f func(i int) float64) {
		for i := range out {
			out[i] = float32(f(i))
		}
	}
	// uniform draws from [lo, hi).
	uniform := func(lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }
	switch in.Kind {
	case "zeros":
	case "ones":
		fill(func(int) float64 { return 1 })
	case "const":
		fill(func(int) float64 { return args["value"] })
	case "normal":
		fill(func(int) float64 { return args["mean"] + args["std"]*rng.NormFloat64() })
	case "uniform":
		fill(func(int) float64 { return uniform(args["lo"], args["hi"]) })
	case "kaiming_uniform":
		a := args["a"]
		bound := args["gain"] * math.Sqrt(6/((1+a*a)*float64(last)))
		fill(func(int) float64 { return uniform(-bound, bound) })
	case "s4d_real":
		fill(func(i int) float64 { return math.Log(float64(i%last + 1)) })
	case "dt_bias":
		lo, hi := math.Log(args["dt_min"]), math.Log(args["dt_max"])
		fill(func(int) float64 {
			dt := math.Max(math.Exp(uniform(0, 1)*(hi-lo)+lo), args["floor"])
			return dt + math.Log(-math.Expm1(-dt)) // inverse softplus
		})
	default:
		return nil, fmt.Errorf("init %q has no reference implementation", in.Kind)
	}
	return out, nil
}
