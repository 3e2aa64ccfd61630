// Package safetensors reads and writes the safetensors format:
//
//	8 bytes   little-endian u64 N, the header length
//	N bytes   JSON header: {"name": {"dtype": "F32", "shape": [..],
//	          "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
//	rest      raw little-endian tensor data; offsets are relative to its start
//
// Reading is strict, following the reference implementation
// (huggingface/safetensors) and going further where it is silent: the
// tensors must tile the data section exactly (no holes, no overlaps, nothing
// after the last one), names and JSON keys must be unique, and every error
// names the file and the tensor. Writing is deterministic and lays the file
// out exactly as the reference does, so a file written here is byte-for-byte
// what safetensors.torch.save_file writes for the same tensors (metadata keys
// are sorted, where the reference leaves them in hash order).
package safetensors

import (
	"fmt"
	"sort"
)

// MaxHeaderSize is the largest header accepted, as in the reference.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key of the free-form string map.
const metadataKey = "__metadata__"

// Tensor is one named entry: its dtype name as in the header ("F32",
// "BF16", ...), its shape, and its raw little-endian bytes.
type Tensor struct {
	DType string
	Shape []int
	Data  []byte
}

// File is the content of a safetensors file.
type File struct {
	Tensors  map[string]Tensor
	Metadata map[string]string
}

// Names returns the tensor names in sorted order.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Tensors))
	for n := range f.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// dtypes lists the supported dtypes in the order of the reference's Dtype
// enum, which decides the order of tensors in a written file; the value is
// the element size in bytes.
var dtypes = []struct {
	name string
	size int
}{
	{"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1},
	{"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
	{"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8},
}

// DTypeSize returns the element size of a dtype, or false if it is unknown.
func DTypeSize(dtype string) (int, bool) {
	r := dtypeRank(dtype)
	if r < 0 {
		return 0, false
	}
	return dtypes[r].size, true
}

func dtypeRank(dtype string) int {
	for i, d := range dtypes {
		if d.name == dtype {
			return i
		}
	}
	return -1
}

// NumElements is the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n, _ := numElements(t.Shape)
	return n
}

// numElements multiplies out a shape, failing on a negative dimension or
// overflow.
func numElements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > maxInt/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

const maxInt = int(^uint(0) >> 1)

// byteSize is the data length of a tensor of this dtype and shape.
func byteSize(dtype string, shape []int) (int, error) {
	size, ok := DTypeSize(dtype)
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	n, err := numElements(shape)
	if err != nil {
		return 0, err
	}
	if n > maxInt/size {
		return 0, fmt.Errorf("shape %v of %s overflows", shape, dtype)
	}
	return n * size, nil
}

// check validates dtype, shape and data length of a tensor.
func (t Tensor) check() error {
	n, err := byteSize(t.DType, t.Shape)
	if err != nil {
		return err
	}
	if len(t.Data) != n {
		return fmt.Errorf("shape %v of %s needs %d bytes, has %d", t.Shape, t.DType, n, len(t.Data))
	}
	return nil
}

// Error is a malformed file or tensor. File is empty for in-memory input,
// Tensor is empty when the problem is not about one tensor.
type Error struct {
	File   string
	Tensor string
	Msg    string
}

func (e *Error) Error() string {
	s := "safetensors: "
	if e.File != "" {
		s += e.File + ": "
	}
	if e.Tensor != "" {
		s += fmt.Sprintf("tensor %q: ", e.Tensor)
	}
	return s + e.Msg
}
