package sim

import (
	"strings"
	"testing"
)

func TestParseSignature(t *testing.T) {
	src := `#include <metal_stdlib>
using namespace metal;
namespace ops {
[[max_total_threads_per_threadgroup(128)]]
kernel void scale(device float* out [[buffer(2)]],
                  constant float& s [[buffer(0)]],
                  device const half4* in [[ buffer(1) ]],
                  uint2 gid [[thread_position_in_grid]],
                  ushort lane [[thread_index_in_simdgroup]]) {
    out[gid.x] = s * float(in[gid.x].x);
}
}
[[kernel]] void other(device uint* x [[buffer(0)]]) { x[0] = 1; }
`
	p, err := parseProgram(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.kernels) != 2 {
		t.Fatalf("found %d kernels, want 2", len(p.kernels))
	}
	k := p.kernels[0]
	if k.name != "scale" || k.qual != "::ops::scale" || k.maxThreads != 128 || k.nbuf != 3 || k.fibers || k.line != 5 {
		t.Errorf("kernel = %+v", *k)
	}
	want := []param{
		{name: "out", typ: "device float*", space: "device", attr: "buffer", index: 2, line: 5},
		{name: "s", typ: "constant float&", space: "constant", attr: "buffer", index: 0, line: 6},
		{name: "in", typ: "device const half4*", space: "device", attr: "buffer", index: 1, line: 7},
		{name: "gid", typ: "uint2", attr: "thread_position_in_grid", index: -1, line: 8},
		{name: "lane", typ: "ushort", attr: "thread_index_in_simdgroup", index: -1, line: 9},
	}
	for i, w := range want {
		if k.params[i] != w {
			t.Errorf("param %d = %+v, want %+v", i, k.params[i], w)
		}
	}
	if p.kernels[1].qual != "::other" {
		t.Errorf("[[kernel]] other: %+v", *p.kernels[1])
	}
	if !strings.Contains(p.source, "kernel void other(") {
		t.Errorf("[[kernel]] was not rewritten:\n%s", p.source)
	}
}

func TestRewriteKeepsLines(t *testing.T) {
	src := `kernel void k(device float* x [[buffer(0)]], constant const float* c [[buffer(1)]],
              uint i [[thread_position_in_threadgroup]]) {
    threadgroup float a[16], b[4];
    threadgroup float* p = a;   // a pointer: thread-private
    {
        threadgroup int inner[8];
        inner[i] = 0;
    }
    threadgroup alignas(16) half c2[2];
    p[i] = x[i];
}
`
	p, err := parseProgram(src)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(p.source, "\n")
	if len(got) != len(strings.Split(src, "\n")) {
		t.Fatalf("line count changed:\n%s", p.source)
	}
	checks := map[int]string{
		0: "constant const float*", // `constant` dropped before const
		2: "typedef float magc_tgt_0_0[16]; constexpr unsigned long magc_tgoff_0_0 = magc_sim::tg_align<magc_tgt_0_0, 1>(0UL); " +
			"magc_tgt_0_0& a = *(magc_tgt_0_0*)(magc_sim::tg_base() + magc_tgoff_0_0); " +
			"constexpr unsigned long magc_tgmem_0_0 = magc_tgoff_0_0 + sizeof(magc_tgt_0_0); magc_sim::tg_limit<magc_tgmem_0_0>();" +
			"typedef float magc_tgt_0_1[4]; constexpr unsigned long magc_tgoff_0_1 = magc_sim::tg_align<magc_tgt_0_1, 1>(magc_tgmem_0_0);",
		3: "    threadgroup float* p = a;",
		5: "magc_sim::tg_align<magc_tgt_0_2, 1>(magc_tgmem_0_1)",
		8: "typedef half magc_tgt_0_3[2]; constexpr unsigned long magc_tgoff_0_3 = magc_sim::tg_align<magc_tgt_0_3, (16)>(magc_tgmem_0_1)",
	}
	for line, want := range checks {
		if line == 0 {
			if strings.Contains(got[0], want) || !strings.Contains(got[0], "  const float* c") {
				t.Errorf("line 1: %q", got[0])
			}
			continue
		}
		if !strings.Contains(got[line], want) {
			t.Errorf("line %d: %q\nwant it to contain %q", line+1, got[line], want)
		}
	}
}

func TestSyncDetection(t *testing.T) {
	src := `#include <metal_stdlib>
using namespace metal;
#define SYNC() threadgroup_barrier(mem_flags::mem_threadgroup)
static float reduce(float v) { return simd_sum(v); }
static float twice(float v) { return reduce(v) * 2; }
static float plain(float v) { return v + 1; }
kernel void a(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i] = plain(x[i]); }
kernel void b(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i] = twice(x[i]); }
kernel void c(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { SYNC(); }
kernel void d(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { simdgroup_barrier(mem_flags::mem_none); }
#if 0
kernel void gone(device float* x [[buffer(0)]]) {}
#endif
`
	p, err := parseProgram(src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"a": false, "b": true, "c": true, "d": true}
	if len(p.kernels) != len(want) {
		t.Fatalf("found %d kernels, want %d", len(p.kernels), len(want))
	}
	for _, k := range p.kernels {
		if k.fibers != want[k.name] {
			t.Errorf("kernel %s: fibers = %v, want %v", k.name, k.fibers, want[k.name])
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"kernel void k(device float* x) {}", "kernels.metal:1: kernel k: parameter x needs an attribute"},
		{"kernel void k(device float* x [[buffer(31)]]) {}", "index from 0 to 30"},
		{"kernel void k(float x [[buffer(0)]]) {}", "must be in the device or constant address space"},
		{"kernel void k(device float* x [[buffer(0)]], device float* y [[buffer(0)]]) {}", "both use [[buffer(0)]]"},
		{"kernel void k(device float* x [[buffer(0)]], uint q [[thread_index_in_quadgroup]]) {}", "[[thread_index_in_quadgroup]] (quad-groups) is not supported"},
		{"kernel void k(device float* x [[buffer(0)]], uint q [[foo]]) {}", "attribute [[foo]] is not supported"},
		{"constant bool f [[function_constant(0)]];", "[[function_constant(n)]] (function constants) is not supported"},
		{"vertex float4 v(uint id [[vertex_id]]) { return 0; }", "kernels.metal:1: magc sim: [[vertex_id]] (vertex functions) is not supported"},
		{"struct S { kernel void k(device float* x [[buffer(0)]]) {} };", "must be declared at namespace scope"},
		{"kernel void k(device float* x [[buffer(0)]]) {}\nkernel void k(device float* y [[buffer(0)]]) {}", "kernel k is defined twice"},
		{"kernel void k(device float* x [[buffer(0)]]) {\n", "kernels.metal:1: '{' is never closed"},
		{"#define TG threadgroup float t[4];\nkernel void k(device float* x [[buffer(0)]]) { TG }", "inside #define TG is not supported"},
		{"kernel void k(device float* x [[buffer(0)]]) {\n  threadgroup float (t)[4];\n}", "kernels.metal:2: magc sim: cannot read this threadgroup declaration"},
	}
	for _, c := range cases {
		_, err := parseProgram(c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\ngot %v\nwant %q", c.src, err, c.want)
		}
	}
}
