package lang

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"

	"github.com/scm-magellano/magc/ir"
)

// Options adjust how a model file is built.
type Options struct {
	// Overrides replace the value of top-level integer constants where they
	// are defined (batch, context), so dependent constants follow.
	Overrides map[string]int
	// ReadFile reads the model file and its imports; os.ReadFile by default.
	ReadFile func(path string) ([]byte, error)
}

// Limits that keep a hostile or mistaken file from exhausting memory.
const (
	maxSourceBytes = 4 << 20
	maxNesting     = 64
	maxCallDepth   = 64
	maxNodes       = 1_000_000
	maxSteps       = 1_000_000 // statements executed, so empty nested loops end too
	maxRepeat      = 100_000
)

// Load parses and builds the model file at path, with its imports.
func Load(path string, opts Options) (*ir.Graph, error) {
	read := opts.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	src, err := guard(read)(path)
	if err != nil {
		return nil, err
	}
	return build(path, src, opts, read)
}

// Build builds a model from source text; imports are read relative to filename.
func Build(filename string, src []byte, opts Options) (*ir.Graph, error) {
	read := opts.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	return build(filename, src, opts, read)
}

// guard checks a file on disk before read reads it whole: a device such as
// /dev/zero, or a file over maxSourceBytes, is refused without reading.
// (Embedded models are not on disk: Stat fails and read goes ahead.)
func guard(read func(string) ([]byte, error)) func(string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		if info, err := os.Stat(path); err == nil {
			if !info.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file", path)
			}
			if info.Size() > maxSourceBytes {
				return nil, fmt.Errorf("%s is %d bytes, more than the %d bytes (4 MiB) a model file may be", path, info.Size(), maxSourceBytes)
			}
		}
		return read(path)
	}
}

func build(filename string, src []byte, opts Options, read func(string) ([]byte, error)) (*ir.Graph, error) {
	read = guard(read)
	e := &evaluator{
		b:       ir.NewBuilder(strings.TrimSuffix(filepath.Base(filename), filepath.Ext(filename))),
		sources: map[string][]byte{},
		funcs:   map[string]*Func{},
		consts:  map[string]val{},
		opts:    opts,
		read:    read,
		counts:  map[string]int{},
		loaded:  map[string]bool{},
	}
	g, err := e.run(filename, src)
	if err != nil {
		return nil, e.diagnose(err)
	}
	return g, nil
}

type evaluator struct {
	b       *ir.Builder
	sources map[string][]byte
	funcs   map[string]*Func
	consts  map[string]val
	opts    Options
	read    func(string) ([]byte, error)
	stack   []*Func        // calls in progress, for recursion errors
	counts  map[string]int // calls of each function per scope, for scope names
	loaded  map[string]bool
	imports []string // imports in progress, for cycle errors
	steps   int
}

// frame holds the variables of the top level or of one call.
type frame struct {
	vars  map[string]val
	scope string
	top   bool
}

type posError struct {
	pos lexer.Position
	msg string
}

func (e *posError) Error() string { return e.msg }

func errAt(pos lexer.Position, format string, args ...any) error {
	return &posError{pos: pos, msg: fmt.Sprintf(format, args...)}
}

func irPos(p lexer.Position) ir.Pos { return ir.Pos{File: p.Filename, Line: p.Line, Col: p.Column} }

func (e *evaluator) parse(filename string, src []byte) (*File, error) {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf")) // a UTF-8 byte-order mark is not source
	e.sources[filename] = src
	if len(src) > maxSourceBytes {
		return nil, errAt(lexer.Position{Filename: filename, Line: 1, Column: 1}, "file is larger than %d bytes", maxSourceBytes)
	}
	if err := checkNesting(filename, src); err != nil {
		return nil, err
	}
	return parser.ParseBytes(filename, src)
}

// checkNesting bounds the parser's recursion before parsing: the parser
// recurses on brackets and on unary minus, and Go cannot recover from a
// stack overflow. It reads the file with the parser's own lexer, so a '#'
// or a bracket inside a string is what the parser takes it for. Each open
// bracket counts, with the unary minuses before it (-(-(x)) is four deep).
func checkNesting(filename string, src []byte) error {
	lex, err := graphLexer.LexString(filename, string(src))
	if err != nil {
		return nil // the parser reports it
	}
	syms := graphLexer.Symbols()
	punct, comment, space := syms["Punct"], syms["Comment"], syms["Whitespace"]
	var open []int // per open bracket: its level and the minuses before it
	depth, chain := 0, 0
	operand := false // the last token ends an operand: a '-' after it is binary
	for {
		tok, err := lex.Next()
		if err != nil || tok.EOF() {
			return nil
		}
		switch {
		case tok.Type == comment || tok.Type == space:
			continue
		case tok.Type != punct:
			operand, chain = true, 0
			continue
		}
		switch tok.Value {
		case "(", "[", "{":
			n := 1 + chain
			open = append(open, n)
			depth, chain, operand = depth+n, 0, false
		case ")", "]", "}":
			if len(open) > 0 {
				depth -= open[len(open)-1]
				open = open[:len(open)-1]
			}
			operand, chain = true, 0
		case "-":
			if !operand {
				chain++
			}
			operand = false
		default:
			operand = false
		}
		if depth+chain > maxNesting {
			return errAt(tok.Pos, "brackets and unary minuses nest deeper than %d levels", maxNesting)
		}
	}
}

func (e *evaluator) run(filename string, src []byte) (*ir.Graph, error) {
	f, err := e.parse(filename, src)
	if err != nil {
		return nil, err
	}
	e.loaded[samePath(filename)] = true
	e.imports = []string{filename}
	if err := e.hoist(filename, f); err != nil {
		return nil, err
	}
	top := &frame{vars: map[string]val{}, top: true}
	if err := e.items(filename, f, top); err != nil {
		return nil, err
	}
	g := e.b.G
	if len(g.Outputs) == 0 {
		return nil, errAt(lexer.Position{Filename: filename, Line: 1, Column: 1}, "the model declares no output (add: output loss = ...)")
	}
	if g.Train.Mode == "" {
		g.Train = ir.TrainSpec{Mode: "full"}
	}
	for name, v := range e.consts {
		if v.isInt {
			g.Consts[name] = int(v.i)
		}
	}
	return e.b.Finish()
}

// hoist collects function definitions of a file and its imports, so calls
// may precede definitions.
func (e *evaluator) hoist(filename string, f *File) error {
	for _, it := range f.Items {
		if it.Func == nil {
			continue
		}
		if prev, ok := e.funcs[it.Func.Name]; ok {
			return errAt(it.Func.Pos, "%s %s is already defined at %s", it.Func.Kind, it.Func.Name, irPos(prev.Pos))
		}
		if _, ok := ir.Lookup(ir.Op(it.Func.Name)); ok || builtins[it.Func.Name] != nil {
			return errAt(it.Func.Pos, "%s %s would hide the built-in of that name", it.Func.Kind, it.Func.Name)
		}
		e.funcs[it.Func.Name] = it.Func
	}
	return nil
}

func (e *evaluator) items(filename string, f *File, top *frame) error {
	imported := len(e.imports) > 1
	for _, it := range f.Items {
		var err error
		switch {
		case it.Model != nil:
			if imported {
				return errAt(it.Pos, "an imported file cannot name the model")
			}
			e.b.G.Name = *it.Model
		case it.Import != nil:
			err = e.importFile(filename, it)
		case it.Train != nil:
			if imported {
				return errAt(it.Pos, "an imported file cannot choose the training mode")
			}
			err = e.train(it.Train)
		case it.Func != nil:
		case it.Stmt != nil:
			if imported && it.Stmt.Const == nil {
				return errAt(it.Pos, "an imported file may only hold fn, layer, const and import")
			}
			_, err = e.stmt(it.Stmt, top)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *evaluator) importFile(from string, it *Item) error {
	path := *it.Import
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(from), path)
	}
	for _, p := range e.imports {
		if samePath(p) == samePath(path) {
			return errAt(it.Pos, "import cycle: %s → %s", strings.Join(e.imports, " → "), path)
		}
	}
	if e.loaded[samePath(path)] {
		return nil
	}
	src, err := e.read(path)
	if err != nil {
		return errAt(it.Pos, "cannot import %q: %v", *it.Import, unwrapPathError(err))
	}
	f, err := e.parse(path, src)
	if err != nil {
		return err
	}
	e.loaded[samePath(path)] = true
	if err := e.hoist(path, f); err != nil {
		return err
	}
	e.imports = append(e.imports, path)
	defer func() { e.imports = e.imports[:len(e.imports)-1] }()
	return e.items(path, f, &frame{vars: map[string]val{}, top: true})
}

// samePath is the key two spellings of one file share ("./a.graph",
// "a.graph", "/abs/a.graph"): its absolute, cleaned path.
func samePath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (e *evaluator) train(t *Train) error {
	spec := ir.TrainSpec{Mode: t.Mode}
	kw, err := e.keywordNumbers(t.Args, &frame{vars: map[string]val{}})
	if err != nil {
		return err
	}
	for k := range kw {
		if k != "lr" && (t.Mode != "qlora" || (k != "rank" && k != "alpha")) {
			return errAt(t.Pos, "train %s takes %s, not %q", t.Mode, map[string]string{"full": "lr", "qlora": "rank, alpha and lr"}[t.Mode], k)
		}
	}
	if lr, ok := kw["lr"]; ok {
		if lr.f <= 0 {
			return errAt(t.Pos, "the learning rate must be positive")
		}
		spec.LR = lr.f
	}
	switch t.Mode {
	case "full":
	case "qlora":
		r, ok := kw["rank"]
		if !ok || !r.isInt || r.i < 1 {
			return errAt(t.Pos, "train qlora needs a positive integer rank")
		}
		a, ok := kw["alpha"]
		if !ok || a.f <= 0 {
			return errAt(t.Pos, "train qlora needs a positive alpha")
		}
		spec.Rank, spec.Alpha = int(r.i), a.f
	default:
		return errAt(t.Pos, "unknown training mode %q%s", t.Mode, suggest(t.Mode, []string{"full", "qlora"}))
	}
	e.b.G.Train = spec
	return nil
}

// keywordNumbers evaluates keyword-only numeric arguments.
func (e *evaluator) keywordNumbers(args *ArgList, fr *frame) (map[string]val, error) {
	out := map[string]val{}
	if args == nil {
		return out, nil
	}
	for _, a := range args.Args {
		if a.Key == "" {
			return nil, errAt(a.Pos, "arguments here are named: write name = value")
		}
		v, err := e.expr(a.Value, fr)
		if err != nil {
			return nil, err
		}
		if v.kind != kNum {
			return nil, errAt(a.Pos, "%s must be a number, got %s", a.Key, v.describe())
		}
		if _, dup := out[a.Key]; dup {
			return nil, errAt(a.Pos, "argument %s is given twice", a.Key)
		}
		out[a.Key] = v
	}
	return out, nil
}

func suggest(name string, candidates []string) string {
	if s := ir.Closest(name, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// numberRange matches the parser's words for a literal out of range.
var numberRange = regexp.MustCompile(`strconv\.Parse(Int|Float): parsing "([^"]*)": value out of range`)

// plainMessage words the parser's messages without Go's library names.
func plainMessage(msg string) string {
	if m := numberRange.FindStringSubmatch(msg); m != nil {
		if m[1] == "Int" {
			return fmt.Sprintf("the number %s is too large (integers go up to 9223372036854775807)", m[2])
		}
		return fmt.Sprintf("the number %s is too large (floats go up to about 1.8e308)", m[2])
	}
	if rest, ok := strings.CutPrefix(msg, "failed to conform: "); ok {
		return rest
	}
	return msg
}

// diagnose turns any build error into a Diagnostic with the source line.
func (e *evaluator) diagnose(err error) error {
	var pos ir.Pos
	var msg string
	var pe *posError
	var ie *ir.Error
	var perr participle.Error
	switch {
	case errors.As(err, &pe):
		pos, msg = irPos(pe.pos), pe.msg
	case errors.As(err, &ie):
		pos, msg = ie.Pos, ie.Msg
	case errors.As(err, &perr):
		pos, msg = irPos(perr.Position()), plainMessage(perr.Message())
	default:
		return err
	}
	return &Diagnostic{Pos: pos, Msg: msg, Line: sourceLine(e.sources[pos.File], pos.Line)}
}

// sortedKeys lists map keys in order, for deterministic messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
