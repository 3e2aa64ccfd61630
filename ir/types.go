// Package ir is magc's graph intermediate representation: dtypes, static
// shapes, the op catalogue, graphs of SSA values, a builder, a verifier and a
// deterministic printer.
package ir

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/scm-magellano/magc/ir/nf4"
)

// DType is an element type. NF4 is a storage type: 4-bit NormalFloat codes
// with double-quantised block absmax (package nf4 owns the byte layout).
type DType uint8

const (
	Invalid DType = iota
	F32
	F16
	BF16
	I32
	U8
	NF4
)

var dtypeNames = [...]string{Invalid: "invalid", F32: "f32", F16: "f16", BF16: "bf16", I32: "i32", U8: "u8", NF4: "nf4"}

func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return "dtype(" + strconv.Itoa(int(d)) + ")"
}

// ParseDType maps a dtype name ("f32") to its DType.
func ParseDType(s string) (DType, bool) {
	for i, n := range dtypeNames {
		if n == s && DType(i) != Invalid {
			return DType(i), true
		}
	}
	return Invalid, false
}

// DTypeNames lists the valid dtype names, for error suggestions.
func DTypeNames() []string { return dtypeNames[1:] }

// IsFloat reports whether values of d take part in floating-point math.
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 }

// Shape is a static shape; a scalar has rank 0.
type Shape []int

// Elems is the number of elements (1 for a scalar).
func (s Shape) Elems() int64 {
	n := int64(1)
	for _, d := range s {
		n *= int64(d)
	}
	return n
}

// Equal reports whether two shapes are identical.
func (s Shape) Equal(t Shape) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.Itoa(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Clone returns a copy that can be modified freely.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

// Type is a dtype with a static shape.
type Type struct {
	DType DType
	Shape Shape
}

// T is shorthand for Type{d, shape}.
func T(d DType, shape ...int) Type { return Type{DType: d, Shape: Shape(shape)} }

func (t Type) String() string { return t.DType.String() + t.Shape.String() }

// Equal reports whether two types are identical.
func (t Type) Equal(u Type) bool { return t.DType == u.DType && t.Shape.Equal(u.Shape) }

// Bytes is the storage size of a tensor of this type.
func (t Type) Bytes() int64 {
	n := t.Shape.Elems()
	switch t.DType {
	case F32, I32:
		return 4 * n
	case F16, BF16:
		return 2 * n
	case U8:
		return n
	case NF4:
		return nf4.StorageBytes(int(n), true)
	}
	return 0
}

// MaxElems bounds the elements of one tensor so that sizes never overflow.
const MaxElems = 1 << 50

// checkShape rejects non-positive dimensions and absurd sizes.
func checkShape(s Shape) error {
	n := int64(1)
	for i, d := range s {
		if d <= 0 {
			return fmt.Errorf("dimension %d of %v is %d: dimensions must be positive", i, s, d)
		}
		if n > MaxElems/int64(d) {
			return fmt.Errorf("shape %v has more than 2^50 elements", s)
		}
		n *= int64(d)
	}
	return nil
}
