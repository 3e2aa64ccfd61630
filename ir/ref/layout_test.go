package ref

import (
	"math"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

func TestReduce(t *testing.T) {
	x := f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6)
	ax := func(keep bool, axes ...int) ir.Attrs { return ir.Attrs{"axes": axes, "keep": keep} }
	expect(t, "sum0", run(t, ir.OpReduceSum, ax(false, 0), x)[0], sh(3), 0, 5, 7, 9)
	expect(t, "sum1 keep", run(t, ir.OpReduceSum, ax(true, 1), x)[0], sh(2, 1), 0, 6, 15)
	expect(t, "sum all", run(t, ir.OpReduceSum, ax(false, 0, 1), x)[0], nil, 0, 21)
	expect(t, "sum all keep", run(t, ir.OpReduceSum, ax(true, 0, 1), x)[0], sh(1, 1), 0, 21)
	expect(t, "sum none", run(t, ir.OpReduceSum, ax(false), x)[0], sh(2, 3), 0, 1, 2, 3, 4, 5, 6)
	expect(t, "mean1", run(t, ir.OpReduceMean, ax(false, 1), x)[0], sh(2), 0, 2, 5)
	expect(t, "mean all", run(t, ir.OpReduceMean, ax(false, 0, 1), x)[0], nil, 0, 3.5)
	expect(t, "max0", run(t, ir.OpReduceMax, ax(false, 0), x)[0], sh(3), 0, 4, 5, 6)
	expect(t, "max1 keep", run(t, ir.OpReduceMax, ax(true, 1), f32(t, sh(2, 2), -5, -7, 1, math.NaN()))[0],
		sh(2, 1), 0, -5, math.NaN())

	// Middle axis kept: out[j] = Σ_{i,k} x[i,j,k] with x = 0..7.
	y := f32(t, sh(2, 2, 2), 0, 1, 2, 3, 4, 5, 6, 7)
	expect(t, "sum02", run(t, ir.OpReduceSum, ax(false, 0, 2), y)[0], sh(2), 0, 10, 18)
	expect(t, "max02 keep", run(t, ir.OpReduceMax, ax(true, 0, 2), y)[0], sh(1, 2, 1), 0, 5, 7)
}

func TestReshapeTranspose(t *testing.T) {
	x := f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6)
	r := run(t, ir.OpReshape, ir.Attrs{"shape": []int{3, 2}}, x)[0]
	expect(t, "reshape", r, sh(3, 2), 0, 1, 2, 3, 4, 5, 6)
	r.Data[0] = 99 // results never alias operands
	if x.Data[0] != 1 {
		t.Fatal("reshape aliases its operand")
	}
	expect(t, "transpose", run(t, ir.OpTranspose, ir.Attrs{"perm": []int{1, 0}}, x)[0], sh(3, 2), 0, 1, 4, 2, 5, 3, 6)

	// 3-D: out[i,j,k] = in[j,k,i] for perm [2,0,1].
	in := New(ir.T(ir.F32, 2, 3, 4))
	for i := range in.Data {
		in.Data[i] = float64(i)
	}
	out := run(t, ir.OpTranspose, ir.Attrs{"perm": []int{2, 0, 1}}, in)[0]
	if !out.Type.Shape.Equal(ir.Shape{4, 2, 3}) {
		t.Fatalf("transpose shape %v", out.Type.Shape)
	}
	for i := 0; i < 4; i++ {
		for j := 0; j < 2; j++ {
			for k := 0; k < 3; k++ {
				if out.At(i, j, k) != in.At(j, k, i) {
					t.Fatalf("out[%d,%d,%d] = %g, want %g", i, j, k, out.At(i, j, k), in.At(j, k, i))
				}
			}
		}
	}
}

func TestBroadcast(t *testing.T) {
	bc := func(x *Tensor, s ...int) *Tensor { return run(t, ir.OpBroadcast, ir.Attrs{"shape": s}, x)[0] }
	expect(t, "row", bc(f32(t, sh(3), 1, 2, 3), 2, 3), sh(2, 3), 0, 1, 2, 3, 1, 2, 3)
	expect(t, "col", bc(f32(t, sh(2, 1), 1, 2), 2, 3), sh(2, 3), 0, 1, 1, 1, 2, 2, 2)
	expect(t, "lead+1", bc(f32(t, sh(1, 2), 1, 2), 2, 2, 2), sh(2, 2, 2), 0, 1, 2, 1, 2, 1, 2, 1, 2)
	expect(t, "scalar", bc(f32(t, nil, 7), 2), sh(2), 0, 7, 7)
	expect(t, "mixed", bc(f32(t, sh(2, 1, 2), 1, 2, 3, 4), 2, 2, 2), sh(2, 2, 2), 0, 1, 2, 1, 2, 3, 4, 3, 4)
}

func TestSliceConcat(t *testing.T) {
	x := f32(t, sh(2, 3), 1, 2, 3, 4, 5, 6)
	sl := func(ax, s, e int) *Tensor {
		return run(t, ir.OpSlice, ir.Attrs{"axis": ax, "start": s, "end": e}, x)[0]
	}
	expect(t, "slice1", sl(1, 1, 3), sh(2, 2), 0, 2, 3, 5, 6)
	expect(t, "slice0", sl(0, 1, 2), sh(1, 3), 0, 4, 5, 6)
	a, b := f32(t, sh(2, 1), 10, 20), f32(t, sh(2, 2), 1, 2, 3, 4)
	expect(t, "concat1", run(t, ir.OpConcat, ir.Attrs{"axis": 1}, a, b, a)[0], sh(2, 4), 0, 10, 1, 2, 10, 20, 3, 4, 20)
	expect(t, "concat0", run(t, ir.OpConcat, ir.Attrs{"axis": 0}, b, f32(t, sh(1, 2), 7, 8))[0], sh(3, 2), 0, 1, 2, 3, 4, 7, 8)
	if _, err := EvalOp(ir.OpConcat, ir.Attrs{"axis": 0}, b, x); err == nil {
		t.Fatal("concat of (2,2) and (2,3) along axis 0: no error")
	}
}

func TestGatherScatterOneHot(t *testing.T) {
	table := f32(t, sh(3, 2), 0, 1, 10, 11, 20, 21)
	idx := i32(t, sh(2, 2), 2, 0, 1, 1)
	expect(t, "gather", run(t, ir.OpGather, nil, table, idx)[0], sh(2, 2, 2), 0, 20, 21, 0, 1, 10, 11, 10, 11)
	expect(t, "gather rank1", run(t, ir.OpGather, nil, f32(t, sh(3), 5, 6, 7), i32(t, sh(2), 2, 0))[0], sh(2), 0, 7, 5)
	itab := i32(t, sh(2), 4, 9) // integer tables gather too
	expect(t, "gather i32", run(t, ir.OpGather, nil, itab, i32(t, sh(1), 1))[0], sh(1), 0, 9)
	for _, bad := range []int{3, -1} {
		if _, err := EvalOp(ir.OpGather, nil, table, i32(t, sh(1), bad)); err == nil {
			t.Fatalf("gather index %d: no error", bad)
		}
	}

	src := f32(t, sh(3, 2), 1, 2, 3, 4, 5, 6)
	sidx := i32(t, sh(3), 1, 0, 1)
	expect(t, "scatter", run(t, ir.OpScatter, ir.Attrs{"rows": 3}, sidx, src)[0], sh(3, 2), 0, 3, 4, 6, 8, 0, 0)
	if _, err := EvalOp(ir.OpScatter, ir.Attrs{"rows": 2}, i32(t, sh(3), 1, 0, 2), src); err == nil {
		t.Fatal("scatter to row 2 of 2: no error")
	}
	// scatter_add is gather's adjoint: <gather(T, i), S> = <T, scatter(i, S)>.
	g := run(t, ir.OpGather, nil, table, idx)[0]
	s2 := f32(t, sh(2, 2, 2), 1, -2, 3, 0.5, 7, 1, -1, 2)
	sc := run(t, ir.OpScatter, ir.Attrs{"rows": 3}, idx, s2)[0]
	if l, r := dot(g.Data, s2.Data), dot(table.Data, sc.Data); l != r {
		t.Fatalf("adjoint identity: %g vs %g", l, r)
	}

	oh := run(t, ir.OpOneHot, ir.Attrs{"depth": 3}, i32(t, sh(4), 2, -100, 0, 3))[0]
	expect(t, "one_hot", oh, sh(4, 3), 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0)
	if oh.Type.DType != ir.F32 {
		t.Fatalf("one_hot type %v", oh.Type)
	}
}

func TestSoftmaxRMSNorm(t *testing.T) {
	x := f32(t, sh(2, 3), 0, math.Ln2, math.Log(5), 1000, 1000+math.Log(3), 1000)
	expect(t, "softmax", run(t, ir.OpSoftmax, nil, x)[0], sh(2, 3), 1e-12, // 1000+ln 3 carries an ulp of 1e-13
		1.0/8, 2.0/8, 5.0/8, 0.2, 0.6, 0.2)

	if _, err := EvalOp(ir.OpSoftmax, nil, f32(t, nil, -3)); err == nil {
		t.Fatal("softmax of a scalar has no axis and must be refused")
	}

	y := f32(t, sh(2, 2), 3, 4, 1, -1)
	g := f32(t, sh(2), 1, 2)
	got := run(t, ir.OpRMSNorm, ir.Attrs{"eps": 0.5}, y, g)[0]
	// row 0: mean x² = 12.5, r = 1/√13; row 1: mean x² = 1, r = 1/√1.5.
	expect(t, "rmsnorm", got, sh(2, 2), 1e-15, 3/math.Sqrt(13), 8/math.Sqrt(13), 1/math.Sqrt(1.5), -2/math.Sqrt(1.5))
}
