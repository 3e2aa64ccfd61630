package sim

import (
	"fmt"
	"sort"
	"strings"
)

// checkMacros refuses threadgroup variables declared by macros: the Go side
// could not give them threadgroup storage.
func checkMacros(macros []macro) error {
	for _, m := range macros {
		mp := &parser{toks: m.body}
		if mp.matchBrackets() != nil {
			continue
		}
		for i, t := range m.body {
			if t.text == "threadgroup" && (i == 0 || strings.Contains("{};", mp.text(i-1))) {
				if kind, _ := mp.tgDecl(i); kind != tgPointer {
					return errAt(t.line, "magc sim: a threadgroup variable declared inside #define %s is not supported; declare it in the kernel body", m.name)
				}
			}
		}
	}
	return nil
}

// tgDeclKind tells what a statement that starts with `threadgroup` declares.
type tgDeclKind int

const (
	tgVariable tgDeclKind = iota // threadgroup float t[16];  shared by the threadgroup
	tgPointer                    // threadgroup float* p = t;  a thread's own pointer
	tgUnknown                    // anything else: refused rather than guessed
)

// tgVar is one variable of a threadgroup declaration: the index of its name
// and of the ',' or ';' after its declarator (`t[16][17]`).
type tgVar struct{ name, end int }

// tgDecl reads the declaration that starts at a `threadgroup` token: what
// it declares, and its variables.
func (p *parser) tgDecl(i int) (kind tgDeclKind, vars []tgVar) {
	kind, vars, _ = p.tgDeclAlign(i)
	return kind, vars
}

// tgDeclAlign is tgDecl, also returning the token range of an alignas(...)
// among the type's words ([0, 0) if none).
func (p *parser) tgDeclAlign(i int) (kind tgDeclKind, vars []tgVar, align [2]int) {
	j := i + 1
typeWords:
	for j < len(p.toks) {
		t := p.toks[j]
		switch {
		case t.text == "alignas" && p.text(j+1) == "(":
			align = [2]int{j, p.match[j+1] + 1}
			j = align[1]
		case t.kind == tIdent || t.text == "::":
			j++
		case t.text == "<":
			depth := 0
			for ; j < len(p.toks); j++ {
				if p.text(j) == "<" {
					depth++
				} else if p.text(j) == ">" {
					depth--
					if depth == 0 {
						break
					}
				} else if p.text(j) == ";" {
					return tgUnknown, nil, align
				}
			}
			j++
		default:
			break typeWords
		}
	}
	switch p.text(j) {
	case "*", "&":
		return tgPointer, nil, align
	case "[", ";", ",":
	default: // an initializer, which MSL does not allow either, or worse
		return tgUnknown, nil, align
	}
	if j-1 <= i+1 || p.toks[j-1].kind != tIdent {
		return tgUnknown, nil, align
	}
	v := tgVar{name: j - 1}
	for ; j < len(p.toks); j++ {
		switch p.text(j) {
		case "[":
			j = p.match[j]
		case ",", ";":
			v.end = j
			vars = append(vars, v)
			if p.text(j) == ";" {
				return tgVariable, vars, align
			}
			if p.toks[j+1].kind != tIdent {
				return tgUnknown, nil, align
			}
			v = tgVar{name: j + 1}
			j++
		default:
			if j != v.name {
				return tgUnknown, nil, align
			}
		}
	}
	return tgUnknown, nil, align
}

type edit struct {
	pos, end int
	text     string
}

// rewrites computes the source edits for the shim; none adds or removes a
// line, so compiler messages keep the user's line numbers.
//   - `threadgroup T x[n];` in a kernel becomes a reference into the running
//     worker's threadgroup arena (magc_sim::tg_base()), at an offset fixed at
//     compile time; the running total is checked against the 32 KiB limit.
//     A worker runs one threadgroup at a time, so the arena is the
//     threadgroup's memory. In other functions it becomes MAGC_TG_VAR
//     (static thread_local): one copy per OS thread.
//   - `constant const T` loses `constant` (it maps to const).
//   - `[[kernel]] void f` becomes `kernel void f`.
func (p *parser) rewrites(defs []funcDef) ([]edit, error) {
	var edits []edit
	kernelOf := map[int]int{} // body open brace -> kernel index
	ki := 0
	for _, d := range defs {
		if p.isKernel(d) {
			kernelOf[d.open] = ki
			ki++
			if s := p.kernelStart(d); p.text(s) == "[" {
				t := p.toks[s]
				edits = append(edits, edit{t.pos, p.toks[p.match[s]].pos + 1, "kernel"})
			}
		}
	}
	// The running total of threadgroup memory at the end of each block, by
	// the index of its '{'. A block starts from its enclosing block's total;
	// sibling blocks reuse the same space, as their variables are dead.
	blockTotal := map[int]string{}
	count := 0
	for i, t := range p.toks {
		switch {
		case t.text == "constant" && (p.text(i-1) == "const" || p.text(i+1) == "const"):
			edits = append(edits, edit{t.pos, t.pos + len(t.text), ""})
		case t.text == "threadgroup" && p.outer[i] >= 0 && strings.Contains("{};", p.text(i-1)) && p.text(i-1) != "":
			kind, vars, align := p.tgDeclAlign(i)
			if kind == tgPointer {
				continue
			}
			if kind == tgUnknown {
				return nil, errAt(t.line, "magc sim: cannot read this threadgroup declaration; write it as `threadgroup T name[n];` (no initializer)")
			}
			// The kernel whose body holds the declaration, if any.
			body := -1
			for b := p.outer[i]; b >= 0; b = p.outer[b] {
				if _, ok := kernelOf[b]; ok {
					body = b
					break
				}
			}
			if body < 0 { // a helper function: one copy per OS thread
				edits = append(edits, edit{t.pos, t.pos + len(t.text), "MAGC_TG_VAR"})
				continue
			}
			k := kernelOf[body]
			total := "0UL"
			for b := p.outer[i]; b >= 0; b = p.outer[b] {
				if v, ok := blockTotal[b]; ok {
					total = v
					break
				}
				if b == body {
					break
				}
			}
			last := p.toks[vars[len(vars)-1].end]
			typ := p.src[t.pos+len(t.text) : p.toks[vars[0].name].pos]
			alignTo := "1"
			if align[1] > 0 { // alignas goes on the offset, not the typedef
				first, end := p.toks[align[0]], p.toks[align[1]-1]
				alignTo = p.src[first.pos+len(first.text) : end.pos+1]
				typ = p.src[t.pos+len(t.text):first.pos] + p.src[end.pos+1:p.toks[vars[0].name].pos]
			}
			var b strings.Builder
			for _, v := range vars {
				name := p.toks[v.name]
				dims := p.src[name.pos+len(name.text) : p.toks[v.end].pos]
				n := count
				count++
				fmt.Fprintf(&b, "typedef %s magc_tgt_%d_%d%s; ", strings.TrimSpace(typ), k, n, strings.TrimSpace(oneLine(dims)))
				fmt.Fprintf(&b, "constexpr unsigned long magc_tgoff_%d_%d = magc_sim::tg_align<magc_tgt_%d_%d, %s>(%s); ", k, n, k, n, oneLine(alignTo), total)
				fmt.Fprintf(&b, "magc_tgt_%d_%d& %s = *(magc_tgt_%d_%d*)(magc_sim::tg_base() + magc_tgoff_%d_%d); ", k, n, name.text, k, n, k, n)
				total = fmt.Sprintf("magc_tgmem_%d_%d", k, n)
				fmt.Fprintf(&b, "constexpr unsigned long %s = magc_tgoff_%d_%d + sizeof(magc_tgt_%d_%d); magc_sim::tg_limit<%s>();", total, k, n, k, n, total)
			}
			// Keep the statement's line breaks, so later lines stay put.
			b.WriteString(strings.Repeat("\n", strings.Count(p.src[t.pos:last.pos], "\n")))
			edits = append(edits, edit{t.pos, last.pos + 1, b.String()})
			blockTotal[p.outer[i]] = total
		}
	}
	return edits, nil
}

// oneLine joins a multi-line piece of source into one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func applyEdits(src string, edits []edit) string {
	sort.SliceStable(edits, func(a, b int) bool { return edits[a].pos < edits[b].pos })
	var b strings.Builder
	last := 0
	for _, e := range edits {
		if e.pos < last {
			continue
		}
		b.WriteString(src[last:e.pos])
		b.WriteString(e.text)
		last = e.end
	}
	b.WriteString(src[last:])
	return b.String()
}
