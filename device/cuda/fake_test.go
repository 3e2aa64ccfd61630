//go:build linux && (amd64 || arm64)

package cuda

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed testdata/fakecuda.c
var fakeCUDA string

// fakeNVCC writes a cubin the fake driver accepts, and rejects a source
// that uses undefined_thing as nvcc would.
const fakeNVCC = `#!/bin/sh
if [ "$1" = --version ]; then echo "fake nvcc 0.1"; exit 0; fi
out=; src=
while [ $# -gt 0 ]; do
	case "$1" in -o) out=$2; shift ;; *.cu) src=$1 ;; esac
	shift
done
line=$(grep -n undefined_thing "$src" | cut -d: -f1)
if [ -n "$line" ]; then
	echo "$src($line): error: identifier \"undefined_thing\" is undefined" >&2
	echo "1 error detected in the compilation of \"$src\"." >&2
	exit 1
fi
printf FAKECUBIN > "$out"
`

// TestFakeDriver runs the device against testdata/fakecuda.c, a libcuda
// stand-in built with the C compiler ($CC, else cc), and the fake nvcc
// above: the driver bindings, argument passing, per-thread contexts,
// errors, profiling and freeing are checked without a GPU.
func TestFakeDriver(t *testing.T) {
	dir := t.TempDir()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	src, lib, nvcc := filepath.Join(dir, "fakecuda.c"), filepath.Join(dir, "libfakecuda.so"), filepath.Join(dir, "nvcc")
	if err := os.WriteFile(src, []byte(fakeCUDA), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nvcc, []byte(fakeNVCC), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("building the fake driver with %s (a C compiler is needed): %v\n%s", cc, err, out)
	}
	defer func(name string) { libName = name }(libName)
	libName = lib
	h, err := dlopen(lib)
	if err != nil {
		t.Fatal(err)
	}
	var state func(allocs, modules, events, refs *int32)
	var reset func()
	if err := bind(h, "fake_state", &state); err != nil {
		t.Fatal(err)
	}
	if err := bind(h, "fake_reset", &reset); err != nil {
		t.Fatal(err)
	}

	testDevice(t, WithNVCC(nvcc))
	var allocs, modules, events, refs int32
	state(&allocs, &modules, &events, &refs)
	if allocs != 0 || modules != 0 || events != 0 || refs != 0 {
		t.Errorf("after Close: %d allocations, %d modules, %d events, %d context references left", allocs, modules, events, refs)
	}

	if got := faultMessage(t, WithNVCC(nvcc)); got != wantFaultAsync {
		t.Errorf("fault:\n got %s\nwant %s", got, wantFaultAsync)
	}
	reset()
	t.Setenv("MAGC_CUDA_SYNC", "1")
	if got := faultMessage(t, WithNVCC(nvcc)); got != wantFaultSync {
		t.Errorf("fault with MAGC_CUDA_SYNC=1:\n got %s\nwant %s", got, wantFaultSync)
	}
	reset()
	d, err := New(WithNVCC(filepath.Join(dir, "no-nvcc")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Compile(testSrc); err == nil || !strings.Contains(err.Error(), "no-nvcc") {
		t.Errorf("Compile with a missing nvcc: %v", err)
	}
}
