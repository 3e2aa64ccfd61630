package sim_test

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
)

// compilers are the C++ compilers to test with: $CXX if set, else each of
// g++ and clang++ found on PATH.
func compilers(t testing.TB) []string {
	if cxx := os.Getenv("CXX"); cxx != "" {
		return []string{cxx}
	}
	var out []string
	for _, c := range []string{"g++", "clang++"} {
		if _, err := exec.LookPath(c); err == nil {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		t.Skip("no C++ compiler on PATH (set $CXX)")
	}
	return out
}

// forEachCompiler runs f as a subtest per compiler, with a fresh device.
func forEachCompiler(t *testing.T, f func(t *testing.T, d *sim.Device)) {
	for _, cxx := range compilers(t) {
		t.Run(filepath.Base(strings.Fields(cxx)[0]), func(t *testing.T) {
			d := sim.New(sim.WithCompiler(cxx))
			t.Cleanup(func() { d.Close() })
			f(t, d)
		})
	}
}

func readTestdata(t testing.TB, name string) string {
	src, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func kernel(t testing.TB, d device.Device, file, name string) device.Kernel {
	t.Helper()
	lib, err := d.Compile(readTestdata(t, file))
	if err != nil {
		t.Fatal(err)
	}
	k, err := lib.Kernel(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func alloc(t testing.TB, d device.Device, data []byte) device.Buffer {
	t.Helper()
	b, err := d.Alloc(int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(b, 0, data); err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t testing.TB, d device.Device, b device.Buffer) []byte {
	t.Helper()
	out := make([]byte, b.Len())
	if err := d.Read(b, 0, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func dispatch(t testing.TB, d device.Device, k device.Kernel, groups, threads [3]int, args ...device.Arg) {
	t.Helper()
	if err := d.Dispatch(k, groups, threads, args); err != nil {
		t.Fatal(err)
	}
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func u32bytes(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func bytesU32(b []byte) []uint32 {
	v := make([]uint32, len(b)/4)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return v
}

func u16bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

func bytesU16(b []byte) []uint16 {
	v := make([]uint16, len(b)/2)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return v
}

// f16Bits converts to IEEE binary16 with round to nearest even: the
// reference for the shim's half.
func f16Bits(f float32) uint16 {
	sign := uint16(math.Float32bits(f)>>16) & 0x8000
	if f != f {
		return sign | 0x7e00
	}
	a := math.Abs(float64(f))
	if math.IsInf(a, 0) {
		return sign | 0x7c00
	}
	e := -14 // exponent of the half's ulp scale, subnormals included
	if a >= math.Ldexp(1, -14) {
		_, exp := math.Frexp(a)
		e = exp - 1
	}
	ulp := math.Ldexp(1, e-10)
	r := math.RoundToEven(a/ulp) * ulp
	if r >= 65536 {
		return sign | 0x7c00
	}
	if r < math.Ldexp(1, -14) {
		return sign | uint16(r/math.Ldexp(1, -24))
	}
	_, exp := math.Frexp(r)
	e = exp - 1
	mant := (r/math.Ldexp(1, e) - 1) * 1024
	return sign | uint16(e+15)<<10 | uint16(mant)
}

func f16Float(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>10) & 0x1f
	m := float64(h & 0x3ff)
	switch e {
	case 0:
		return sign * float32(math.Ldexp(m, -24))
	case 31:
		if m != 0 {
			return float32(math.NaN())
		}
		return sign * float32(math.Inf(1))
	}
	return sign * float32(math.Ldexp(1+m/1024, e-15))
}

func close32(a, b, tol float32) bool {
	if a == b {
		return true
	}
	d := math.Abs(float64(a - b))
	return d <= float64(tol)*math.Max(1, math.Max(math.Abs(float64(a)), math.Abs(float64(b))))
}
