package ir

import (
	"strings"
	"testing"
)

func tinyGraph(t *testing.T) *Graph {
	t.Helper()
	b := NewBuilder("t")
	x := b.Input("x", T(F32, 2, 3))
	w := b.Param(Param{Name: "w", Role: Trainable, Init: Init{Kind: "zeros"}}, T(F32, 4, 3))
	b.Pos = Pos{File: "t.graph", Line: 3, Col: 5}
	y := b.Matmul(x, w, false, true)
	b.Output("y", b.Unary(OpSiLU, y))
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestBuilderInfersTypes(t *testing.T) {
	g := tinyGraph(t)
	if got := g.Output("y").Value.Type; !got.Equal(T(F32, 2, 4)) {
		t.Fatalf("y has type %v", got)
	}
}

func TestBuilderErrorsAreStickyAndPositioned(t *testing.T) {
	b := NewBuilder("t")
	x := b.Input("x", T(F32, 2, 3))
	b.Pos = Pos{File: "f.graph", Line: 7, Col: 2}
	y := b.Matmul(x, x, false, false) // inner dims 3 vs 2
	z := b.Unary(OpExp, y)            // must not panic on the placeholder
	_ = z
	err := b.Err()
	if err == nil || !strings.HasPrefix(err.Error(), "f.graph:7:2: matmul: matmul inner dimensions differ") {
		t.Fatalf("got %v", err)
	}
	if _, err := b.Finish(); err == nil {
		t.Fatal("Finish must return the error")
	}
}

// The verifier must catch each kind of corruption a buggy pass could make.
func TestVerifyCatchesCorruption(t *testing.T) {
	cases := map[string]func(g *Graph){
		"wrong type":     func(g *Graph) { g.Nodes[2].Outputs[0].Type = T(F32, 2, 5) },
		"use before def": func(g *Graph) { g.Nodes[0], g.Nodes[2] = g.Nodes[2], g.Nodes[0]; g.Nodes[0].ID, g.Nodes[2].ID = 0, 2 },
		"unknown op":     func(g *Graph) { g.Nodes[3].Op = "frobnicate" },
		"bad attr":       func(g *Graph) { g.Nodes[2].Attrs = Attrs{"tb": 1} },
		"dangling out":   func(g *Graph) { g.Outputs[0].Value = &Value{ID: 99} },
		"nf4 role":       func(g *Graph) { g.Params[0].Role = FrozenNF4 },
		"duplicate id":   func(g *Graph) { g.Nodes[3].Outputs[0].ID = g.Nodes[2].Outputs[0].ID },
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			g := tinyGraph(t)
			if err := Verify(g); err != nil {
				t.Fatal(err)
			}
			corrupt(g)
			if err := Verify(g); err == nil {
				t.Fatal("verifier accepted a corrupt graph")
			}
		})
	}
	g := tinyGraph(t)
	g.Nodes[2].Outputs[0].Type = T(F32, 9)
	if err := Verify(g); err == nil || !strings.HasPrefix(err.Error(), "t.graph:3:5:") {
		t.Fatalf("verifier error lacks the op's position: %v", err)
	}
}

func TestPrintIsDeterministic(t *testing.T) {
	want := `graph t {
  %0 = input {name="x"} : f32[2,3]
  %1 = param {name="w"} : f32[4,3] trainable init=zeros
  %2 = matmul %0, %1 {ta=false, tb=true} : f32[2,4]
  %3 = silu %2 : f32[2,4]
  output y = %3
}
`
	for i := 0; i < 3; i++ {
		if got := tinyGraph(t).String(); got != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	}
}

func TestShapeRules(t *testing.T) {
	f := func(s ...int) Type { return T(F32, s...) }
	i := func(s ...int) Type { return T(I32, s...) }
	ok := []struct {
		op   Op
		a    Attrs
		in   []Type
		want []Type
	}{
		{OpMatmul, Attrs{"ta": true}, []Type{f(5, 3, 2), f(5, 3, 4)}, []Type{f(5, 2, 4)}},
		{OpMatmul, nil, []Type{f(5, 2, 3), f(3, 4)}, []Type{f(5, 2, 4)}},
		{OpReduceSum, Attrs{"axes": []int{0, 2}, "keep": true}, []Type{f(2, 3, 4)}, []Type{f(1, 3, 1)}},
		{OpBroadcast, Attrs{"shape": []int{2, 3, 4}}, []Type{f(3, 1)}, []Type{f(2, 3, 4)}},
		{OpTranspose, Attrs{"perm": []int{2, 0, 1}}, []Type{f(2, 3, 4)}, []Type{f(4, 2, 3)}},
		{OpConcat, Attrs{"axis": 1}, []Type{f(2, 3), f(2, 5)}, []Type{f(2, 8)}},
		{OpGather, nil, []Type{f(10, 4), i(2, 3)}, []Type{f(2, 3, 4)}},
		{OpScatter, Attrs{"rows": 10}, []Type{i(6), f(6, 4)}, []Type{f(10, 4)}},
		{OpTopK, Attrs{"k": 2}, []Type{f(7, 8)}, []Type{f(7, 2), i(7, 2)}},
		{OpMoERoute, Attrs{"experts": 8}, []Type{i(7, 2)}, []Type{i(14), i(14), i(9)}},
		{OpGroupedMM, Attrs{"tb": true}, []Type{f(14, 4), f(8, 6, 4), i(9)}, []Type{f(14, 6)}},
		{OpGroupedMMW, nil, []Type{f(14, 6), f(14, 4), i(9)}, []Type{f(8, 6, 4)}},
		{OpScan, Attrs{"chunk": 4}, []Type{f(2, 9, 5), f(2, 9, 5), f(5, 3), f(2, 9, 3), f(2, 9, 3), f(5)}, []Type{f(2, 9, 5), f(2, 3, 5, 3)}},
		{OpDequant, nil, []Type{T(NF4, 4, 64)}, []Type{f(4, 64)}},
		{OpCrossEntropy, nil, []Type{f(2, 3, 9), i(2, 3)}, []Type{f()}},
	}
	for _, c := range ok {
		d, _ := Lookup(c.op)
		a, err := normalize(c.op, d.Attrs, c.a)
		if err != nil {
			t.Fatalf("%s: %v", c.op, err)
		}
		got, err := d.Infer(c.in, a)
		if err != nil {
			t.Fatalf("%s: %v", c.op, err)
		}
		if len(got) != len(c.want) || len(got) != d.NumResults() {
			t.Fatalf("%s: %v, want %v", c.op, got, c.want)
		}
		for k := range got {
			if !got[k].Equal(c.want[k]) {
				t.Fatalf("%s: output %d is %v, want %v", c.op, k, got[k], c.want[k])
			}
		}
	}
	bad := []struct {
		op Op
		a  Attrs
		in []Type
	}{
		{OpAdd, nil, []Type{f(2), f(3)}},
		{OpExp, nil, []Type{i(2)}},
		{OpReshape, Attrs{"shape": []int{5}}, []Type{f(2, 3)}},
		{OpSlice, Attrs{"axis": 0, "start": 1, "end": 9}, []Type{f(4)}},
		{OpTopK, Attrs{"k": 9}, []Type{f(3, 8)}},
		{OpGroupedMM, Attrs{"tb": true}, []Type{f(14, 4), f(7, 6, 4), i(9)}},
		{OpScan, Attrs{"chunk": 0}, []Type{f(2, 9, 5), f(2, 9, 5), f(5, 3), f(2, 9, 3), f(2, 9, 3), f(5)}},
		{OpScan, Attrs{"chunk": 4}, []Type{f(2, 9, 5), f(2, 9, 5), f(5, 3), f(2, 9, 4), f(2, 9, 3), f(5)}},
		{OpRMSNorm, Attrs{"eps": 1e-5}, []Type{f(2, 4), f(3)}},
		{OpOneHot, Attrs{"depth": 0}, []Type{i(3)}},
	}
	for _, c := range bad {
		d, _ := Lookup(c.op)
		a, err := normalize(c.op, d.Attrs, c.a)
		if err == nil {
			_, err = d.Infer(c.in, a)
		}
		if err == nil {
			t.Errorf("%s %v accepted %v", c.op, c.a, c.in)
		}
	}
}

func TestClosest(t *testing.T) {
	names := []string{"d_model", "d_inner", "f16", "f32"}
	for in, want := range map[string]string{"d_modle": "d_model", "f23": "f32", "zzzzzz": ""} {
		if got := Closest(in, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// Reorder keeps a graph's meaning under a valid order and refuses one that
// puts a node before its operand; Prune drops what no result needs.
func TestReorderAndPrune(t *testing.T) {
	b := NewBuilder("r")
	x := b.Input("x", T(F32, 4))
	y := b.Unary(OpExp, x)
	z := b.Unary(OpNeg, x)
	b.Unary(OpSqrt, x) // dead
	b.Output("out", b.Add(y, z))
	g, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	n := g.Nodes
	swapped := []*Node{n[0], n[2], n[1], n[3], n[4]}
	r, err := Reorder(g, swapped)
	if err != nil {
		t.Fatal(err)
	}
	if r.Nodes[1].Op != OpNeg || r.Output("out").Value.Node.Op != OpAdd || Verify(r) != nil {
		t.Errorf("reordered graph: %v", r.Nodes)
	}
	if _, err := Reorder(g, []*Node{n[1], n[0], n[2], n[3], n[4]}); err == nil {
		t.Error("Reorder accepted exp before its operand")
	}
	p, err := Prune(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Nodes) != len(g.Nodes)-1 || countOp(p, OpSqrt) != 0 {
		t.Errorf("pruned graph: %v", p.Nodes)
	}
}

func countOp(g *Graph, op Op) int {
	n := 0
	for _, x := range g.Nodes {
		if x.Op == op {
			n++
		}
	}
	return n
}
