package lang

import (
	"fmt"
	"math"

	"github.com/scm-magellano/magc/ir"
)

// kind is the sort of a value while a file is evaluated. Numbers, lists,
// strings, booleans and dtypes exist only at build time; tensors become IR values.
type kind uint8

const (
	kNum kind = iota + 1
	kTensor
	kList
	kString
	kBool
	kDType
)

func (k kind) String() string {
	return [...]string{"?", "number", "tensor", "list", "string", "bool", "dtype"}[k]
}

type val struct {
	kind  kind
	isInt bool
	i     int64
	f     float64
	t     *ir.Value
	list  []val
	s     string
	b     bool
	d     ir.DType
}

func intVal(i int64) val        { return val{kind: kNum, isInt: true, i: i, f: float64(i)} }
func floatVal(f float64) val    { return val{kind: kNum, f: f} }
func tensorVal(t *ir.Value) val { return val{kind: kTensor, t: t} }
func (v val) describe() string {
	switch v.kind {
	case kNum:
		if v.isInt {
			return fmt.Sprintf("number %d", v.i)
		}
		return fmt.Sprintf("number %g", v.f)
	case kTensor:
		return "tensor " + v.t.Type.String()
	}
	return v.kind.String()
}

// maxInt bounds build-time integers: they become dimensions and attributes.
const maxInt = 1 << 40

func checkedInt(i int64) (val, error) {
	if i > maxInt || i < -maxInt {
		return val{}, fmt.Errorf("integer %d is out of range (±2^40)", i)
	}
	return intVal(i), nil
}

// numOp applies + - * / % to two numbers: integer arithmetic when both are
// integers (division truncates), float otherwise.
func numOp(op string, a, b val) (val, error) {
	if a.isInt && b.isInt {
		x, y := a.i, b.i
		switch op {
		case "+":
			return checkedInt(x + y)
		case "-":
			return checkedInt(x - y)
		case "*":
			if y != 0 && abs64(x) > maxInt/abs64(y) {
				return val{}, fmt.Errorf("integer %d * %d is out of range (±2^40)", x, y)
			}
			return checkedInt(x * y)
		case "/", "%":
			if y == 0 {
				return val{}, fmt.Errorf("integer division by zero")
			}
			if op == "/" {
				return checkedInt(x / y)
			}
			return checkedInt(x % y)
		}
	}
	x, y := a.f, b.f
	var r float64
	switch op {
	case "+":
		r = x + y
	case "-":
		r = x - y
	case "*":
		r = x * y
	case "/":
		if y == 0 {
			return val{}, fmt.Errorf("division by zero")
		}
		r = x / y
	case "%":
		return val{}, fmt.Errorf("%% needs integers, got %g and %g", x, y)
	}
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return val{}, fmt.Errorf("%g %s %g is not a finite number", x, op, y)
	}
	return floatVal(r), nil
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
