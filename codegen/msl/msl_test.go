package msl

import (
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
