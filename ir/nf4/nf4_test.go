package nf4

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// The decimal strings of docs/maths.md (NF4 quantisation), parsed straight
// to fp32 (as a C compiler parses the "f" literals of dQuantizeNF4 /
// dDequantizeNF4).
var (
	mathCodes = []string{
		"-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453",
		"-0.28444138169288635", "-0.18477343022823334", "-0.09105003625154495", "0.0",
		"0.07958029955625534", "0.16093020141124725", "0.24611230194568634", "0.33791524171829224",
		"0.44070982933044434", "0.5626170039176941", "0.7229568362236023", "1.0",
	}
	mathMidpoints = []string{ // increasing, as docs/maths.md (NF4 quantisation) lists them
		"-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
		"-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476",
		"0.03979014977812767", "0.1202552504837513", "0.2035212516784668", "0.2920137718319893",
		"0.3893125355243683", "0.5016634166240692", "0.6427869200706482", "0.8614784181118011",
	}
)

func parse32(t *testing.T, s string) float32 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 32)
	if err != nil {
		t.Fatal(err)
	}
	return float32(f)
}

func TestConstantsMatchMath(t *testing.T) {
	for i, s := range mathCodes {
		if got, want := math.Float32bits(Code[i]), math.Float32bits(parse32(t, s)); got != want {
			t.Errorf("Code[%d] = %08x, docs/maths.md %s = %08x", i, got, s, want)
		}
		// The decimals are exact fp32 values printed as doubles.
		f64, _ := strconv.ParseFloat(s, 64)
		if float64(Code[i]) != f64 {
			t.Errorf("Code[%d] %s is not an exact fp32 value", i, s)
		}
	}
	for i, s := range mathMidpoints {
		if got, want := math.Float32bits(Midpoints[i]), math.Float32bits(parse32(t, s)); got != want {
			t.Errorf("Midpoints[%d] = %08x, docs/maths.md %s = %08x", i, got, s, want)
		}
		// Each threshold is within an ulp of the exact midpoint of its codes,
		// but 4 of the 15 are not its fp32 rounding (e.g. Midpoints[0]), so
		// the literals must be used as they are, never recomputed as (a+b)/2.
		exact := (float64(Code[i]) + float64(Code[i+1])) / 2
		if ulp := float64(math.Nextafter32(Midpoints[i], 2) - Midpoints[i]); math.Abs(float64(Midpoints[i])-exact) > ulp {
			t.Errorf("Midpoints[%d] = %v, more than an ulp from the exact midpoint %v", i, Midpoints[i], exact)
		}
		if !(Code[i] < Midpoints[i] && Midpoints[i] < Code[i+1]) {
			t.Errorf("Midpoints[%d] not between codes %d and %d", i, i, i+1)
		}
	}
}

// countAbove is the semantic of the comparison tree: the number of midpoints
// strictly below v.
func countAbove(v float32) uint8 {
	var c uint8
	for _, m := range Midpoints {
		if v > m {
			c++
		}
	}
	return c
}

func TestQuantizeValueBoundaries(t *testing.T) {
	for c, v := range Code {
		if got := QuantizeValue(v); got != uint8(c) {
			t.Errorf("QuantizeValue(Code[%d]) = %d", c, got)
		}
	}
	for k, m := range Midpoints {
		// Exactly on a midpoint: strict ">" fails, so the lower code.
		if got := QuantizeValue(m); got != uint8(k) {
			t.Errorf("on midpoint %d (%v): code %d, want %d", k, m, got, k)
		}
		if got := QuantizeValue(math.Nextafter32(m, 2)); got != uint8(k+1) {
			t.Errorf("one ulp above midpoint %d: code %d, want %d", k, got, k+1)
		}
		if got := QuantizeValue(math.Nextafter32(m, -2)); got != uint8(k) {
			t.Errorf("one ulp below midpoint %d: code %d, want %d", k, got, k)
		}
	}
	special := map[float32]uint8{
		float32(math.NaN()): 0, float32(math.Inf(1)): 15, float32(math.Inf(-1)): 0,
		1.5: 15, -1.5: 0, 0: 7, float32(math.Copysign(0, -1)): 7,
	}
	for v, want := range special {
		if got := QuantizeValue(v); got != want {
			t.Errorf("QuantizeValue(%v) = %d, want %d", v, got, want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		v := float32(r.Float64()*2.2 - 1.1)
		if QuantizeValue(v) != countAbove(v) {
			t.Fatalf("tree and count disagree at %v", v)
		}
	}
}

func mustQuantize(t testing.TB, w []float32, o Options) Tensor {
	t.Helper()
	q, err := Quantize(w, o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func code(q Tensor, j int) uint8 {
	if j%2 == 0 {
		return q.Codes[j/2] >> 4
	}
	return q.Codes[j/2] & 0xF
}

func TestRoundTripCodeValues(t *testing.T) {
	for _, a := range []float32{1, 2, 0.37, 3, 1e-3, 12345.678, 1e-30, 3e30} {
		w := make([]float32, 64)
		for j := range w {
			w[j] = Code[j%16] * a // contains ±a, so the block absmax is a
		}
		q := mustQuantize(t, w, Options{})
		if q.Absmax[0] != a {
			t.Fatalf("absmax %v, want %v", q.Absmax[0], a)
		}
		d := q.Dequantize()
		for j := range w {
			if code(q, j) != uint8(j%16) || math.Float32bits(d[j]) != math.Float32bits(w[j]) {
				t.Fatalf("a=%v j=%d: code %d deq %v, want code %d value %v", a, j, code(q, j), d[j], j%16, w[j])
			}
		}
	}
}

func TestMidpointsThroughQuantize(t *testing.T) {
	// absmax 1 or 2 makes 1/absmax exact, so v is exactly the midpoint.
	for _, a := range []float32{1, 2} {
		w := []float32{a}
		var want []uint8
		for k, m := range Midpoints {
			w = append(w, m*a, math.Nextafter32(m, 2)*a)
			want = append(want, uint8(k), uint8(k+1))
		}
		q := mustQuantize(t, w, Options{})
		for i, c := range want {
			if got := code(q, i+1); got != c {
				t.Errorf("a=%v element %d (%v): code %d, want %d", a, i+1, w[i+1], got, c)
			}
		}
	}
}

// bitsandbytes normalises with x*(1/absmax), not x/absmax; the two differ by
// an ulp often enough to flip codes next to a midpoint.
func TestReciprocalMultiply(t *testing.T) {
	x := math.Float32frombits(0x3df4787f) // 0.11937045
	a := float32(3)
	if x/a > Midpoints[7] || !(x*(1/a) > Midpoints[7]) {
		t.Fatal("example no longer straddles the midpoint")
	}
	q := mustQuantize(t, []float32{a, x}, Options{})
	if got := code(q, 1); got != 8 {
		t.Errorf("code %d, want 8 (x*(1/absmax) > midpoint 7)", got)
	}
}

func TestNibbleOrderAndOddLength(t *testing.T) {
	w := []float32{Code[3], Code[12], Code[15], Code[0], Code[9]}
	q := mustQuantize(t, w, Options{})
	want := []byte{0x3C, 0xF0, 0x97} // odd count: the pad nibble is code 7, the code of 0.0
	if string(q.Codes) != string(want) {
		t.Fatalf("codes % x, want % x", q.Codes, want)
	}
	if d := q.Dequantize(); len(d) != 5 || d[4] != Code[9] {
		t.Fatalf("dequantised %v", d)
	}
}

func TestAbsmaxPerBlock(t *testing.T) {
	n := 2*64 + 10 // two full blocks and a short one
	w := make([]float32, n)
	for j := range w {
		w[j] = 0.01 * float32(j%7)
	}
	w[5], w[64+63], w[130] = -3, 2.5, -0.75
	q := mustQuantize(t, w, Options{})
	want := []float32{3, 2.5, 0.75}
	if len(q.Absmax) != 3 {
		t.Fatalf("%d blocks", len(q.Absmax))
	}
	for b, a := range want {
		if q.Absmax[b] != a {
			t.Errorf("block %d absmax %v, want %v", b, q.Absmax[b], a)
		}
	}
	if code(q, 5) != 0 || code(q, 127) != 15 || code(q, 130) != 0 {
		t.Error("block maxima not at the end codes")
	}
	q32 := mustQuantize(t, w, Options{BlockSize: 32})
	if len(q32.Absmax) != 5 || q32.Absmax[0] != 3 || q32.Absmax[3] != 2.5 {
		t.Errorf("block size 32 absmax %v", q32.Absmax)
	}
}

func TestZeroBlock(t *testing.T) {
	w := make([]float32, 128)
	w[100] = 1
	for _, double := range []bool{false, true} {
		q := mustQuantize(t, w, Options{Double: double})
		// bitsandbytes: 0*(1/0) = NaN falls to code 0 (-1.0).
		if code(q, 0) != 0 {
			t.Errorf("double=%v: zero-block code %d, want 0", double, code(q, 0))
		}
		// Without double quantisation that is -1*0 = -0. With it, the
		// block's absmax decodes to a small nonzero value (8-bit error), so
		// the block comes back as -absmax', as in bitsandbytes.
		want := -q.BlockAbsmax()[0]
		if !double && want != 0 {
			t.Fatalf("absmax %v", want)
		}
		for j, v := range q.Dequantize()[:64] {
			if v != want {
				t.Fatalf("double=%v: element %d = %v, want %v", double, j, v, want)
			}
		}
	}
}

func TestBlockSizeValidation(t *testing.T) {
	for _, bs := range []int{-64, 1, 3, 63} {
		if _, err := Quantize([]float32{1, 2}, Options{BlockSize: bs}); err == nil {
			t.Errorf("block size %d accepted", bs)
		}
	}
	if _, err := Quantize(nil, Options{}); err != nil {
		t.Errorf("empty input: %v", err)
	}
}

func normalWeights(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	return w
}

func TestRandomNormalError(t *testing.T) {
	w := normalWeights(64*4096, 3)
	stats := func(d []float32) (mae, rel float64) {
		var se, sw float64
		for i := range w {
			e := float64(d[i] - w[i])
			mae += math.Abs(e)
			se += e * e
			sw += float64(w[i]) * float64(w[i])
		}
		return mae / float64(len(w)), math.Sqrt(se / sw)
	}
	mae, rel := stats(mustQuantize(t, w, Options{}).Dequantize())
	maeD, relD := stats(mustQuantize(t, w, Options{Double: true}).Dequantize())
	t.Logf("N(0,1), block 64: mean abs error %.4f, relative RMSE %.4f; double-quantised %.4f, %.4f", mae, rel, maeD, relD)
	// 4-bit NF4 on unit normals: about 0.08 mean absolute error, ~10% RMSE.
	if mae < 0.05 || mae > 0.11 || rel < 0.06 || rel > 0.14 {
		t.Errorf("NF4 error out of range: mae %.4f rel %.4f", mae, rel)
	}
	// Double quantisation only perturbs the scales by <1%.
	if math.Abs(maeD-mae) > 0.01*mae || math.Abs(relD-rel) > 0.01*rel {
		t.Errorf("double quantisation changes the error too much: %.4f vs %.4f", maeD, mae)
	}
}

// maxHalfGap is half the largest gap between neighbouring codes (between
// 0.7229568 and 1.0).
func maxHalfGap() float64 {
	var g float64
	for i := 0; i+1 < len(Code); i++ {
		g = math.Max(g, float64(Code[i+1])-float64(Code[i]))
	}
	return g / 2
}

// checkBound verifies |w - deq| <= maxHalfGap*absmax (+ the error of a
// double-quantised absmax) for finite input.
func checkBound(t testing.TB, w []float32, q Tensor) {
	t.Helper()
	d := q.Dequantize()
	scales := q.BlockAbsmax()
	h := maxHalfGap()
	for j := range w {
		b := j / q.BlockSize
		var a float64
		for _, x := range w[b*q.BlockSize : min((b+1)*q.BlockSize, len(w))] {
			a = math.Max(a, math.Abs(float64(x)))
		}
		// Skip blocks where 1/absmax overflows fp32 (absmax below ~2.9e-39):
		// there bitsandbytes, and so this package, maps every nonzero
		// weight to ±absmax.
		if math.IsInf(a, 0) || math.IsInf(float64(scales[b]), 0) || math.IsInf(float64(1/float32(a)), 0) {
			continue
		}
		bound := h*a + math.Abs(a-float64(scales[b])) + 4e-7*a + 1e-45
		if e := math.Abs(float64(w[j]) - float64(d[j])); !(e <= bound) {
			t.Fatalf("element %d: w %v deq %v error %g > bound %g (absmax %v, deq absmax %v)",
				j, w[j], d[j], e, bound, a, scales[b])
		}
	}
}

func TestErrorBoundProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 300; trial++ {
		n := r.IntN(2000)
		w := make([]float32, n)
		scale := math.Pow(10, r.Float64()*20-10)
		for i := range w {
			w[i] = float32(r.NormFloat64() * scale * math.Pow(10, r.Float64()*2))
		}
		bs := 2 * (1 + r.IntN(128))
		q := mustQuantize(t, w, Options{BlockSize: bs, Double: trial%2 == 1})
		checkBound(t, w, q)
	}
}

func TestTinyAbsmax(t *testing.T) {
	// 1/absmax overflows fp32, so x*(1/absmax) is ±Inf (or NaN for 0) and
	// every weight lands on an end code, exactly as in bitsandbytes.
	a := math.Float32frombits(0x3000) // 1.7e-41, subnormal
	q := mustQuantize(t, []float32{a, a / 2, -a / 4, 0}, Options{})
	if got := []uint8{code(q, 0), code(q, 1), code(q, 2), code(q, 3)}; string(got) != string([]uint8{15, 15, 0, 0}) {
		t.Errorf("codes %v, want [15 15 0 0]", got)
	}
}
