package sim

import (
	"fmt"
	"strings"
)

// The Go side reads MSL source only as far as it must: kernel signatures,
// function bodies (which kernels synchronize), and threadgroup variable
// declarations. This file splits source into tokens; preprocessor lines are
// kept aside, except that #define bodies are scanned too.

type tokKind uint8

const (
	tIdent tokKind = iota
	tNumber
	tString
	tPunct
)

type token struct {
	kind tokKind
	text string
	pos  int // byte offset in the source
	line int // 1-based
}

type macro struct {
	name string
	body []token
}

type lexed struct {
	toks   []token
	macros []macro
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// lex tokenizes src. Lines inside "#if 0" blocks are skipped; other
// conditionals are not evaluated, so both branches are read.
func lex(src string) (*lexed, error) {
	out := &lexed{}
	line := 1
	atLineStart := true
	skipDepth := 0 // > 0 inside #if 0
	condDepth := 0
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\n':
			line++
			atLineStart = true
			i++
			continue
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			line++
			i += 2
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("kernels.metal:%d: unterminated comment", line)
			}
			line += strings.Count(src[i:i+2+end+2], "\n")
			i += 2 + end + 2
			continue
		case c == '#' && atLineStart:
			start, startLine := i, line
			for i < len(src) && src[i] != '\n' {
				if src[i] == '\\' && i+1 < len(src) && src[i+1] == '\n' {
					line++
					i++
				}
				i++
			}
			d := src[start:i]
			dir := directive(d)
			switch dir {
			case "if", "ifdef", "ifndef":
				condDepth++
				if skipDepth > 0 {
					skipDepth++
				} else if dir == "if" && strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(d[1:]), "if")) == "0" {
					skipDepth = 1
				}
			case "endif":
				condDepth--
				if skipDepth > 0 {
					skipDepth--
				}
			case "else", "elif":
				if skipDepth == 1 {
					skipDepth = 0
				}
			case "define":
				if skipDepth == 0 {
					if m, ok := parseDefine(d, startLine); ok {
						out.macros = append(out.macros, m)
					}
				}
			}
			continue
		}
		atLineStart = false
		start := i
		var kind tokKind
		switch {
		case isIdentStart(c):
			for i < len(src) && isIdentChar(src[i]) {
				i++
			}
			kind = tIdent
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(src) && src[i+1] >= '0' && src[i+1] <= '9':
			// A pp-number: digits, letters, dots, and signs after an exponent.
			for i < len(src) {
				d := src[i]
				if (d == '+' || d == '-') && strings.ContainsRune("eEpP", rune(src[i-1])) {
					i++
					continue
				}
				if !isIdentChar(d) && d != '.' && d != '\'' {
					break
				}
				i++
			}
			kind = tNumber
		case c == '"' || c == '\'':
			i++
			for i < len(src) && src[i] != c {
				if src[i] == '\\' {
					i++
				}
				if i < len(src) && src[i] == '\n' {
					return nil, fmt.Errorf("kernels.metal:%d: unterminated literal", line)
				}
				i++
			}
			if i >= len(src) {
				return nil, fmt.Errorf("kernels.metal:%d: unterminated literal", line)
			}
			i++
			kind = tString
		case c == ':' && i+1 < len(src) && src[i+1] == ':':
			i += 2
			kind = tPunct
		case c == '-' && i+1 < len(src) && src[i+1] == '>':
			i += 2
			kind = tPunct
		default:
			i++
			kind = tPunct
		}
		if skipDepth == 0 {
			out.toks = append(out.toks, token{kind: kind, text: src[start:i], pos: start, line: line})
		}
	}
	return out, nil
}

// directive returns the name of a preprocessor directive line ("define").
func directive(d string) string {
	s := strings.TrimLeft(d[1:], " \t")
	n := 0
	for n < len(s) && isIdentChar(s[n]) {
		n++
	}
	return s[:n]
}

func parseDefine(d string, line int) (macro, bool) {
	s := strings.TrimLeft(d[1:], " \t")
	s = strings.TrimLeft(strings.TrimPrefix(s, "define"), " \t")
	n := 0
	for n < len(s) && isIdentChar(s[n]) {
		n++
	}
	if n == 0 {
		return macro{}, false
	}
	body := strings.ReplaceAll(s[n:], "\\\n", " ")
	lx, err := lex(body)
	if err != nil {
		return macro{name: s[:n]}, true
	}
	for i := range lx.toks {
		lx.toks[i].line = line
	}
	return macro{name: s[:n], body: lx.toks}, true
}
