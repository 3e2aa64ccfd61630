package lang

import (
	"strconv"
	"strings"

	"github.com/scm-magellano/magc/ir"
)

// Diagnostic is a positioned error in a .graph file. Error() prints
//
//	file:line:col: message
//	   12 | the source line
//	      |     ^
type Diagnostic struct {
	Pos  ir.Pos
	Msg  string
	Line string // the source line, when known
}

func (d *Diagnostic) Error() string {
	var sb strings.Builder
	sb.WriteString(d.Pos.String())
	sb.WriteString(": ")
	sb.WriteString(d.Msg)
	if d.Line == "" || d.Pos.Line == 0 {
		return sb.String()
	}
	num := strconv.Itoa(d.Pos.Line)
	gutter := strings.Repeat(" ", len(num))
	sb.WriteString("\n " + num + " | " + d.Line + "\n " + gutter + " | ")
	// Keep tabs so the caret lines up under tab-indented source.
	col := 1
	for _, r := range d.Line {
		if col >= d.Pos.Col {
			break
		}
		if r == '\t' {
			sb.WriteByte('\t')
		} else {
			sb.WriteByte(' ')
		}
		col++
	}
	sb.WriteString("^")
	return sb.String()
}

func sourceLine(src []byte, line int) string {
	if line < 1 {
		return ""
	}
	lines := strings.Split(string(src), "\n")
	if line > len(lines) {
		return ""
	}
	return strings.TrimRight(lines[line-1], "\r")
}
