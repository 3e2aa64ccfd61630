package codegen_test

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
)

// Codegen has a template for every kind of kernel fusion makes, and none
// for a kind it does not.
func TestEveryKindHasATemplate(t *testing.T) {
	kinds := slices.Sorted(maps.Keys(passes.Kinds))
	if have := codegen.Templates(); !slices.Equal(have, kinds) {
		t.Errorf("templates %v, kinds %v", have, kinds)
	}
}

// Every op of the catalogue has a kernel path: element-wise and layout ops
// through the pointwise template, every other op through its own.
func TestEveryOpHasAKernel(t *testing.T) {
	have := codegen.Templates()
	for _, d := range ir.Ops() {
		if d.Op == ir.OpInput || d.Op == ir.OpParam {
			continue
		}
		if kind := passes.KindOf(d.Op); !slices.Contains(have, kind) {
			t.Errorf("op %s has no kernel template (%s)", d.Op, kind)
		}
	}
}

// sample builds op on the first of a few operand lists and attribute sets
// that its shape rule accepts; nil when none does.
func sample(d *ir.OpDef) *ir.Node {
	f := ir.T(ir.F32, 2, 4)
	operands := [][]ir.Type{
		{f},
		{f, f},
		{ir.T(ir.I32, 2, 4)},
		{ir.T(ir.F32, 4, 4), ir.T(ir.I32, 2)},
		{ir.T(ir.NF4, 4, 64)},
		{f, f, f, f, ir.T(ir.F32), ir.T(ir.F32)},
	}
	attrs := []ir.Attrs{
		{"factor": 2.0, "to": ir.F16, "axis": 1, "start": 1, "end": 3, "perm": []int{1, 0}, "shape": []int{8},
			"depth": 3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
		{"shape": []int{3, 2, 4}},
	}
	for _, a := range attrs {
		declared := ir.Attrs{}
		for _, ad := range d.Attrs {
			if v, ok := a[ad.Name]; ok {
				declared[ad.Name] = v
			}
		}
		for _, types := range operands {
			b := ir.NewBuilder("sample")
			in := make([]*ir.Value, len(types))
			for i, ty := range types {
				in[i] = b.Input(fmt.Sprintf("x%d", i), ty)
			}
			out := b.Apply(d.Op, declared, in...)
			if b.Err() == nil {
				return out[0].Node
			}
		}
	}
	return nil
}

// TestEmitterComputesEveryPointwiseOp calls the emitter on every op a kernel
// may compute inline (every pointwise op of the catalogue), at each of its
// results: an op with no way to compute it fails here rather than when a
// model first uses it.
func TestEmitterComputesEveryPointwiseOp(t *testing.T) {
	for _, d := range ir.Ops() {
		if !passes.Pointwise(d.Op) || d.Category == ir.Source {
			continue
		}
		n := sample(d)
		if n == nil {
			t.Errorf("%s: no sample operands (extend sample)", d.Op)
			continue
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: %v", d.Op, p)
				}
			}()
			e := codegen.NewEmitter("k", "", []*ir.Node{n})
			for _, v := range n.Outputs {
				if x := e.At(v, e.Split(v.Type.Shape, kir.Thread(0))); x == nil {
					t.Errorf("%s: no value for result %d", d.Op, v.Index)
				}
			}
		}()
	}
}

// TestElementwiseKernels runs the kernel of every element-wise op with
// scalar maths on the sim, on operands spread over its domain, against the
// reference.
func TestElementwiseKernels(t *testing.T) {
	b := ir.NewBuilder("elementwise")
	inputs := map[string]*ref.Tensor{}
	shape := ir.T(ir.F32, 3, 100) // not a whole number of threadgroups
	count := 0
	for _, d := range ir.Ops() {
		if d.Elem == nil {
			continue
		}
		count++
		lo, hi := d.Elem.Domain[0], d.Elem.Domain[1]
		in := make([]*ir.Value, d.Inputs)
		for i := range in {
			name := fmt.Sprintf("%s_x%d", d.Op, i)
			in[i] = b.Input(name, shape)
			x := ref.New(shape)
			for k := range x.Data {
				x.Data[k] = lo + (hi-lo)*float64((k*37+i*11)%23)/22
			}
			inputs[name] = x
		}
		a := ir.Attrs{}
		for _, ad := range d.Attrs {
			switch ad.Kind {
			case ir.AttrFloat:
				a[ad.Name] = -1.7
			case ir.AttrDType:
				a[ad.Name] = ir.F16 // a cast that rounds
			default:
				t.Fatalf("%s: no sample value for a %s attribute %q", d.Op, ad.Kind, ad.Name)
			}
		}
		b.Output(string(d.Op), b.Op(d.Op, a, in...))
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	prog := compileAndCheck(t, g, passes.Fuse(g, false), inputs)
	if len(prog.Dispatches) != count {
		t.Errorf("%d kernels for %d ops", len(prog.Dispatches), count)
	}
}

// TestTanhTrainStep: a model written with tanh compiles to a train step
// whose kernels, tanh's forward and its backward 1 − y² among them, run on
// the sim against the reference: fused (tanh in a matmul's epilogue) and
// one op per kernel (tanh in a pointwise kernel of its own).
func TestTanhTrainStep(t *testing.T) {
	const src = `
input x: f32[6, 16]
param w: f32[24, 16] = normal(std = 0.3)
param b: f32[24] = normal(std = 0.5) nodecay
output loss = mean(square(tanh(tanh(linear(x, w)) + b)))
`
	g, err := lang.Build("tanh.graph", []byte(src), lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g = model(t, g, &passes.Config{Mode: "full", Train: true})
	inputs := map[string]*ref.Tensor{}
	for _, in := range g.Inputs {
		x := ref.New(in.Value.Type)
		for k := range x.Data {
			switch in.Name {
			case "lr":
				x.Data[k] = 0.01
			case "step":
				x.Data[k] = 1
			default:
				x.Data[k] = float64((k*37)%23)/11.5 - 1
			}
		}
		inputs[in.Name] = x
	}
	for _, fuse := range []bool{true, false} {
		s := passes.Fuse(g, fuse)
		kinds := map[string]bool{}
		for _, grp := range s.Groups {
			for _, n := range grp.Nodes {
				if n.Op == ir.OpTanh {
					kinds[grp.Kind] = true
				}
			}
		}
		want := map[bool]string{true: string(ir.OpMatmul), false: passes.KindPointwise}[fuse]
		if !kinds[want] {
			t.Errorf("fuse %v: tanh is computed in kernels of kinds %v, want %s", fuse, kinds, want)
		}
		compileAndCheck(t, g, s, inputs)
	}
}

// TestSkipKernels runs the ops a loss-scaled train step skips a step with,
// on the sim against the reference: isfinite on NaN and ±Inf (the
// catalogue test draws finite operands only), and adamw gated by an apply
// flag of 1 (the step) and of 0 (θ, m, v kept, no decay).
func TestSkipKernels(t *testing.T) {
	b := ir.NewBuilder("skip")
	shape := ir.T(ir.F32, 3, 100)
	x := ref.New(shape)
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat32, -math.SmallestNonzeroFloat32, 0}
	for i := range x.Data {
		x.Data[i] = special[i%len(special)]
	}
	b.Output("finite", b.Unary(ir.OpIsFinite, b.Input("x", shape)))
	inputs := map[string]*ref.Tensor{"x": x}
	at := ir.Attrs{"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
	for _, flag := range []float64{1, 0} {
		var ops []*ir.Value
		for i, name := range []string{"theta", "g", "m", "v"} {
			name = fmt.Sprintf("%s%g", name, flag)
			ops = append(ops, b.Input(name, shape))
			tt := ref.New(shape)
			for k := range tt.Data {
				tt.Data[k] = float64((k*37+i*11)%23)/11.5 - 1
				if name[0] == 'v' {
					tt.Data[k] = math.Abs(tt.Data[k])
				}
			}
			inputs[name] = tt
		}
		for _, s := range []struct {
			name string
			v    float64
		}{{"lr", 0.1}, {"step", 3}, {"apply", flag}} {
			name := fmt.Sprintf("%s%g", s.name, flag)
			ops = append(ops, b.Input(name, ir.T(ir.F32)))
			inputs[name] = ref.Scalar(s.v)
		}
		out := b.Apply(ir.OpAdamW, at, ops...)
		for k, name := range []string{"theta", "m", "v"} {
			b.Output(fmt.Sprintf("%s_out%g", name, flag), out[k])
		}
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := reference(t, g, inputs)
	if f := want[g.Output("finite").Value].Data; f[0] != 0 || f[1] != 0 || f[2] != 0 || f[3] != 1 || f[4] != 1 || f[5] != 1 {
		t.Fatalf("reference isfinite of %v: %v", special, f[:6])
	}
	if !slices.Equal(want[g.Output("theta_out0").Value].Data, inputs["theta0"].Data) {
		t.Fatal("the reference's adamw with apply 0 changed θ")
	}
	if slices.Equal(want[g.Output("theta_out1").Value].Data, inputs["theta1"].Data) {
		t.Fatal("the reference's adamw with apply 1 left θ as it was")
	}
	compileAndCheck(t, g, passes.Fuse(g, true), inputs)
}

// TestLossScaledTrainStepOnSim runs every kernel of the tiny model's
// loss-scaled train step on the sim against the reference: the scaled seed,
// the norm and clip factor with 1/s folded in (in the last norm reduction),
// and the gated adamw updates.
func TestLossScaledTrainStepOnSim(t *testing.T) {
	g := loadModel(t, "tiny", &passes.Config{Mode: "full", Train: true, LossScale: true}, nil)
	inputs := map[string]*ref.Tensor{"loss_scale": ref.Scalar(65536), "lr": ref.Scalar(1e-3), "step": ref.Scalar(2)}
	s := passes.Fuse(g, true)
	n := checkOnSimWith(t, g, s, func(*passes.Group) bool { return true }, inputs)
	t.Logf("%d kernels", n)
}
