package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

// f32 makes an f32 tensor.
func f32(t *testing.T, shape []int, data ...float64) *Tensor {
	t.Helper()
	x, err := FromFloat64(ir.T(ir.F32, shape...), data)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// i32 makes an i32 tensor.
func i32(t *testing.T, shape []int, data ...int) *Tensor {
	t.Helper()
	x, err := FromInts(shape, data)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// sh is a shape literal.
func sh(d ...int) []int { return d }

// randT is an f32 tensor with uniform values in [lo, hi).
func randT(rng *rand.Rand, shape []int, lo, hi float64) *Tensor {
	x := New(ir.T(ir.F32, shape...))
	for i := range x.Data {
		x.Data[i] = lo + (hi-lo)*rng.Float64()
	}
	return x
}

// run applies one op and fails the test on error.
func run(t *testing.T, op ir.Op, a ir.Attrs, in ...*Tensor) []*Tensor {
	t.Helper()
	out, err := EvalOp(op, a, in...)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return out
}

// expect checks a tensor's shape and values to within tol (NaN matches NaN).
func expect(t *testing.T, what string, got *Tensor, shape []int, tol float64, want ...float64) {
	t.Helper()
	if !got.Type.Shape.Equal(ir.Shape(shape)) {
		t.Fatalf("%s: shape %v, want %v", what, got.Type.Shape, ir.Shape(shape))
	}
	if len(got.Data) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got.Data), len(want))
	}
	for i := range want {
		g, w := got.Data[i], want[i]
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if g != w && !(math.Abs(g-w) <= tol*math.Max(1, math.Abs(w))) {
			t.Fatalf("%s: element %d = %.17g, want %.17g\ngot  %v", what, i, g, w, got.Data)
		}
	}
}

// gradCheck compares an analytic gradient with central differences of f
// over the elements of x (docs/maths.md, Gradient checks: ε = 1e-6,
// |a−n| ≤ 1e-5 + 1e-3·|n|).
func gradCheck(t *testing.T, what string, x []float64, analytic []float64, f func() float64) {
	t.Helper()
	const eps = 1e-6
	if len(analytic) != len(x) {
		t.Fatalf("%s: gradient has %d elements, want %d", what, len(analytic), len(x))
	}
	for i := range x {
		orig := x[i]
		x[i] = orig + eps
		fp := f()
		x[i] = orig - eps
		fm := f()
		x[i] = orig
		num := (fp - fm) / (2 * eps)
		if d := math.Abs(analytic[i] - num); !(d <= 1e-5+1e-3*math.Abs(num)) {
			t.Fatalf("%s[%d]: analytic %.10g, numeric %.10g (diff %.3g)", what, i, analytic[i], num, d)
		}
	}
}

// dot is Σ a·b.
func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// closeAll checks two slices agree to a relative tolerance.
func closeAll(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %.17g, want %.17g", what, i, got[i], want[i])
		}
	}
}

// softplus is the reference's ln(1+e^x).
func softplus(x float64) float64 {
	d, _ := ir.Lookup(ir.OpSoftplus)
	return d.Elem.Eval(nil, []float64{x})
}
