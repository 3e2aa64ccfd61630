package nf4

import (
	"bufio"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestDynamicMapMatchesTorch(t *testing.T) {
	f, err := os.Open("testdata/dynamic_map_torch.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []uint32
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, err := strconv.ParseUint(line, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, uint32(u))
	}
	m := DynamicMap()
	if len(want) != len(m) {
		t.Fatalf("golden has %d entries, map %d", len(want), len(m))
	}
	for i := range m {
		if got := math.Float32bits(m[i]); got != want[i] {
			t.Errorf("DynamicMap[%d] = %08x (%v), torch %08x (%v)", i, got, m[i], want[i], math.Float32frombits(want[i]))
		}
	}
}

func TestDynamicMapShape(t *testing.T) {
	m := DynamicMap()
	for i := 1; i < len(m); i++ {
		if !(m[i-1] < m[i]) {
			t.Fatalf("map not strictly increasing at %d", i)
		}
	}
	// Derived by hand from create_dynamic_map:
	//  - exponent i contributes the midpoints of linspace(0.1, 1, 2^i+1) times 10^(i-6);
	//  - i=0: linspace(0.1,1,2) = [0.1, 1] -> mean 0.55 -> 5.5e-7 (smallest magnitude);
	//  - i=1: [0.1, 0.55, 1] -> means 0.325, 0.775 -> 3.25e-6, 7.75e-6;
	//  - i=6: last two of linspace(0.1,1,65) are 1-0.9/64 and 1 -> mean 0.99296875,
	//    the largest magnitude below 1; 0 and 1.0 are appended, -1.0 is not there.
	hand := map[int]float64{
		0: -0.99296875, 126: -5.5e-7, 127: 0, 128: 5.5e-7, 129: 3.25e-6, 130: 7.75e-6,
		254: 0.99296875, 255: 1,
	}
	for i, v := range hand {
		if math.Abs(float64(m[i])-v) > 1e-7*math.Abs(v) {
			t.Errorf("DynamicMap[%d] = %v, want about %v", i, m[i], v)
		}
	}
}

func TestQuantize8(t *testing.T) {
	m := DynamicMap()
	for j, v := range m {
		if got := quantize8(&m, v); got != uint8(j) {
			t.Errorf("quantize8(map[%d]) = %d", j, got)
		}
	}
	// On the fp32 midpoint of two neighbours the CUDA search keeps the even
	// index; an ulp either side goes to the nearer value.
	for j := 0; j+1 < len(m); j++ {
		mid := (m[j] + m[j+1]) * 0.5
		if !(m[j] < mid && mid < m[j+1]) {
			continue
		}
		even := uint8(j + j%2)
		if got := quantize8(&m, mid); got != even {
			t.Errorf("tie between %d and %d: got %d, want even %d", j, j+1, got, even)
		}
		if got := quantize8(&m, math.Nextafter32(mid, 2)); got != uint8(j+1) {
			t.Errorf("above midpoint %d/%d: got %d", j, j+1, got)
		}
		if got := quantize8(&m, math.Nextafter32(mid, -2)); got != uint8(j) {
			t.Errorf("below midpoint %d/%d: got %d", j, j+1, got)
		}
	}
	special := map[float32]uint8{
		float32(math.NaN()): 0, -1: 0, 1: 255, 1.5: 255, -1.5: 0, 0: 127,
	}
	for v, want := range special {
		if got := quantize8(&m, v); got != want {
			t.Errorf("quantize8(%v) = %d, want %d", v, got, want)
		}
	}
	// Away from ties it is the nearest value.
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 100000; i++ {
		x := float32(r.Float64()*2 - 1)
		if i%2 == 0 {
			x *= float32(math.Pow(10, -6*r.Float64()))
		}
		best, bestD, second := 0, math.Inf(1), math.Inf(1)
		for j, v := range m {
			d := math.Abs(float64(x) - float64(v))
			if d < bestD {
				best, second, bestD = j, bestD, d
			} else if d < second {
				second = d
			}
		}
		if second-bestD < 1e-7*math.Abs(float64(x))+1e-12 {
			continue // too close to a tie for fp32 rounding to be unambiguous
		}
		if got := quantize8(&m, x); got != uint8(best) {
			t.Fatalf("quantize8(%v) = %d, nearest %d", x, got, best)
		}
	}
}

func TestDoubleQuantisation(t *testing.T) {
	// 700 blocks: two full 256-groups of absmaxes and a short one.
	w := normalWeights(64*700, 9)
	for b := 0; b < 700; b++ {
		w[b*64+b%64] *= float32(1 + b%13) // spread the absmaxes
	}
	single := mustQuantize(t, w, Options{})
	double := mustQuantize(t, w, Options{Double: true})
	if string(single.Codes) != string(double.Codes) {
		t.Fatal("double quantisation changed the 4-bit codes")
	}
	if len(double.QAbsmax) != 700 || len(double.AbsmaxScale) != 3 || double.Absmax != nil {
		t.Fatalf("shapes: %d qabsmax, %d scales", len(double.QAbsmax), len(double.AbsmaxScale))
	}
	var sum float64
	for _, a := range single.Absmax {
		sum += float64(a)
	}
	if want := float32(sum / 700); double.Offset != want {
		t.Errorf("offset %v, want the mean %v", double.Offset, want)
	}
	// Each group's scale is max |absmax - offset| over its 256 blocks.
	for g := range double.AbsmaxScale {
		var s float32
		for _, a := range single.Absmax[g*256 : min(g*256+256, 700)] {
			s = max(s, abs32(a-double.Offset))
		}
		if double.AbsmaxScale[g] != s {
			t.Errorf("group %d scale %v, want %v", g, double.AbsmaxScale[g], s)
		}
	}
	// The 8-bit error is at most half the widest map gap (0.9/64 near ±1) times the scale.
	got := double.BlockAbsmax()
	for b, a := range single.Absmax {
		bound := 0.5*0.9/64*float64(double.AbsmaxScale[b/256]) + 1e-6*float64(a)
		if e := math.Abs(float64(got[b]) - float64(a)); e > bound {
			t.Errorf("block %d: absmax %v decoded %v, error %g > %g", b, a, got[b], e, bound)
		}
	}
	// Decoding is map[q]*scale then + offset, each rounded to fp32.
	m := DynamicMap()
	for b, q := range double.QAbsmax {
		want := float32(m[q]*double.AbsmaxScale[b/256]) + double.Offset
		if got[b] != want {
			t.Fatalf("block %d decoded %v, want %v", b, got[b], want)
		}
	}
}

func TestDoubleAllEqualAbsmax(t *testing.T) {
	// Every block has absmax 2: absmax-offset is all zero, the 256-group
	// scale is 0, and decoding gives exactly the offset back.
	w := make([]float32, 64*10)
	for i := range w {
		w[i] = float32(i%5) - 2
	}
	q := mustQuantize(t, w, Options{Double: true})
	for b, a := range q.BlockAbsmax() {
		if a != 2 {
			t.Fatalf("block %d absmax %v", b, a)
		}
	}
	checkBound(t, w, q)
}
