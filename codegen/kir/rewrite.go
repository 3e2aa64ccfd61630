package kir

// Rewrite returns a copy of body with every expression passed through expr,
// innermost first (expr sees its operands already rewritten), and every
// name of a buffer, shared array, tile or variable passed through name.
// Codegen uses it to move a kernel's body into another kernel.
func Rewrite(body []Stmt, expr func(Expr) Expr, name func(string) string) []Stmt {
	r := rewriter{expr, name}
	return r.stmts(body)
}

type rewriter struct {
	fe func(Expr) Expr
	fn func(string) string
}

func (r rewriter) stmts(body []Stmt) []Stmt {
	if body == nil {
		return nil
	}
	out := make([]Stmt, len(body))
	for i, s := range body {
		out[i] = r.stmt(s)
	}
	return out
}

func (r rewriter) stmt(s Stmt) Stmt {
	switch s := s.(type) {
	case Decl:
		s.Name, s.Init = r.fn(s.Name), r.expr(s.Init)
		return s
	case Array:
		s.Name = r.fn(s.Name)
		return s
	case Shared:
		s.Name = r.fn(s.Name)
		return s
	case Assign:
		s.LHS, s.RHS = r.expr(s.LHS), r.expr(s.RHS)
		return s
	case For:
		s.Var = r.fn(s.Var)
		s.From, s.To, s.Step, s.Body = r.expr(s.From), r.expr(s.To), r.expr(s.Step), r.stmts(s.Body)
		return s
	case If:
		s.Cond, s.Then, s.Else = r.expr(s.Cond), r.stmts(s.Then), r.stmts(s.Else)
		return s
	case Tile:
		s.Name = r.fn(s.Name)
		return s
	case TileLoad:
		s.Tile, s.Src, s.Off, s.Stride = r.fn(s.Tile), r.fn(s.Src), r.expr(s.Off), r.expr(s.Stride)
		return s
	case TileStore:
		s.Tile, s.Dst, s.Off, s.Stride = r.fn(s.Tile), r.fn(s.Dst), r.expr(s.Off), r.expr(s.Stride)
		return s
	case TileMMA:
		s.D, s.A, s.B, s.C = r.fn(s.D), r.fn(s.A), r.fn(s.B), r.fn(s.C)
		return s
	}
	return s // Barrier, Return, Comment
}

func (r rewriter) expr(e Expr) Expr {
	switch x := e.(type) {
	case nil:
		return nil
	case Var:
		x.Name = r.fn(x.Name)
		e = x
	case Index:
		x.Buf, x.I = r.fn(x.Buf), r.expr(x.I)
		e = x
	case Bin:
		x.A, x.B = r.expr(x.A), r.expr(x.B)
		e = x
	case Neg:
		x.X = r.expr(x.X)
		e = x
	case Not:
		x.X = r.expr(x.X)
		e = x
	case Call:
		args := make([]Expr, len(x.Args))
		for i, a := range x.Args {
			args[i] = r.expr(a)
		}
		x.Args = args
		e = x
	case Convert:
		x.X = r.expr(x.X)
		e = x
	case Select:
		x.Cond, x.A, x.B = r.expr(x.Cond), r.expr(x.A), r.expr(x.B)
		e = x
	case Simd:
		x.X, x.Arg = r.expr(x.X), r.expr(x.Arg)
		e = x
	}
	return r.fe(e)
}
