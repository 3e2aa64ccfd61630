package ref

import (
	"math"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/nf4"
)

type pdecl struct {
	name string
	role ir.Role
	kind string
	args map[string]float64
	typ  ir.Type
}

func paramGraph(t *testing.T, decls ...pdecl) *ir.Graph {
	t.Helper()
	b := ir.NewBuilder("params")
	for _, d := range decls {
		in, err := ir.NewInit(d.kind, d.args)
		if err != nil {
			t.Fatal(err)
		}
		role := d.role
		if role == 0 {
			role = ir.Trainable
		}
		b.Param(ir.Param{Name: d.name, Role: role, Init: in}, d.typ)
	}
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func initOne(t *testing.T, d pdecl, seed uint64) *Tensor {
	t.Helper()
	g := paramGraph(t, d)
	ps, err := InitParams(g, seed)
	if err != nil {
		t.Fatal(err)
	}
	return ps[d.name]
}

func meanStd(x []float64) (m, s float64) {
	for _, v := range x {
		m += v
	}
	m /= float64(len(x))
	for _, v := range x {
		s += (v - m) * (v - m)
	}
	return m, math.Sqrt(s / float64(len(x)))
}

func TestInitConstants(t *testing.T) {
	for _, c := range []struct {
		kind string
		args map[string]float64
		want float64
	}{{"zeros", nil, 0}, {"ones", nil, 1}, {"const", map[string]float64{"value": 0.25}, 0.25}} {
		x := initOne(t, pdecl{name: "p", kind: c.kind, args: c.args, typ: ir.T(ir.F32, 3, 4)}, 1)
		for _, v := range x.Data {
			if v != c.want {
				t.Fatalf("%s: value %g, want %g", c.kind, v, c.want)
			}
		}
	}
}

func TestInitKaiming(t *testing.T) {
	for _, c := range []struct {
		a, gain, bound float64
	}{{math.Sqrt(5), 1, 0.1}, {0, 2, 2 * math.Sqrt(0.06)}} {
		// fan_in is the last axis: 100.
		x := initOne(t, pdecl{name: "w", kind: "kaiming_uniform", args: map[string]float64{"a": c.a, "gain": c.gain},
			typ: ir.T(ir.F32, 80, 100)}, 7)
		top := 0.0
		for _, v := range x.Data {
			if math.Abs(v) > float64(float32(c.bound)) {
				t.Fatalf("a=%g: |%g| exceeds the bound %g", c.a, v, c.bound)
			}
			top = math.Max(top, math.Abs(v))
		}
		m, s := meanStd(x.Data)
		want := c.bound / math.Sqrt(3) // std of U(−b, b)
		if top < 0.99*c.bound || math.Abs(m) > 4*want/math.Sqrt(8000) || math.Abs(s/want-1) > 0.03 {
			t.Fatalf("a=%g: max %g, mean %g, std %g (want bound %g, std %g)", c.a, top, m, s, c.bound, want)
		}
	}
}

func TestInitNormalUniform(t *testing.T) {
	x := initOne(t, pdecl{name: "emb", kind: "normal", args: map[string]float64{"std": 0.02, "mean": 1}, typ: ir.T(ir.F32, 100, 100)}, 3)
	m, s := meanStd(x.Data)
	if math.Abs(m-1) > 4*0.02/100 || math.Abs(s/0.02-1) > 0.03 {
		t.Fatalf("normal: mean %g std %g", m, s)
	}
	u := initOne(t, pdecl{name: "u", kind: "uniform", args: map[string]float64{"lo": -3, "hi": -1}, typ: ir.T(ir.F32, 10000)}, 3)
	for _, v := range u.Data {
		if v < -3 || v > -1 {
			t.Fatalf("uniform: %g outside [-3, -1)", v)
		}
	}
	if m, s := meanStd(u.Data); math.Abs(m+2) > 0.03 || math.Abs(s-2/math.Sqrt(12)) > 0.02 {
		t.Fatalf("uniform: mean %g std %g", m, s)
	}
}

func TestInitS4DReal(t *testing.T) {
	x := initOne(t, pdecl{name: "A_log", kind: "s4d_real", typ: ir.T(ir.F32, 5, 16)}, 9)
	for d := 0; d < 5; d++ {
		for n := 0; n < 16; n++ {
			// Exactly ln(n+1), as stored in f32.
			if want := float64(float32(math.Log(float64(n + 1)))); x.At(d, n) != want {
				t.Fatalf("A_log[%d,%d] = %.17g, want %.17g", d, n, x.At(d, n), want)
			}
		}
	}
}

func TestInitDtBias(t *testing.T) {
	x := initOne(t, pdecl{name: "dt_bias", kind: "dt_bias", typ: ir.T(ir.F32, 4000)}, 11)
	var logs []float64
	for _, v := range x.Data {
		dt := softplus(v)
		if dt < 0.001*(1-1e-6) || dt > 0.1*(1+1e-6) {
			t.Fatalf("softplus(%g) = %g outside [0.001, 0.1]", v, dt)
		}
		logs = append(logs, math.Log(dt))
	}
	// log dt is uniform on [ln 0.001, ln 0.1].
	m, s := meanStd(logs)
	lo, hi := math.Log(0.001), math.Log(0.1)
	if math.Abs(m-(lo+hi)/2) > 0.05 || math.Abs(s-(hi-lo)/math.Sqrt(12)) > 0.05 {
		t.Fatalf("log dt: mean %g std %g", m, s)
	}
	// The floor clamps: with dt_min below it, some values sit exactly on it.
	y := initOne(t, pdecl{name: "dt2", kind: "dt_bias", args: map[string]float64{"dt_min": 1e-5, "dt_max": 1e-4, "floor": 5e-5},
		typ: ir.T(ir.F32, 1000)}, 11)
	onFloor := 0
	for _, v := range y.Data {
		dt := softplus(v)
		if dt < 5e-5*(1-1e-6) {
			t.Fatalf("softplus(%g) = %g below the floor", v, dt)
		}
		if math.Abs(dt/5e-5-1) < 1e-6 {
			onFloor++
		}
	}
	if onFloor < 500 { // P(dt < floor) = ln 5 / ln 10 ≈ 0.7
		t.Fatalf("%d of 1000 values on the floor", onFloor)
	}
}

func TestInitDeterministic(t *testing.T) {
	kai := map[string]float64{"a": math.Sqrt(5)}
	a := pdecl{name: "a", kind: "kaiming_uniform", args: kai, typ: ir.T(ir.F32, 4, 8)}
	b := pdecl{name: "b", kind: "kaiming_uniform", args: kai, typ: ir.T(ir.F32, 4, 8)}
	c := pdecl{name: "c", kind: "normal", args: map[string]float64{"std": 1}, typ: ir.T(ir.F32, 16)}
	p1, err := InitParams(paramGraph(t, a, b, c), 42)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := InitParams(paramGraph(t, c, b, a), 42) // other order
	if err != nil {
		t.Fatal(err)
	}
	p3, err := InitParams(paramGraph(t, b), 42) // a subset
	if err != nil {
		t.Fatal(err)
	}
	p4, err := InitParams(paramGraph(t, a, b, c), 43) // another seed
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		closeAll(t, n, p1[n].Data, p2[n].Data, 0)
		if p1[n].Data[0] == p4[n].Data[0] {
			t.Fatalf("%s: seed does not matter", n)
		}
	}
	closeAll(t, "b alone", p3["b"].Data, p1["b"].Data, 0)
	if p1["a"].Data[0] == p1["b"].Data[0] {
		t.Fatal("two parameters with the same init share their values")
	}
	for _, v := range p1["c"].Data {
		if v != float64(float32(v)) {
			t.Fatalf("f32 parameter value %.17g is not a float32", v)
		}
	}
}

func TestInitNF4(t *testing.T) {
	kai := map[string]float64{"a": math.Sqrt(5)}
	q := initOne(t, pdecl{name: "w", role: ir.FrozenNF4, kind: "kaiming_uniform", args: kai, typ: ir.T(ir.NF4, 6, 64)}, 5)
	dense := initOne(t, pdecl{name: "w", kind: "kaiming_uniform", args: kai, typ: ir.T(ir.F32, 6, 64)}, 5)
	if q.Q == nil || !q.Q.Double || q.Q.BlockSize != 64 || q.Q.N != 6*64 || q.Data != nil {
		t.Fatalf("nf4 parameter %+v", q.Q)
	}
	want, err := nf4.Quantize(dense.Float32(), nf4.Options{BlockSize: 64, Double: true})
	if err != nil {
		t.Fatal(err)
	}
	got, w := q.Float32(), want.Dequantize()
	for i := range w {
		if got[i] != w[i] {
			t.Fatalf("nf4 weight %d = %g, want %g", i, got[i], w[i])
		}
	}
}

func TestInitErrors(t *testing.T) {
	b := ir.NewBuilder("bad")
	v := b.Param(ir.Param{Name: "p", Role: ir.Trainable, Init: ir.Init{Kind: "xavier"}}, ir.T(ir.F32, 2))
	g := b.G
	if _, err := InitParams(g, 1); err == nil || !strings.Contains(err.Error(), `unknown init "xavier"`) {
		t.Fatalf("unknown kind: %v", err)
	}
	g.Params[0].Init = ir.Init{Kind: "normal"} // std missing, mean defaults
	if _, err := InitParam(g.Params[0], 1); err == nil || !strings.Contains(err.Error(), `needs argument "std"`) {
		t.Fatalf("missing argument: %v", err)
	}
	g.Params[0].Init = ir.Init{Kind: "normal", Args: map[string]float64{"std": 2}}
	x, err := InitParam(g.Params[0], 1)
	if err != nil || !x.Type.Equal(v.Type) {
		t.Fatalf("defaults: %v %v", x, err)
	}
	if _, err := InitParam(&ir.Param{Name: "loose"}, 1); err == nil {
		t.Fatal("parameter without a value: no error")
	}
}
