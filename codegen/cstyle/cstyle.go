// Package cstyle prints kernel IR (codegen/kir) as C-style source. One
// printer serves every target; a Dialect holds what the targets spell
// differently (type names, the kernel signature, thread positions,
// barriers, simd-group collectives, tiles, math functions, the prelude).
package cstyle

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/scm-magellano/magc/codegen/kir"
)

// Dialect is a target's spelling of kernel IR. Formats are fmt formats;
// their arguments are listed beside each (a format may skip one by
// indexing explicitly: "%[1]s %[2]s").
type Dialect struct {
	// Types names the scalar types; Tiles the 8×8 tile of an element type.
	Types, Tiles map[kir.Type]string
	// Prelude opens the file: a header comment, includes, helpers.
	Prelude func(m *kir.Module) string
	// Params lists a kernel's parameters: buffers, then what the dialect
	// needs to name thread positions.
	Params func(k *kir.Kernel) []string
	// Builtin spells a thread position (kir.Builtin) as an int.
	Builtin func(kind string, dim int) string

	Launch    string // comment above a kernel: threads, groups ("8×1×1")
	Kernel    string // a kernel's opening up to its "(": name, threads per threadgroup (the launch bound)
	Table     string // constant table: type, name, length, values
	Shared    string // threadgroup array: type, name, length
	Barrier   string // statement: threadgroup memory
	BarrierD  string // statement: threadgroup and device memory (kir.Barrier.Device)
	TileZero  string // zero-filled tile: tile type, name, element type
	TileLoad  string // tile, base pointer, offset, row stride
	TileLoadT string // TileLoad, transposed
	TileStore string // tile, base pointer, offset, row stride
	TileMMA   string // d, a, b, c
	SimdArg   string // wraps the lane or delta argument of a collective

	Math, Simd map[string]string // function names by kir name
	Inf, NaN   string
}

// Render prints a module: prelude, the constant tables its kernels read,
// and its kernels. The output is deterministic.
func Render(d *Dialect, m *kir.Module) (string, error) {
	p := &printer{d: d}
	p.sb.WriteString(d.Prelude(m))
	for _, t := range UsedTables(m) {
		vals := make([]string, len(t.Values))
		for i, v := range t.Values {
			vals[i] = p.lit(kir.Lit{Type: t.Type, V: v})
		}
		p.line("")
		p.line(d.Table, d.Types[t.Type], t.Name, len(t.Values), strings.Join(vals, ", "))
	}
	for _, k := range m.Kernels {
		p.line("")
		p.kernel(k)
	}
	return p.sb.String(), p.err
}

// UsedTables lists the module's tables that some kernel reads, so a module
// carries only those.
func UsedTables(m *kir.Module) []kir.Table {
	read := map[string]bool{}
	for _, k := range m.Kernels {
		kir.Walk(k.Body, func(e kir.Expr) {
			if x, ok := e.(kir.Index); ok {
				read[x.Buf] = true
			}
		}, func(s kir.Stmt) {
			if x, ok := s.(kir.TileLoad); ok {
				read[x.Src] = true
			}
		})
	}
	var used []kir.Table
	for _, t := range m.Tables {
		if read[t.Name] {
			used = append(used, t)
		}
	}
	return used
}

// RenderKernel prints one kernel.
func RenderKernel(d *Dialect, k *kir.Kernel) (string, error) {
	p := &printer{d: d}
	p.kernel(k)
	return p.sb.String(), p.err
}

type printer struct {
	d      *Dialect
	sb     strings.Builder
	indent int
	err    error
}

func (p *printer) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

func (p *printer) line(format string, args ...any) {
	p.sb.WriteString(strings.Repeat("    ", p.indent))
	fmt.Fprintf(&p.sb, format, args...)
	p.sb.WriteString("\n")
}

func (p *printer) kernel(k *kir.Kernel) {
	for _, l := range strings.Split(k.Doc, "\n") {
		if l != "" {
			p.line("// %s", l)
		}
	}
	p.line(p.d.Launch, dims(k.Threads), dims(k.Groups))
	params := p.d.Params(k)
	p.line(p.d.Kernel, k.Name, k.Threads[0]*k.Threads[1]*k.Threads[2])
	p.indent += 2
	for i, s := range params {
		sep := ","
		if i == len(params)-1 {
			sep = ") {"
		}
		p.line("%s%s", s, sep)
	}
	p.indent -= 2
	p.block(k.Body)
	p.line("}")
}

func dims(d [3]int) string { return fmt.Sprintf("%d×%d×%d", d[0], d[1], d[2]) }

func (p *printer) block(ss []kir.Stmt) {
	p.indent++
	for _, s := range ss {
		p.stmt(s)
	}
	p.indent--
}

func (p *printer) stmt(s kir.Stmt) {
	d := p.d
	switch s := s.(type) {
	case kir.Decl:
		q := "const "
		if s.Mutable {
			q = ""
		}
		p.line("%s%s %s = %s;", q, d.Types[s.Type], s.Name, p.expr(s.Init))
	case kir.Array:
		p.line("%s %s[%d];", d.Types[s.Type], s.Name, s.Len)
	case kir.Shared:
		p.line(d.Shared, d.Types[s.Type], s.Name, s.Len)
	case kir.Assign:
		switch s.Op {
		case "=", "+=", "-=", "*=":
			p.line("%s %s %s;", p.expr(s.LHS), s.Op, p.expr(s.RHS))
		case "max=", "min=":
			op := strings.TrimSuffix(s.Op, "=")
			p.line("%s = %s(%s, %s);", p.expr(s.LHS), op, p.expr(s.LHS), p.expr(s.RHS))
		default:
			p.fail("unknown assignment %q", s.Op)
		}
	case kir.For:
		p.line("for (int %s = %s; %s < %s; %s += %s) {", s.Var, p.expr(s.From), s.Var, p.expr(s.To), s.Var, p.expr(s.Step))
		p.block(s.Body)
		p.line("}")
	case kir.If:
		p.line("if (%s) {", p.cond(s.Cond))
		p.block(s.Then)
		// An else holding just another if reads as a chain: else if.
		for len(s.Else) == 1 {
			next, ok := s.Else[0].(kir.If)
			if !ok {
				break
			}
			p.line("} else if (%s) {", p.cond(next.Cond))
			p.block(next.Then)
			s = next
		}
		if len(s.Else) > 0 {
			p.line("} else {")
			p.block(s.Else)
		}
		p.line("}")
	case kir.Barrier:
		if s.Device {
			p.line("%s", d.BarrierD)
		} else {
			p.line("%s", d.Barrier)
		}
	case kir.Return:
		p.line("return;")
	case kir.Comment:
		p.line("// %s", s.Text)
	case kir.Tile:
		t, ok := d.Tiles[s.Type]
		if !ok {
			p.fail("no simd-group tile of %v", s.Type)
		}
		p.line(d.TileZero, t, s.Name, d.Types[s.Type])
	case kir.TileLoad:
		f := d.TileLoad
		if s.Transpose {
			f = d.TileLoadT
		}
		p.line(f, s.Tile, s.Src, p.expr(s.Off), p.expr(s.Stride))
	case kir.TileStore:
		p.line(d.TileStore, s.Tile, s.Dst, p.expr(s.Off), p.expr(s.Stride))
	case kir.TileMMA:
		p.line(d.TileMMA, s.D, s.A, s.B, s.C)
	default:
		p.fail("unknown statement %T", s)
	}
}

// cond prints an if's condition without the parentheses expr puts around
// an operator: clang (Apple's Metal compiler) warns on if ((a == b)).
func (p *printer) cond(e kir.Expr) string {
	switch e := e.(type) {
	case kir.Bin:
		if e.Op != "min" && e.Op != "max" {
			return p.expr(e.A) + " " + e.Op + " " + p.expr(e.B)
		}
	case kir.Not:
		return "!" + p.expr(e.X)
	}
	return p.expr(e)
}

func (p *printer) expr(e kir.Expr) string {
	switch e := e.(type) {
	case kir.Lit:
		return p.lit(e)
	case kir.Var:
		return e.Name
	case kir.Index:
		return e.Buf + "[" + p.expr(e.I) + "]"
	case kir.Bin:
		if e.Op == "min" || e.Op == "max" {
			return e.Op + "(" + p.expr(e.A) + ", " + p.expr(e.B) + ")"
		}
		return "(" + p.expr(e.A) + " " + e.Op + " " + p.expr(e.B) + ")"
	case kir.Neg:
		return "(-" + p.expr(e.X) + ")"
	case kir.Not:
		return "(!" + p.expr(e.X) + ")"
	case kir.Call:
		fn, ok := p.d.Math[e.Fn]
		if !ok {
			p.fail("unknown function %q", e.Fn)
		}
		args := make([]string, len(e.Args))
		for i, a := range e.Args {
			args[i] = p.expr(a)
		}
		return fn + "(" + strings.Join(args, ", ") + ")"
	case kir.Convert:
		return p.d.Types[e.Type] + "(" + p.expr(e.X) + ")"
	case kir.Select:
		return "(" + p.expr(e.Cond) + " ? " + p.expr(e.A) + " : " + p.expr(e.B) + ")"
	case kir.Builtin:
		b := p.d.Builtin(e.Kind, e.Dim)
		if b == "" {
			p.fail("unknown builtin %q", e.Kind)
		}
		return b
	case kir.Simd:
		fn, ok := p.d.Simd[e.Op]
		if !ok {
			p.fail("unknown simd op %q", e.Op)
		}
		if e.Arg != nil {
			return fn + "(" + p.expr(e.X) + ", " + fmt.Sprintf(p.d.SimdArg, p.expr(e.Arg)) + ")"
		}
		return fn + "(" + p.expr(e.X) + ")"
	}
	p.fail("unknown expression %T", e)
	return ""
}

func (p *printer) lit(l kir.Lit) string {
	switch l.Type {
	case kir.F32, kir.F16, kir.BF16:
		s := p.floatLit(l.V)
		if l.Type != kir.F32 { // typed: no implicit narrowing (Metal refuses it for bfloat)
			return p.d.Types[l.Type] + "(" + s + ")"
		}
		return s
	case kir.U32:
		return strconv.FormatInt(int64(l.V), 10) + "u"
	case kir.Bool:
		if l.V != 0 {
			return "true"
		}
		return "false"
	}
	return strconv.FormatInt(int64(l.V), 10)
}

// floatLit spells v as an f32 literal.
func (p *printer) floatLit(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return p.d.Inf
	case math.IsInf(v, -1):
		return "(-" + p.d.Inf + ")"
	case math.IsNaN(v):
		return p.d.NaN
	}
	s := strconv.FormatFloat(float64(float32(v)), 'g', -1, 32)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s + "f"
}
