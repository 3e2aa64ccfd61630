package ir

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// AttrKind is the type of an op attribute.
type AttrKind uint8

const (
	AttrInt AttrKind = iota + 1
	AttrFloat
	AttrInts
	AttrBool
	AttrDType
	AttrString
)

func (k AttrKind) String() string {
	return [...]string{"?", "int", "float", "ints", "bool", "dtype", "string"}[k]
}

// AttrDef declares one attribute of an op. Optional attributes take Default
// when absent.
type AttrDef struct {
	Name     string
	Kind     AttrKind
	Optional bool
	Default  any
}

// Attrs holds an op's attribute values: int, float64, []int, bool, DType or
// string, according to the op's AttrDefs.
type Attrs map[string]any

// Int returns an integer attribute (0 when absent).
func (a Attrs) Int(name string) int { v, _ := a[name].(int); return v }

// Float returns a float attribute.
func (a Attrs) Float(name string) float64 { v, _ := a[name].(float64); return v }

// Ints returns an integer-list attribute.
func (a Attrs) Ints(name string) []int { v, _ := a[name].([]int); return v }

// Bool returns a boolean attribute.
func (a Attrs) Bool(name string) bool { v, _ := a[name].(bool); return v }

// DType returns a dtype attribute.
func (a Attrs) DType(name string) DType { v, _ := a[name].(DType); return v }

// String returns a string attribute.
func (a Attrs) String(name string) string { v, _ := a[name].(string); return v }

// Clone copies the map (slices are shared: attributes are never mutated in place).
func (a Attrs) Clone() Attrs {
	c := make(Attrs, len(a))
	for k, v := range a {
		c[k] = v
	}
	return c
}

// Format prints attributes sorted by name: {axis=1, eps=1e-05}.
func (a Attrs) Format() string {
	if len(a) == 0 {
		return ""
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + formatAttr(a[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func formatAttr(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []int:
		return Shape(v).String()
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}

// normalize checks attrs against defs, fills defaults and converts the
// numeric kinds the language produces (an int where a float is declared).
func normalize(op Op, defs []AttrDef, a Attrs) (Attrs, error) {
	out := make(Attrs, len(defs))
	for k := range a {
		if findAttr(defs, k) == nil {
			return nil, fmt.Errorf("%s has no attribute %q%s", op, k, suggestAttr(defs, k))
		}
	}
	for _, d := range defs {
		v, ok := a[d.Name]
		if !ok {
			if !d.Optional {
				return nil, fmt.Errorf("%s needs attribute %q (%s)", op, d.Name, d.Kind)
			}
			if d.Default != nil {
				out[d.Name] = d.Default
			}
			continue
		}
		cv, ok := convertAttr(d.Kind, v)
		if !ok {
			return nil, fmt.Errorf("%s attribute %q must be %s, got %v", op, d.Name, d.Kind, v)
		}
		out[d.Name] = cv
	}
	if len(out) == 0 {
		return nil, nil // one spelling of "no attributes", so verified graphs compare equal
	}
	return out, nil
}

func findAttr(defs []AttrDef, name string) *AttrDef {
	for i := range defs {
		if defs[i].Name == name {
			return &defs[i]
		}
	}
	return nil
}

func suggestAttr(defs []AttrDef, name string) string {
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.Name
	}
	if s := Closest(name, names); s != "" {
		return "; did you mean " + strconv.Quote(s) + "?"
	}
	return ""
}

func convertAttr(k AttrKind, v any) (any, bool) {
	switch k {
	case AttrInt:
		i, ok := v.(int)
		return i, ok
	case AttrFloat:
		switch v := v.(type) {
		case float64:
			return v, true
		case int:
			return float64(v), true
		}
	case AttrInts:
		switch v := v.(type) {
		case []int:
			return v, true
		case int:
			return []int{v}, true
		}
	case AttrBool:
		b, ok := v.(bool)
		return b, ok
	case AttrDType:
		d, ok := v.(DType)
		return d, ok
	case AttrString:
		s, ok := v.(string)
		return s, ok
	}
	return nil, false
}
