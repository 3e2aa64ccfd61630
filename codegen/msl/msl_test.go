package msl

import (
	"math"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen/kir"
)

// TestLaunchBound: every kernel carries its threadgroup size as
// max_total_threads_per_threadgroup, on the line before `kernel`.
func TestLaunchBound(t *testing.T) {
	k := &kir.Kernel{Name: "k", Threads: [3]int{8, 4, 2}, Groups: [3]int{1, 1, 1},
		Params: []kir.Param{{Name: "p0", Elem: kir.F32}},
		Body:   []kir.Stmt{kir.Set(kir.At("p0", kir.Local(0)), kir.F(1))}}
	src, err := RenderKernel(k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(src, "[[max_total_threads_per_threadgroup(64)]]\nkernel void k(\n") {
		t.Errorf("no launch bound of 64 before the kernel:\n%s", src)
	}
}

// TestIfParentheses: an if's condition has one pair of parentheses (Apple's
// compiler warns on if ((a == b))); else-if chains too.
func TestIfParentheses(t *testing.T) {
	eq := kir.Op("==", kir.Local(0), kir.I(0))
	k := &kir.Kernel{Name: "k", Threads: [3]int{32, 1, 1}, Groups: [3]int{1, 1, 1},
		Params: []kir.Param{{Name: "p0", Elem: kir.F32}},
		Body: []kir.Stmt{kir.If{Cond: eq, Then: []kir.Stmt{kir.Return{}},
			Else: []kir.Stmt{kir.If{Cond: kir.Not{X: eq}, Then: []kir.Stmt{kir.Set(kir.At("p0", kir.I(0)), kir.F(1))}}}}}}
	src, err := RenderKernel(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"    if (int(lid.x) == 0) {\n", "    } else if (!(int(lid.x) == 0)) {\n"} {
		if !strings.Contains(src, want) {
			t.Errorf("want %q in:\n%s", want, src)
		}
	}
}

// TestBarrierFences: a barrier fences device memory only where the kernel
// IR marks a device-memory exchange.
func TestBarrierFences(t *testing.T) {
	k := &kir.Kernel{Name: "k", Threads: [3]int{32, 1, 1}, Groups: [3]int{1, 1, 1},
		Body: []kir.Stmt{kir.Barrier{}, kir.Barrier{Device: true}}}
	src, err := RenderKernel(k)
	if err != nil {
		t.Fatal(err)
	}
	want := "    threadgroup_barrier(mem_flags::mem_threadgroup);\n" +
		"    threadgroup_barrier(mem_flags::mem_threadgroup | mem_flags::mem_device);\n"
	if !strings.Contains(src, want) {
		t.Errorf("want\n%s\nin:\n%s", want, src)
	}
}

// TestTypedLiterals: half and bfloat literals are spelled as conversions,
// infinities included; f32 literals carry their suffix.
func TestTypedLiterals(t *testing.T) {
	k := &kir.Kernel{Name: "k", Threads: [3]int{1, 1, 1}, Groups: [3]int{1, 1, 1},
		Params: []kir.Param{{Name: "h", Elem: kir.F16}, {Name: "b", Elem: kir.BF16}, {Name: "f", Elem: kir.F32}},
		Body: []kir.Stmt{
			kir.Set(kir.At("h", kir.I(0)), kir.Lit{Type: kir.F16, V: 1}),
			kir.Set(kir.At("b", kir.I(0)), kir.Lit{Type: kir.BF16, V: math.Inf(-1)}),
			kir.Set(kir.At("f", kir.I(0)), kir.F(2)),
		}}
	src, err := RenderKernel(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"h[0] = half(1.0f);", "b[0] = bfloat((-INFINITY));", "f[0] = 2.0f;"} {
		if !strings.Contains(src, want) {
			t.Errorf("want %q in:\n%s", want, src)
		}
	}
}
