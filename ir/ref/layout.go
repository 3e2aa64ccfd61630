package ref

import (
	"fmt"

	"github.com/scm-magellano/magc/ir"
)

func init() {
	register(ir.OpReshape, reshapeImpl)
	register(ir.OpTranspose, transposeImpl)
	register(ir.OpBroadcast, broadcastImpl)
	register(ir.OpSlice, sliceImpl)
	register(ir.OpConcat, concatImpl)
	register(ir.OpGather, gatherImpl)
	register(ir.OpScatter, scatterImpl)
	register(ir.OpOneHot, oneHotImpl)
}

// reshapeImpl copies: results never alias operands, so no caller can see a
// later write through another value.
// An nf4 reshape keeps the quantised weights: quantisation is flat, row-major.
func reshapeImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	if in[0].Type.DType == ir.NF4 {
		out := in[0].Clone()
		out.Type = n.Out().Type
		return []*Tensor{out}, nil
	}
	out := New(n.Out().Type)
	copy(out.Data, in[0].Data)
	return []*Tensor{out}, nil
}

// transposeImpl: out[i0..ir] = in[j] with j[perm[k]] = i[k].
func transposeImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x := in[0]
	perm := n.Attrs.Ints("perm")
	out := New(n.Out().Type)
	ist := strides(x.Type.Shape)
	forEachIndex(out.Type.Shape, func(idx []int, flat int) {
		src := 0
		for k, v := range idx {
			src += v * ist[perm[k]]
		}
		out.Data[flat] = x.Data[src]
	})
	return []*Tensor{out}, nil
}

// broadcastImpl follows numpy: shapes are right-aligned, and an operand axis
// of size 1 (or a missing leading axis) repeats.
func broadcastImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x := in[0]
	out := New(n.Out().Type)
	xs := x.Type.Shape
	off := len(out.Type.Shape) - len(xs)
	ist := strides(xs)
	forEachIndex(out.Type.Shape, func(idx []int, flat int) {
		src := 0
		for k := range xs {
			if xs[k] != 1 {
				src += idx[off+k] * ist[k]
			}
		}
		out.Data[flat] = x.Data[src]
	})
	return []*Tensor{out}, nil
}

// outerInner splits shape around axis: (product before, size, product after).
func outerInner(s ir.Shape, axis int) (outer, size, inner int) {
	outer, inner = 1, 1
	for _, d := range s[:axis] {
		outer *= d
	}
	for _, d := range s[axis+1:] {
		inner *= d
	}
	return outer, s[axis], inner
}

func sliceImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	x := in[0]
	ax, start, end := n.Attrs.Int("axis"), n.Attrs.Int("start"), n.Attrs.Int("end")
	out := New(n.Out().Type)
	outer, size, inner := outerInner(x.Type.Shape, ax)
	w := (end - start) * inner
	for o := 0; o < outer; o++ {
		copy(out.Data[o*w:(o+1)*w], x.Data[(o*size+start)*inner:(o*size+end)*inner])
	}
	return []*Tensor{out}, nil
}

func concatImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	ax := n.Attrs.Int("axis")
	out := New(n.Out().Type)
	outer, total, inner := outerInner(out.Type.Shape, ax)
	at := 0 // position along axis of the current operand
	for _, x := range in {
		_, size, _ := outerInner(x.Type.Shape, ax)
		w := size * inner
		for o := 0; o < outer; o++ {
			copy(out.Data[(o*total+at)*inner:], x.Data[o*w:(o+1)*w])
		}
		at += size
	}
	return []*Tensor{out}, nil
}

// gatherImpl: out[i…, :] = table[idx[i…], :]. An index outside the table is
// an error, not a clamp: silently reading a wrong row would hide bugs.
func gatherImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	table, idx := in[0], in[1]
	out := New(n.Out().Type)
	rows, row := table.Type.Shape[0], int(table.Type.Shape[1:].Elems())
	for i, v := range idx.Data {
		r := int(v)
		if r < 0 || r >= rows {
			return nil, fmt.Errorf("index %d at position %d is outside the table's %d rows", r, i, rows)
		}
		copy(out.Data[i*row:(i+1)*row], table.Data[r*row:(r+1)*row])
	}
	return []*Tensor{out}, nil
}

// scatterImpl: out = 0; out[idx[i…], :] += src[i…, :] in row-major order of i.
func scatterImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	idx, src := in[0], in[1]
	out := New(n.Out().Type)
	rows := out.Type.Shape[0]
	row := int(out.Type.Shape[1:].Elems())
	for i, v := range idx.Data {
		r := int(v)
		if r < 0 || r >= rows {
			return nil, fmt.Errorf("index %d at position %d is outside the %d output rows", r, i, rows)
		}
		dst := out.Data[r*row : (r+1)*row]
		for k, s := range src.Data[i*row : (i+1)*row] {
			dst[k] += s
		}
	}
	return []*Tensor{out}, nil
}

// oneHotImpl: 1.0 where the last axis equals the index. An index outside
// [0, depth) gives an all-zero row (TensorFlow's rule) rather than an error:
// cross-entropy's gradient one-hots targets that may be ignore_index (−100).
func oneHotImpl(n *ir.Node, in []*Tensor) ([]*Tensor, error) {
	out := New(n.Out().Type)
	depth := n.Attrs.Int("depth")
	for i, v := range in[0].Data {
		if k := int(v); k >= 0 && k < depth {
			out.Data[i*depth+k] = 1
		}
	}
	return []*Tensor{out}, nil
}
