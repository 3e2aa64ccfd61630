// Package lang is the .graph model language: a participle grammar, and a
// builder that evaluates a parsed file into an ir.Graph.
//
// A file is a sequence of declarations and statements:
//
//	model scm3b
//	import "blocks.graph"
//	const d_model = 2048               # integer (or float) arithmetic on settings
//	train qlora(rank = 84, alpha = 16)
//	input tokens: i32[batch, context]
//	param embed: f32[vocab, d_model] = normal(std = 0.02)
//	layer mamba(h) { param ...; x = rmsnorm(h, norm, eps = 1e-5); return h + x }
//	h = gather(embed, tokens)
//	repeat 30 { checkpoint { h = mamba(h) } }
//	output loss = cross_entropy(logits, targets)
//
// Functions (fn) and layers (layer) are inlined at each call; a layer call
// also opens a parameter scope ("mamba.3.in_proj") and is counted as a layer.
package lang

import (
	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"
)

// File is a parsed .graph file.
type File struct {
	Items []*Item `parser:"@@*"`
}

// Item is a top-level declaration or statement.
type Item struct {
	Pos    lexer.Position
	Model  *string `parser:"'model' @Ident"`
	Import *string `parser:"| 'import' @String"`
	Train  *Train  `parser:"| 'train' @@"`
	Func   *Func   `parser:"| @@"`
	Stmt   *Stmt   `parser:"| @@"`
}

// Train selects the default training mode: full, or qlora(rank, alpha).
type Train struct {
	Pos  lexer.Position
	Mode string   `parser:"@Ident"`
	Args *ArgList `parser:"@@?"`
}

// Func is a function or layer definition.
type Func struct {
	Pos    lexer.Position
	Kind   string   `parser:"@( 'fn' | 'layer' )"`
	Name   string   `parser:"@Ident"`
	Params []string `parser:"'(' ( @Ident ( ',' @Ident )* )? ')'"`
	Body   []*Stmt  `parser:"'{' @@* '}'"`
}

// Stmt is a statement of a function body or of the file's top level.
type Stmt struct {
	Pos        lexer.Position
	Const      *Const    `parser:"'const' @@"`
	Input      *Input    `parser:"| 'input' @@"`
	Param      *Param    `parser:"| 'param' @@"`
	Output     *Output   `parser:"| 'output' @@"`
	Repeat     *Repeat   `parser:"| 'repeat' @@"`
	Checkpoint *Block    `parser:"| 'checkpoint' @@"`
	Return     []*Expr   `parser:"| 'return' @@ ( ',' @@ )*"`
	Assign     *Assign   `parser:"| @@"`
	Call       *CallExpr `parser:"| @@"`
}

// Const defines a named number.
type Const struct {
	Name  string `parser:"@Ident '='"`
	Value *Expr  `parser:"@@"`
}

// Input declares a graph input.
type Input struct {
	Name string    `parser:"@Ident ':'"`
	Type *TypeExpr `parser:"@@"`
}

// Param declares a parameter with its initialiser and flags.
type Param struct {
	Name  string    `parser:"@Ident ':'"`
	Type  *TypeExpr `parser:"@@"`
	Init  *CallExpr `parser:"'=' @@"`
	Flags []string  `parser:"@( 'frozen' | 'nodecay' | 'lora' )*"`
}

// Output names a graph result.
type Output struct {
	Name  string `parser:"@Ident '='"`
	Value *Expr  `parser:"@@"`
}

// Block is { statements }.
type Block struct {
	Stmts []*Stmt `parser:"'{' @@* '}'"`
}

// Repeat runs its body Count times.
type Repeat struct {
	Count *Expr   `parser:"@@"`
	Body  []*Stmt `parser:"'{' @@* '}'"`
}

// Assign binds the results of an expression to names ("_" discards).
type Assign struct {
	Names []string `parser:"@Ident ( ',' @Ident )* '='"`
	Value *Expr    `parser:"@@"`
}

// TypeExpr is dtype[dims...].
type TypeExpr struct {
	Pos   lexer.Position
	DType string  `parser:"@Ident"`
	Dims  []*Expr `parser:"'[' ( @@ ( ',' @@ )* )? ']'"`
}

// Expr is a sum of terms.
type Expr struct {
	Pos  lexer.Position
	Left *Term     `parser:"@@"`
	Rest []*OpTerm `parser:"@@*"`
}

// OpTerm is "+ term" or "- term".
type OpTerm struct {
	Pos  lexer.Position
	Op   string `parser:"@( '+' | '-' )"`
	Term *Term  `parser:"@@"`
}

// Term is a product of factors.
type Term struct {
	Pos  lexer.Position
	Left *Unary      `parser:"@@"`
	Rest []*OpFactor `parser:"@@*"`
}

// OpFactor is "* factor", "/ factor" or "% factor".
type OpFactor struct {
	Pos    lexer.Position
	Op     string `parser:"@( '*' | '/' | '%' )"`
	Factor *Unary `parser:"@@"`
}

// Unary is an optionally negated primary.
type Unary struct {
	Pos     lexer.Position
	Neg     *Unary   `parser:"'-' @@"`
	Primary *Primary `parser:"| @@"`
}

// Primary is a literal, a name, a call, a list or a parenthesised expression.
type Primary struct {
	Pos    lexer.Position
	Float  *float64  `parser:"@Float"`
	Int    *int64    `parser:"| @Int"`
	String *string   `parser:"| @String"`
	Bool   *string   `parser:"| @( 'true' | 'false' )"`
	List   *List     `parser:"| @@"`
	Call   *CallExpr `parser:"| @@"`
	Paren  *Expr     `parser:"| '(' @@ ')'"`
}

// List is [a, b, ...].
type List struct {
	Items []*Expr `parser:"'[' ( @@ ( ',' @@ )* )? ']'"`
}

// CallExpr is name(args), or a bare name (Args nil): a variable, a constant,
// or an initialiser without arguments.
type CallExpr struct {
	Pos  lexer.Position
	Name string   `parser:"@Ident"`
	Args *ArgList `parser:"@@?"`
}

// ArgList is the parenthesised argument list of a call.
type ArgList struct {
	Args []*Arg `parser:"'(' ( @@ ( ',' @@ )* )? ')'"`
}

// Arg is a positional or keyword argument.
type Arg struct {
	Pos   lexer.Position
	Key   string `parser:"( @Ident '=' )?"`
	Value *Expr  `parser:"@@"`
}

var graphLexer = lexer.MustSimple([]lexer.SimpleRule{
	{Name: "Comment", Pattern: `#[^\n]*`},
	{Name: "Whitespace", Pattern: `[ \t\r\n]+`},
	{Name: "Float", Pattern: `\d+\.\d*([eE][-+]?\d+)?|\d+[eE][-+]?\d+`},
	{Name: "Int", Pattern: `\d+`},
	{Name: "String", Pattern: `"(\\.|[^"\\\n])*"`},
	{Name: "Ident", Pattern: `[A-Za-z_][A-Za-z0-9_]*`},
	{Name: "Punct", Pattern: `[-+*/%=,:()\[\]{}]`},
})

var parser = participle.MustBuild[File](
	participle.Lexer(graphLexer),
	participle.Elide("Comment", "Whitespace"),
	participle.Unquote("String"),
	participle.UseLookahead(16),
)

// Grammar returns the language's grammar in EBNF.
func Grammar() string { return parser.String() }
