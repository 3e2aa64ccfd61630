package sim

import (
	"fmt"
	"strconv"
	"strings"
)

// program is MSL source read for the sim: its kernels, and the source
// rewritten for the shim with every line where it was.
type program struct {
	kernels []*kernelInfo
	source  string
}

type kernelInfo struct {
	name       string
	qual       string // the C++ name the wrapper calls: "::name", "::ns::name"
	line       int
	endLine    int // line of the body's closing brace
	params     []param
	maxThreads int  // [[max_total_threads_per_threadgroup(n)]], else 1024
	fibers     bool // calls barriers or simd functions, maybe through helpers
	nbuf       int  // highest [[buffer(i)]] + 1
}

type param struct {
	name  string
	typ   string // as written, for messages
	space string // device, constant, threadgroup, thread or ""
	attr  string // "buffer" or a thread position attribute
	index int    // [[buffer(index)]], or -1
	line  int
}

// positionAttrs maps each supported thread position attribute to the field
// of magc_sim::Pos (or constant) the wrapper passes.
var positionAttrs = map[string]string{
	"thread_position_in_grid":             "p.tpig",
	"thread_position_in_threadgroup":      "p.tpitg",
	"threadgroup_position_in_grid":        "p.tgpig",
	"threads_per_threadgroup":             "p.tptg",
	"dispatch_threads_per_threadgroup":    "p.tptg",
	"threadgroups_per_grid":               "p.tgpg",
	"threads_per_grid":                    "p.tpg",
	"thread_index_in_threadgroup":         "p.tiitg",
	"thread_index_in_simdgroup":           "p.lane",
	"simdgroup_index_in_threadgroup":      "p.sgitg",
	"simdgroups_per_threadgroup":          "p.sgptg",
	"dispatch_simdgroups_per_threadgroup": "p.sgptg",
	"threads_per_simdgroup":               "32u",
	"thread_execution_width":              "32u",
}

// unsupportedAttrs are MSL attributes the sim refuses wherever they appear.
var unsupportedAttrs = map[string]string{
	"texture":                        "[[texture(n)]] (textures)",
	"sampler":                        "[[sampler(n)]] (samplers)",
	"stage_in":                       "[[stage_in]]",
	"function_constant":              "[[function_constant(n)]] (function constants)",
	"threadgroup":                    "[[threadgroup(n)]] (threadgroup memory sized by the host)",
	"thread_index_in_quadgroup":      "[[thread_index_in_quadgroup]] (quad-groups)",
	"quadgroup_index_in_threadgroup": "[[quadgroup_index_in_threadgroup]] (quad-groups)",
	"quadgroups_per_threadgroup":     "[[quadgroups_per_threadgroup]] (quad-groups)",
	"visible":                        "[[visible]] (visible functions)",
	"raster_order_group":             "[[raster_order_group]]",
	"imageblock_data":                "[[imageblock_data]] (imageblocks)",
	"color":                          "[[color(n)]] (render pipelines)",
	"position":                       "[[position]] (render pipelines)",
	"vertex_id":                      "[[vertex_id]] (vertex functions)",
	"instance_id":                    "[[instance_id]] (vertex functions)",
	"payload":                        "[[payload]] (mesh shaders)",
	"grid_origin":                    "[[grid_origin]]",
	"grid_size":                      "[[grid_size]]",
	"vertex":                         "[[vertex]] (vertex functions)",
	"fragment":                       "[[fragment]] (fragment functions)",
	"host_name":                      "[[host_name]] (template kernels)",
}

const maxThreadsPerThreadgroup = 1024

type parser struct {
	src   string
	toks  []token
	match []int // index of the matching bracket for ( [ { ) ] }, else -1
	outer []int // index of the innermost enclosing '{', else -1
}

func errAt(line int, format string, args ...any) error {
	return fmt.Errorf("kernels.metal:%d: %s", line, fmt.Sprintf(format, args...))
}

func parseProgram(src string) (*program, error) {
	lx, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{src: src, toks: lx.toks}
	if err := p.matchBrackets(); err != nil {
		return nil, err
	}
	if err := p.checkAttributes(); err != nil {
		return nil, err
	}
	if err := checkMacros(lx.macros); err != nil {
		return nil, err
	}
	defs := p.funcDefs()
	syncing, global := p.syncAnalysis(defs, lx.macros)
	prog := &program{}
	names := map[string]int{}
	for _, d := range defs {
		if !p.isKernel(d) {
			continue
		}
		k, err := p.kernel(d)
		if err != nil {
			return nil, err
		}
		if prev, ok := names[k.name]; ok {
			return nil, errAt(k.line, "kernel %s is defined twice (also at line %d)", k.name, prev)
		}
		names[k.name] = k.line
		k.fibers = global || syncing[d.name] || p.bodyNeedsSync(d, syncing)
		prog.kernels = append(prog.kernels, k)
	}
	edits, err := p.rewrites(defs)
	if err != nil {
		return nil, err
	}
	prog.source = applyEdits(src, edits)
	return prog, nil
}

func (p *parser) matchBrackets() error {
	p.match = make([]int, len(p.toks))
	p.outer = make([]int, len(p.toks))
	var stack []int
	var braces []int
	for i, t := range p.toks {
		p.match[i] = -1
		p.outer[i] = -1
		if len(braces) > 0 {
			p.outer[i] = braces[len(braces)-1]
		}
		if t.kind != tPunct {
			continue
		}
		switch t.text {
		case "(", "[", "{":
			stack = append(stack, i)
			if t.text == "{" {
				braces = append(braces, i)
			}
		case ")", "]", "}":
			want := map[string]string{")": "(", "]": "[", "}": "{"}[t.text]
			if len(stack) == 0 || p.toks[stack[len(stack)-1]].text != want {
				return errAt(t.line, "unbalanced '%s'", t.text)
			}
			o := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			p.match[o], p.match[i] = i, o
			if t.text == "}" {
				braces = braces[:len(braces)-1]
			}
		}
	}
	if len(stack) > 0 {
		t := p.toks[stack[len(stack)-1]]
		return errAt(t.line, "'%s' is never closed", t.text)
	}
	return nil
}

func (p *parser) text(i int) string {
	if i < 0 || i >= len(p.toks) {
		return ""
	}
	return p.toks[i].text
}

// isAttrOpen reports whether tokens i, i+1 open an attribute: [[ ... ]].
func (p *parser) isAttrOpen(i int) bool {
	return p.text(i) == "[" && p.text(i+1) == "[" && p.match[i] == p.match[i+1]+1
}

// attr is one attribute of a [[...]] list: buffer(0) has name "buffer"
// and args [0].
type attr struct {
	name string
	args []token
	line int
}

// attributes reads the attribute list that opens at i, and returns the
// index after its closing ]].
func (p *parser) attributes(i int) ([]attr, int) {
	end := p.match[i]
	var out []attr
	j := i + 2
	for j < end-1 {
		t := p.toks[j]
		if t.kind != tIdent {
			j++
			continue
		}
		a := attr{name: t.text, line: t.line}
		j++
		for p.text(j) == "::" && j+1 < end-1 {
			a.name += "::" + p.text(j+1)
			j += 2
		}
		if p.text(j) == "(" {
			a.args = p.toks[j+1 : p.match[j]]
			j = p.match[j] + 1
		}
		out = append(out, a)
	}
	return out, end + 1
}

func (p *parser) checkAttributes() error {
	for i := range p.toks {
		if !p.isAttrOpen(i) {
			continue
		}
		attrs, _ := p.attributes(i)
		for _, a := range attrs {
			if what, ok := unsupportedAttrs[a.name]; ok && a.name != "threadgroup" && a.name != "texture" && a.name != "sampler" {
				return errAt(a.line, "magc sim: %s is not supported", what)
			}
		}
	}
	for i, t := range p.toks {
		if (t.text == "vertex" || t.text == "fragment") && t.kind == tIdent && p.outer[i] < 0 &&
			i+2 < len(p.toks) && p.toks[i+1].kind == tIdent && p.toks[i+2].kind == tIdent {
			return errAt(t.line, "magc sim: %s functions are not supported (compute kernels only)", t.text)
		}
	}
	return nil
}

// kernelStart returns the index of the `kernel` keyword (or of the [[ of
// [[kernel]]) of a definition, or -1.
func (p *parser) kernelStart(d funcDef) int {
	i := d.nameTok
	if p.text(i-1) != "void" {
		return -1
	}
	if p.text(i-2) == "kernel" {
		return i - 2
	}
	if p.text(i-2) == "]" && p.text(i-3) == "]" {
		o := p.match[i-2]
		if o >= 0 && p.isAttrOpen(o) {
			attrs, _ := p.attributes(o)
			for _, a := range attrs {
				if a.name == "kernel" {
					return o
				}
			}
		}
	}
	return -1
}

func (p *parser) isKernel(d funcDef) bool { return p.kernelStart(d) >= 0 }

func (p *parser) kernel(d funcDef) (*kernelInfo, error) {
	nameTok := p.toks[d.nameTok]
	k := &kernelInfo{
		name:       nameTok.text,
		line:       nameTok.line,
		endLine:    p.toks[d.shut].line,
		maxThreads: maxThreadsPerThreadgroup,
	}
	start := p.kernelStart(d)
	// Attributes before the kernel: [[max_total_threads_per_threadgroup(n)]].
	for j := start - 1; p.text(j) == "]" && p.text(j-1) == "]"; {
		o := p.match[j]
		if o < 0 || !p.isAttrOpen(o) {
			break
		}
		attrs, _ := p.attributes(o)
		for _, a := range attrs {
			if a.name == "max_total_threads_per_threadgroup" {
				n, err := intArg(a)
				if err != nil || n < 1 || n > maxThreadsPerThreadgroup {
					return nil, errAt(a.line, "kernel %s: [[max_total_threads_per_threadgroup]] needs an integer from 1 to %d", k.name, maxThreadsPerThreadgroup)
				}
				k.maxThreads = n
			}
		}
		j = o - 1
	}
	if p.text(start-1) == ">" {
		return nil, errAt(k.line, "magc sim: template kernels are not supported (kernel %s)", k.name)
	}
	// Kernels must be at namespace scope; build the qualified name.
	qual := "::" + k.name
	for b := p.outer[d.nameTok]; b >= 0; b = p.outer[b] {
		switch {
		case p.text(b-2) == "namespace" && p.toks[b-1].kind == tIdent:
			qual = "::" + p.text(b-1) + qual
		case p.text(b-1) == "namespace":
		case p.toks[b-1].kind == tString && p.text(b-2) == "extern":
		default:
			return nil, errAt(k.line, "kernel %s must be declared at namespace scope", k.name)
		}
	}
	k.qual = qual
	// Parameters.
	open := d.nameTok + 1
	shut := p.match[open]
	seen := map[int]string{}
	for _, ptoks := range p.splitParams(open+1, shut) {
		prm, err := p.param(k.name, ptoks)
		if err != nil {
			return nil, err
		}
		if prm.attr == "buffer" {
			if other, dup := seen[prm.index]; dup {
				return nil, errAt(prm.line, "kernel %s: parameters %s and %s both use [[buffer(%d)]]", k.name, other, prm.name, prm.index)
			}
			seen[prm.index] = prm.name
			if prm.index+1 > k.nbuf {
				k.nbuf = prm.index + 1
			}
		}
		k.params = append(k.params, prm)
	}
	return k, nil
}

// splitParams splits tokens [from, to) at top-level commas.
func (p *parser) splitParams(from, to int) [][]int {
	var out [][]int
	var cur []int
	angle := 0
	for i := from; i < to; i++ {
		switch p.text(i) {
		case "(", "[", "{":
			for j := i; j <= p.match[i]; j++ {
				cur = append(cur, j)
			}
			i = p.match[i]
			continue
		case "<":
			angle++
		case ">":
			angle--
		case ",":
			if angle == 0 {
				out = append(out, cur)
				cur = nil
				continue
			}
		}
		cur = append(cur, i)
	}
	if len(cur) > 0 && !(len(cur) == 1 && p.text(cur[0]) == "void") {
		out = append(out, cur)
	}
	return out
}

func intArg(a attr) (int, error) {
	if len(a.args) != 1 || a.args[0].kind != tNumber {
		return 0, fmt.Errorf("not an integer")
	}
	s := strings.TrimRight(strings.ToLower(a.args[0].text), "ul")
	n, err := strconv.ParseInt(s, 0, 32)
	return int(n), err
}

var addressSpaces = map[string]bool{"device": true, "constant": true, "threadgroup": true, "thread": true}

func (p *parser) param(kname string, idx []int) (param, error) {
	prm := param{index: -1, line: p.toks[idx[0]].line}
	var attrs []attr
	// Trailing attributes: `device float* x [[buffer(0)]]`.
	body := idx
	for len(body) >= 4 && p.text(body[len(body)-1]) == "]" && p.text(body[len(body)-2]) == "]" {
		o := p.match[body[len(body)-1]]
		if o < 0 || !p.isAttrOpen(o) {
			break
		}
		as, _ := p.attributes(o)
		attrs = append(attrs, as...)
		cut := len(body)
		for cut > 0 && body[cut-1] >= o {
			cut--
		}
		body = body[:cut]
	}
	var words []string
	for _, i := range body {
		words = append(words, p.text(i))
	}
	if len(body) == 0 || p.toks[body[len(body)-1]].kind != tIdent {
		return prm, errAt(prm.line, "kernel %s: cannot read parameter %q", kname, joinTokens(words))
	}
	prm.name = words[len(words)-1]
	prm.typ = joinTokens(words[:len(words)-1])
	for _, w := range words {
		if addressSpaces[w] {
			prm.space = w
			break
		}
	}
	if len(attrs) == 0 {
		return prm, errAt(prm.line, "kernel %s: parameter %s needs an attribute such as [[buffer(n)]] or [[thread_position_in_grid]]", kname, prm.name)
	}
	for _, a := range attrs {
		switch {
		case a.name == "buffer":
			n, err := intArg(a)
			if err != nil || n < 0 || n > 30 {
				return prm, errAt(a.line, "kernel %s: parameter %s: [[buffer(n)]] needs an integer index from 0 to 30", kname, prm.name)
			}
			if prm.space != "device" && prm.space != "constant" {
				return prm, errAt(a.line, "kernel %s: buffer parameter %s must be in the device or constant address space", kname, prm.name)
			}
			if !strings.ContainsAny(prm.typ, "*&") {
				return prm, errAt(a.line, "kernel %s: buffer parameter %s must be a pointer or a reference", kname, prm.name)
			}
			prm.attr, prm.index = "buffer", n
		case positionAttrs[a.name] != "":
			prm.attr = a.name
		case unsupportedAttrs[a.name] != "":
			return prm, errAt(a.line, "magc sim: %s is not supported (kernel %s, parameter %s)", unsupportedAttrs[a.name], kname, prm.name)
		default:
			return prm, errAt(a.line, "magc sim: attribute [[%s]] is not supported (kernel %s, parameter %s)", a.name, kname, prm.name)
		}
	}
	return prm, nil
}

// joinTokens writes tokens back as C++ is usually written: "device float* x".
func joinTokens(words []string) string {
	var b strings.Builder
	for i, w := range words {
		if i > 0 && !strings.Contains("*&,>:)]", w[:1]) && !strings.HasSuffix(words[i-1], "<") &&
			!strings.HasSuffix(words[i-1], "::") && !strings.HasSuffix(words[i-1], "(") && !strings.HasSuffix(words[i-1], "[") {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	return b.String()
}
