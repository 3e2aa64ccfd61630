// Package kir is magc's target-neutral kernel IR: what one GPU kernel does,
// with nothing Metal-specific in it. Renderers (codegen/msl, later CUDA)
// print it. A kernel is a grid of threadgroups running a body of structured
// statements over typed scalar expressions, threadgroup arrays, barriers,
// simd-group reductions and 8×8 simd-group matrix tiles.
package kir

// Type is a scalar type of kernel code.
type Type uint8

const (
	F32 Type = iota + 1
	F16
	BF16
	I32
	U32
	U8
	Bool
)

// Module is a set of kernels with the constant tables they share (one .metal file).
type Module struct {
	Tables  []Table
	Kernels []*Kernel
}

// Table is a constant array at file scope (the NF4 codebook, say).
type Table struct {
	Name   string
	Type   Type
	Values []float64
}

// Kernel is one compute kernel.
type Kernel struct {
	Name string
	// Doc is a comment printed above the kernel (the IR ops it fuses).
	Doc    string
	Params []Param
	// Threads per threadgroup and threadgroups in the grid.
	Threads, Groups [3]int
	Body            []Stmt
}

// Param is a buffer argument, bound at [[buffer(i)]] in order.
type Param struct {
	Name     string
	Elem     Type
	ReadOnly bool
}

// Stmt is a statement.
type Stmt interface{ stmt() }

// Expr is an expression.
type Expr interface{ expr() }

type (
	// Decl declares a local variable (Mutable: assigned again later).
	Decl struct {
		Name    string
		Type    Type
		Init    Expr
		Mutable bool
	}
	// Array declares a thread-private array of Len elements.
	Array struct {
		Name string
		Type Type
		Len  int
	}
	// Shared declares a threadgroup array of Len elements.
	Shared struct {
		Name string
		Type Type
		Len  int
	}
	// Assign sets a variable or an element: Op is "=", "+=", "*=", "max=".
	Assign struct {
		LHS Expr // Var or Index
		Op  string
		RHS Expr
	}
	// For loops Var from From while Var < To, by Step.
	For struct {
		Var            string
		From, To, Step Expr
		Body           []Stmt
	}
	// If runs Then when Cond holds, else Else.
	If struct {
		Cond       Expr
		Then, Else []Stmt
	}
	// Barrier synchronises the threadgroup and orders its threadgroup
	// memory. Device is set where threads of the threadgroup exchange
	// device memory across it (one writes, another reads after): only then
	// must it order device memory too, which costs more on a GPU.
	Barrier struct{ Device bool }
	// Return ends the thread.
	Return struct{}
	// Comment is a line of explanation in the output.
	Comment struct{ Text string }

	// Tile declares an 8×8 simd-group matrix tile of Type, zero-filled.
	Tile struct {
		Name string
		Type Type
	}
	// TileLoad loads a tile from Src at element offset Off with row stride
	// Stride, transposed when Transpose is set. Src names a buffer or shared array.
	TileLoad struct {
		Tile, Src   string
		Off, Stride Expr
		Transpose   bool
	}
	// TileStore stores a tile to Dst at Off with row stride Stride.
	TileStore struct {
		Tile, Dst   string
		Off, Stride Expr
	}
	// TileMMA computes D = A·B + C on tiles.
	TileMMA struct{ D, A, B, C string }
)

type (
	// Lit is a numeric literal of a type.
	Lit struct {
		Type Type
		V    float64
	}
	// Var reads a local variable or parameter by name.
	Var struct{ Name string }
	// Index reads element I of buffer, shared or thread array Buf.
	Index struct {
		Buf string
		I   Expr
	}
	// Bin is a binary operator: + - * / % < <= > >= == != && || & | >> <<, or min, max.
	Bin struct {
		Op   string
		A, B Expr
	}
	// Neg is −X; Not is !X.
	Neg struct{ X Expr }
	Not struct{ X Expr }
	// Call applies a math function: exp, log, sqrt, rsqrt, abs, tanh, fma, pow, floor.
	Call struct {
		Fn   string
		Args []Expr
	}
	// Convert converts X to Type.
	Convert struct {
		Type Type
		X    Expr
	}
	// Select is Cond ? A : B.
	Select struct{ Cond, A, B Expr }
	// Builtin is a thread-position value: "thread" (position in grid),
	// "local" (in threadgroup), "group" (threadgroup in grid), "lane" (in
	// simd-group, one dimension) or "simdgroup" (index in threadgroup).
	Builtin struct {
		Kind string
		Dim  int
	}
	// Simd is a simd-group collective: "sum", "max", "min", "prefix_sum"
	// (exclusive), "shuffle_down" and "shuffle_xor" (Arg is the delta), "broadcast" (Arg the lane).
	Simd struct {
		Op  string
		X   Expr
		Arg Expr
	}
)

func (Decl) stmt()      {}
func (Array) stmt()     {}
func (Shared) stmt()    {}
func (Assign) stmt()    {}
func (For) stmt()       {}
func (If) stmt()        {}
func (Barrier) stmt()   {}
func (Return) stmt()    {}
func (Comment) stmt()   {}
func (Tile) stmt()      {}
func (TileLoad) stmt()  {}
func (TileStore) stmt() {}
func (TileMMA) stmt()   {}

func (Lit) expr()     {}
func (Var) expr()     {}
func (Index) expr()   {}
func (Bin) expr()     {}
func (Neg) expr()     {}
func (Not) expr()     {}
func (Call) expr()    {}
func (Convert) expr() {}
func (Select) expr()  {}
func (Builtin) expr() {}
func (Simd) expr()    {}

// Small constructors keep templates readable.

// F is an f32 literal; I an i32 literal; U a u32 literal.
func F(v float64) Expr { return Lit{F32, v} }
func I(v int) Expr     { return Lit{I32, float64(v)} }
func U(v int) Expr     { return Lit{U32, float64(v)} }

// V reads a variable.
func V(name string) Expr { return Var{name} }

// At reads buf[i].
func At(buf string, i Expr) Expr { return Index{buf, i} }

// Op builds a binary expression.
func Op(op string, a, b Expr) Expr { return Bin{op, a, b} }

func Add(a, b Expr) Expr { return Bin{"+", a, b} }
func Sub(a, b Expr) Expr { return Bin{"-", a, b} }
func Mul(a, b Expr) Expr { return Bin{"*", a, b} }
func Div(a, b Expr) Expr { return Bin{"/", a, b} }
func Mod(a, b Expr) Expr { return Bin{"%", a, b} }
func Lt(a, b Expr) Expr  { return Bin{"<", a, b} }
func Max(a, b Expr) Expr { return Bin{"max", a, b} }
func Min(a, b Expr) Expr { return Bin{"min", a, b} }

// Fn applies a math function.
func Fn(name string, args ...Expr) Expr { return Call{name, args} }

// Thread is the thread's position in the grid along dim; Local in its
// threadgroup; Group the threadgroup's position.
func Thread(dim int) Expr { return Builtin{"thread", dim} }
func Local(dim int) Expr  { return Builtin{"local", dim} }
func Group(dim int) Expr  { return Builtin{"group", dim} }

// Set assigns rhs to lhs.
func Set(lhs, rhs Expr) Stmt { return Assign{lhs, "=", rhs} }

// Loop is for (v = from; v < to; v += step).
func Loop(v string, from, to, step Expr, body ...Stmt) Stmt { return For{v, from, to, step, body} }
