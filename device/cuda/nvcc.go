package cuda

import (
	"github.com/scm-magellano/magc/device"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// userFile is the name nvcc and diagnostics give the source.
const userFile = "kernels.cu"

// nvccFlags follow -arch=sm_XY on nvcc's command line. -lineinfo lets
// compute-sanitizer and ncu name source lines.
var nvccFlags = []string{"-cubin", "-O3", "-lineinfo"}

// nvccRuns counts nvcc invocations, so tests can see a cache hit.
var nvccRuns atomic.Int64

// compiler is one nvcc, identified by its version output.
type compiler struct {
	path, version string
}

var compilers sync.Map // path -> *compiler

// findNVCC returns the nvcc to use: the explicit one, else $CUDA_HOME/bin,
// $PATH, /usr/local/cuda/bin, in that order.
func findNVCC(explicit string) (*compiler, error) {
	var path string
	if explicit != "" {
		p, err := exec.LookPath(explicit)
		if err != nil {
			return nil, fmt.Errorf("cuda: nvcc %q: %v", explicit, err)
		}
		path = p
	} else {
		var cands []string
		if home := os.Getenv("CUDA_HOME"); home != "" {
			cands = append(cands, filepath.Join(home, "bin", "nvcc"))
		}
		if p, err := exec.LookPath("nvcc"); err == nil {
			cands = append(cands, p)
		}
		cands = append(cands, "/usr/local/cuda/bin/nvcc")
		for _, c := range cands {
			if st, err := os.Stat(c); err == nil && !st.IsDir() {
				path = c
				break
			}
		}
		if path == "" {
			return nil, errors.New("cuda: nvcc not found (looked in $CUDA_HOME/bin, $PATH and /usr/local/cuda/bin): install the CUDA toolkit or set CUDA_HOME")
		}
	}
	if c, ok := compilers.Load(path); ok {
		return c.(*compiler), nil
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("cuda: %s --version: %v\n%s", path, err, out)
	}
	c, _ := compilers.LoadOrStore(path, &compiler{path: path, version: string(out)})
	return c.(*compiler), nil
}

// key names the cubin of src for arch ("sm_90"): everything that changes
// nvcc's output is hashed.
func (c *compiler) key(src, arch string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%q\x00", c.version, arch, nvccFlags)
	h.Write([]byte(src))
	return hex.EncodeToString(h.Sum(nil))
}

// cubin returns the compiled module: from dir when cached, else built by
// nvcc and stored there.
func (c *compiler) cubin(src, arch, dir, key string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cuda: cache directory: %v", err)
	}
	cached := filepath.Join(dir, key+".cubin")
	if b, err := os.ReadFile(cached); err == nil && len(b) > 0 {
		return b, nil
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return nil, fmt.Errorf("cuda: %v", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, userFile), []byte(src), 0o644); err != nil {
		return nil, fmt.Errorf("cuda: %v", err)
	}
	args := append([]string{"-arch=" + arch}, nvccFlags...)
	args = append(args, "-o", "kernels.cubin", userFile)
	cmd := exec.Command(c.path, args...)
	cmd.Dir = tmp
	var msgs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msgs, &msgs
	nvccRuns.Add(1)
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("cuda: running %s: %v", c.path, err)
		}
		return nil, newCompileError(src, strings.ReplaceAll(msgs.String(), tmp+"/", ""))
	}
	out := filepath.Join(tmp, "kernels.cubin")
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("cuda: nvcc wrote no cubin: %v", err)
	}
	// Publish atomically: another process may be building the same module.
	if err := os.Rename(out, cached); err != nil {
		return nil, fmt.Errorf("cuda: caching the cubin: %v", err)
	}
	return b, nil
}

var (
	// kernels.cu(12): error: identifier "x" is undefined
	// kernels.cu(3): catastrophic error: cannot open source file "y.h"
	nvccLocRE = regexp.MustCompile(`^(?:.*/)?` + regexp.QuoteMeta(userFile) + `\((\d+)\): (?:catastrophic )?error(?: #[\w-]+)?: (.*)$`)
	// ptxas error   : Entry function 'k' uses too much shared data (...)
	nvccToolRE = regexp.MustCompile(`^(?:ptxas|nvcc|nvlink)\s+(?:fatal|error)\s*:`)
)

// newCompileError picks nvcc's errors out of its output (warnings and the
// caret lines are left in Output) and attaches the offending source lines.
func newCompileError(src, output string) *device.CompileError {
	lines := strings.Split(src, "\n")
	e := &device.CompileError{Who: "cuda: nvcc", File: userFile, Output: output}
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimRight(l, "\r")
		if m := nvccLocRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			d := device.Diagnostic{Line: n, Msg: m[2]}
			if n >= 1 && n <= len(lines) {
				d.Source = strings.TrimRight(lines[n-1], "\r")
			}
			e.Diagnostics = append(e.Diagnostics, d)
		} else if nvccToolRE.MatchString(l) {
			e.Diagnostics = append(e.Diagnostics, device.Diagnostic{Msg: strings.TrimSpace(l)})
		}
	}
	return e
}

// signatureRE matches a kernel of the ABI codegen/cuda emits:
// extern "C" __global__ void __launch_bounds__(T) name(float* p0, ...).
var signatureRE = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)`)

// kernelParams counts each kernel's parameters, so a dispatch with the wrong
// number of arguments is refused rather than reading garbage. Kernels
// declared otherwise are absent and go unchecked.
func kernelParams(src string) map[string]int {
	m := map[string]int{}
	for _, s := range signatureRE.FindAllStringSubmatch(src, -1) {
		p := strings.TrimSpace(s[2])
		switch {
		case p == "" || p == "void":
			m[s[1]] = 0
		default:
			m[s[1]] = strings.Count(p, ",") + 1
		}
	}
	return m
}
