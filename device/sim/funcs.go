package sim

import "strings"

// Function definitions, and which of them synchronize.

type funcDef struct {
	name       string
	nameTok    int
	open, shut int // the body's braces
}

var notFuncName = map[string]bool{
	"if": true, "for": true, "while": true, "switch": true, "return": true, "sizeof": true,
	"alignof": true, "alignas": true, "decltype": true, "catch": true, "static_assert": true,
	"noexcept": true, "throw": true, "case": true, "do": true, "else": true, "new": true,
	"delete": true, "typeid": true, "static_cast": true, "reinterpret_cast": true,
	"const_cast": true, "dynamic_cast": true, "__attribute__": true, "__asm__": true, "asm": true,
}

var qualifierWords = map[string]bool{
	"const": true, "volatile": true, "override": true, "final": true, "mutable": true,
	"device": true, "constant": true, "thread": true, "threadgroup": true, "&": true,
}

// funcDefs finds every function definition: a name, a parameter list and a
// body. Member functions and operators count; lambdas belong to the body
// that holds them.
func (p *parser) funcDefs() []funcDef {
	var defs []funcDef
	for i := 0; i+1 < len(p.toks); i++ {
		t := p.toks[i]
		name, open := "", -1
		switch {
		case t.text == "operator":
			name = "operator"
			for k := i + 1; k < len(p.toks) && k <= i+4; k++ {
				if p.text(k) == "(" {
					if p.text(k+1) == ")" && p.text(k+2) == "(" {
						k += 2
					}
					open = k
					break
				}
			}
		case t.kind == tIdent && p.text(i+1) == "(" && !notFuncName[t.text] && p.text(i-1) != "operator":
			name, open = t.text, i+1
		}
		if open < 0 {
			continue
		}
		k := p.skipQualifiers(p.match[open] + 1)
		if p.text(k) == ":" {
			k = p.skipInitList(k + 1)
		}
		if p.text(k) == "{" {
			defs = append(defs, funcDef{name: name, nameTok: i, open: k, shut: p.match[k]})
		}
	}
	return defs
}

func (p *parser) skipQualifiers(k int) int {
	for k < len(p.toks) {
		switch {
		case qualifierWords[p.text(k)]:
			k++
		case p.text(k) == "noexcept" && p.text(k+1) == "(":
			k = p.match[k+1] + 1
		case p.text(k) == "noexcept":
			k++
		case p.isAttrOpen(k):
			k = p.match[k] + 1
		case p.text(k) == "->":
			for k < len(p.toks) && p.text(k) != "{" && p.text(k) != ";" && p.text(k) != "=" {
				if p.text(k) == "(" || p.text(k) == "[" {
					k = p.match[k]
				}
				k++
			}
			return k
		default:
			return k
		}
	}
	return k
}

// skipInitList skips a constructor's member initializers up to its body.
func (p *parser) skipInitList(k int) int {
	for k < len(p.toks) {
		for k < len(p.toks) && (p.toks[k].kind == tIdent || p.text(k) == "::" || p.text(k) == "<" || p.text(k) == ">" || p.text(k) == ",") {
			k++
		}
		if p.text(k) != "(" && p.text(k) != "{" {
			return k
		}
		end := p.match[k]
		if p.text(k) == "{" && p.toks[k-1].kind != tIdent && p.text(k-1) != ">" {
			return k // the body
		}
		k = end + 1
		if p.text(k) == "," {
			k++
		}
	}
	return k
}

func isSyncName(s string) bool {
	return s == "threadgroup_barrier" || s == "simdgroup_barrier" || strings.HasPrefix(s, "simd_") || strings.HasPrefix(s, "quad_") ||
		// simdgroup matrix functions check that their simdgroup is converged
		s == "simdgroup_load" || s == "simdgroup_store" || s == "simdgroup_multiply" || s == "simdgroup_multiply_accumulate"
}

// syncAnalysis finds the functions (and macros) that reach a barrier or simd
// function, directly or through other functions: kernels that call one run
// as fibers. It errs on the side of fibers: global is true when a sync call
// sits where it cannot be tied to a named function (an operator, a lambda at
// namespace scope).
func (p *parser) syncAnalysis(defs []funcDef, macros []macro) (syncing map[string]bool, global bool) {
	syncing = map[string]bool{}
	uses := map[string]map[string]bool{}
	add := func(name string, toks []token) {
		if uses[name] == nil {
			uses[name] = map[string]bool{}
		}
		for _, t := range toks {
			if t.kind == tIdent {
				uses[name][t.text] = true
			}
		}
	}
	for _, d := range defs {
		add(d.name, p.toks[d.open:d.shut])
	}
	for _, m := range macros {
		add(m.name, m.body)
	}
	for changed := true; changed; {
		changed = false
		for name, u := range uses {
			if syncing[name] {
				continue
			}
			for id := range u {
				if isSyncName(id) || syncing[id] {
					syncing[name] = true
					changed = true
					break
				}
			}
		}
	}
	if syncing["operator"] {
		global = true
	}
	for i, t := range p.toks {
		if t.kind != tIdent || !isSyncName(t.text) {
			continue
		}
		inBody := false
		for _, d := range defs {
			if d.open < i && i < d.shut {
				inBody = true
				break
			}
		}
		if !inBody {
			global = true
		}
	}
	return syncing, global
}

func (p *parser) bodyNeedsSync(d funcDef, syncing map[string]bool) bool {
	for _, t := range p.toks[d.open:d.shut] {
		if t.kind == tIdent && (isSyncName(t.text) || syncing[t.text]) {
			return true
		}
	}
	return false
}
