package cuda

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// requireGPU skips the test where no CUDA device can be opened, unless
// MAGC_REQUIRE_CUDA=1 (set on the GPU machine) makes that a failure.
func requireGPU(t *testing.T) {
	t.Helper()
	d, err := New()
	if err == nil {
		d.Close()
		return
	}
	if os.Getenv("MAGC_REQUIRE_CUDA") == "1" {
		t.Fatalf("MAGC_REQUIRE_CUDA=1, but: %v", err)
	}
	t.Skipf("no CUDA device here (%v): the GPU tests run where libcuda.so.1 and a GPU are (MAGC_REQUIRE_CUDA=1 makes this a failure)", err)
}

// TestGPU runs the test module on the real GPU with the real nvcc.
func TestGPU(t *testing.T) {
	requireGPU(t)
	testDevice(t)
}

// TestGPUFault checks how a fault is reported, in a child process: a fault
// poisons the CUDA context for the rest of the process.
func TestGPUFault(t *testing.T) {
	if os.Getenv("MAGC_CUDA_FAULT_CHILD") == "1" {
		fmt.Printf("FAULT: %s\n", faultMessage(t))
		return
	}
	requireGPU(t)
	for _, c := range []struct{ sync, want string }{{"0", wantFaultAsync}, {"1", wantFaultSync}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGPUFault$", "-test.count=1")
		cmd.Env = append(os.Environ(), "MAGC_CUDA_FAULT_CHILD=1", "MAGC_CUDA_SYNC="+c.sync)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "FAULT: "+c.want+"\n") {
			t.Errorf("MAGC_CUDA_SYNC=%s: want %q in the child's output:\n%s", c.sync, c.want, out)
		}
	}
}
