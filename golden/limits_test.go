package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/plan"
)

// Limits a Metal compiler or device checks and the sim cannot: the sim
// runs any number of buffers, has no double to refuse, and a launch bound
// it enforces only when the dispatch exceeds it.
const (
	metalMaxBuffers  = 31       // buffer argument table entries
	metalMaxTgMemory = 32 << 10 // threadgroup memory per kernel, Apple GPUs
)

var (
	mslComment  = regexp.MustCompile(`//[^\n]*`)
	mslKernel   = regexp.MustCompile(`(?m)^kernel void (\w+)\(`)
	mslBound    = regexp.MustCompile(`(?m)^\[\[max_total_threads_per_threadgroup\((\d+)\)\]\]\nkernel void (\w+)\(`)
	mslBuffer   = regexp.MustCompile(`\[\[buffer\((\d+)\)\]\]`)
	mslShared   = regexp.MustCompile(`threadgroup (\w+) \w+\[(\d+)\];`)
	mslDouble   = regexp.MustCompile(`\bdouble\b`)
	mslTypeSize = map[string]int{"float": 4, "int": 4, "uint": 4, "half": 2, "bfloat": 2, "short": 2, "ushort": 2, "uchar": 1, "char": 1, "bool": 1}
)

// mslLimits parses a module's source and returns each kernel's launch
// bound, reporting what Metal would refuse.
func mslLimits(report func(format string, args ...any), name, src string) map[string]int {
	code := mslComment.ReplaceAllString(src, "")
	if mslDouble.MatchString(code) {
		report("%s: uses double, which Metal does not have", name)
	}
	bounds := map[string]int{}
	for _, m := range mslBound.FindAllStringSubmatch(code, -1) {
		bounds[m[2]], _ = strconv.Atoi(m[1])
	}
	starts := mslKernel.FindAllStringSubmatchIndex(code, -1)
	if len(starts) == 0 {
		report("%s: no kernels", name)
	}
	for i, s := range starts {
		k := code[s[2]:s[3]]
		end := len(code)
		if i+1 < len(starts) {
			end = starts[i+1][0]
		}
		body := code[s[0]:end]
		if n, ok := bounds[k]; !ok || n < 1 || n > 1024 {
			report("%s: kernel %s has no [[max_total_threads_per_threadgroup(n)]] with 1 ≤ n ≤ 1024", name, k)
		}
		bufs := 0
		for _, b := range mslBuffer.FindAllStringSubmatch(body, -1) {
			n, _ := strconv.Atoi(b[1])
			bufs = max(bufs, n+1)
		}
		if bufs > metalMaxBuffers {
			report("%s: kernel %s binds %d buffers, over Metal's %d", name, k, bufs, metalMaxBuffers)
		}
		// Every threadgroup array counts: Metal gives each its own memory.
		bytes := 0
		for _, sh := range mslShared.FindAllStringSubmatch(body, -1) {
			size, ok := mslTypeSize[sh[1]]
			if !ok {
				report("%s: kernel %s: threadgroup array of unknown type %s", name, k, sh[1])
			}
			n, _ := strconv.Atoi(sh[2])
			bytes += size * n
		}
		if bytes > metalMaxTgMemory {
			report("%s: kernel %s declares %d bytes of threadgroup memory, over %d", name, k, bytes, metalMaxTgMemory)
		}
	}
	return bounds
}

// checkDispatches reports where a plan launches a kernel with a threadgroup
// other than the kernel's launch bound (Metal refuses a larger one; a
// smaller one would waste the registers the bound reserved).
func checkDispatches(report func(format string, args ...any), name string, bounds map[string]int, p *plan.Plan) {
	vol := func(d [3]int) int { return d[0] * d[1] * d[2] }
	for _, k := range p.Kernels {
		if n, ok := bounds[k.Name]; !ok || n != vol(k.Threads) {
			report("%s: kernel %s: plan threads %v, launch bound %d", name, k.Name, k.Threads, n)
		}
	}
	for i, d := range p.Dispatches {
		if n, ok := bounds[d.Kernel]; !ok || n != vol(d.Threads) {
			report("%s: dispatch %d of %s: threads %v, launch bound %d", name, i, d.Kernel, d.Threads, n)
		}
	}
}

// TestMetalLimits checks every module magc emits in its tests, and the
// Metal goldens, for what a Metal compiler or device would refuse and the
// sim cannot see: at most 31 buffers and 32 KiB of threadgroup memory per
// kernel, no double, and a launch bound on every kernel equal to the
// threadgroup every dispatch of it uses.
func TestMetalLimits(t *testing.T) {
	type model struct {
		name, mode string
		load       func() (*ir.Graph, error)
	}
	var models []model
	for _, p := range patterns {
		models = append(models, model{p.name, p.mode, func() (*ir.Graph, error) {
			return lang.Build(p.name+".graph", []byte(p.src), lang.Options{ReadFile: readModelFile})
		}})
	}
	file := func(name, mode string) model {
		return model{name + "_" + mode, mode, func() (*ir.Graph, error) { return lang.Load("../models/"+name+".graph", lang.Options{}) }}
	}
	models = append(models, file("tiny", "full"), file("tiny", "qlora"), file("phase1", "full"), file("scm3b", "qlora"))
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			g, err := m.load()
			if err != nil {
				t.Fatal(err)
			}
			chunk := int64(0)
			for _, p := range patterns {
				if p.name == m.name {
					chunk = p.chunk
				}
			}
			c := compileTrainStep(t, g, m.mode, chunk)
			checkDispatches(t.Errorf, m.name, mslLimits(t.Errorf, m.name, c.msl), c.u.Plan)
		})
	}
	files, err := filepath.Glob("msl/*.metal")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Metal goldens: %v", err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		mslLimits(t.Errorf, f, string(src))
	}
}

// TestMetalLimitsCatch: the checks find each thing they look for.
func TestMetalLimitsCatch(t *testing.T) {
	var bufs []string
	for i := range 32 {
		bufs = append(bufs, fmt.Sprintf("device float* p%d [[buffer(%d)]]", i, i))
	}
	const bound = "[[max_total_threads_per_threadgroup(32)]]\n"
	cases := map[string]string{
		"has no [[max_total_threads_per_threadgroup": "kernel void a(\n device float* p [[buffer(0)]]) {\n}\n",
		"binds 32 buffers":                           bound + "kernel void a(\n" + strings.Join(bufs, ",\n") + ") {\n}\n",
		"declares 32772 bytes of threadgroup memory": bound + "kernel void a(\n device float* p [[buffer(0)]]) {\n" +
			"    threadgroup float x[4096];\n    threadgroup half y[8192];\n    threadgroup int z[1];\n}\n",
		"uses double": bound + "kernel void a(\n device float* p [[buffer(0)]]) {\n    double d = 1;\n}\n",
	}
	for want, src := range cases {
		var got []string
		report := func(format string, args ...any) { got = append(got, fmt.Sprintf(format, args...)) }
		mslLimits(report, "m", src)
		if len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("errors %q, want one about %q", got, want)
		}
	}
	// A comment may say double; a dispatch must match the bound.
	var got []string
	report := func(format string, args ...any) { got = append(got, fmt.Sprintf(format, args...)) }
	bounds := mslLimits(report, "m", "// double-quantised\n"+bound+"kernel void a(\n device float* p [[buffer(0)]]) {\n}\n")
	checkDispatches(report, "m", bounds, &plan.Plan{
		Kernels:    []plan.Kernel{{Name: "a", Threads: [3]int{32, 1, 1}}},
		Dispatches: []plan.Dispatch{{Kernel: "a", Threads: [3]int{32, 1, 1}}, {Kernel: "a", Threads: [3]int{64, 1, 1}}},
	})
	if len(got) != 1 || !strings.Contains(got[0], "dispatch 1 of a: threads [64 1 1], launch bound 32") {
		t.Errorf("errors %q, want one about dispatch 1", got)
	}
}
