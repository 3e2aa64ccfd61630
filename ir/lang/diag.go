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
	line, col := clip(d.Line, d.Pos.Col)
	sb.WriteString("\n " + num + " | " + line + "\n " + gutter + " | ")
	// Keep tabs so the caret lines up under tab-indented source.
	c := 1
	for _, r := range line {
		if c >= col {
			break
		}
		if r == '\t' {
			sb.WriteByte('\t')
		} else {
			sb.WriteByte(' ')
		}
		c++
	}
	sb.WriteString("^")
	return sb.String()
}

// clipWidth is how much of a long source line a diagnostic shows.
const clipWidth = 120

// clip cuts a line longer than clipWidth characters to a window around
// column col, marked with … at each cut, and returns the column of the
// same character in the window.
func clip(line string, col int) (string, int) {
	r := []rune(line)
	if len(r) <= clipWidth {
		return line, col
	}
	start := max(0, min(col-1-clipWidth/2, len(r)-clipWidth))
	end := min(len(r), start+clipWidth)
	out := string(r[start:end])
	col -= start
	if start > 0 {
		out, col = "…"+out, col+1
	}
	if end < len(r) {
		out += "…"
	}
	return out, col
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
