package device

import (
	"fmt"
	"strings"
)

// CompileError is a device compiler's refusal of kernel source, with its
// diagnostics mapped back to lines of the source magc emitted.
type CompileError struct {
	// Who is the device and its compiler ("sim: g++", "cuda: nvcc").
	Who string
	// File names the source in messages (kernels.metal, kernels.cu).
	File        string
	Diagnostics []Diagnostic
	// Output is all the compiler printed.
	Output string
}

// Diagnostic is one error, at a line (and column) of the source when it
// has one; Source is that line's text.
type Diagnostic struct {
	Line, Col int
	Msg       string
	Source    string
}

const maxDiagnostics = 5

func (e *CompileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rejected %s:", e.Who, e.File)
	for i, d := range e.Diagnostics {
		if i == maxDiagnostics {
			fmt.Fprintf(&b, "\n(and %d more errors)", len(e.Diagnostics)-maxDiagnostics)
			break
		}
		b.WriteString("\n" + d.format(e.File))
	}
	if len(e.Diagnostics) == 0 {
		b.WriteString("\n" + strings.TrimSpace(e.Output))
	}
	return b.String()
}

func (d Diagnostic) format(file string) string {
	var s string
	switch {
	case d.Line == 0:
		return d.Msg
	case d.Col == 0:
		s = fmt.Sprintf("%s:%d: %s", file, d.Line, d.Msg)
	default:
		s = fmt.Sprintf("%s:%d:%d: %s", file, d.Line, d.Col, d.Msg)
	}
	if d.Source != "" {
		s += fmt.Sprintf("\n%6d | %s", d.Line, d.Source)
	}
	return s
}
