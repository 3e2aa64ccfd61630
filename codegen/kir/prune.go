package kir

// Prune removes declarations of constant locals that nothing reads, so
// templates can declare coordinates freely and the output stays tidy.
func Prune(body []Stmt) []Stmt {
	for {
		reads := map[string]int{}
		walk(body, func(e Expr) {
			if v, ok := e.(Var); ok {
				reads[v.Name]++
			}
		}, func(s Stmt) {
			switch s := s.(type) {
			case TileLoad:
				reads[s.Tile]++
				reads[s.Src]++
			case TileStore:
				reads[s.Tile]++
				reads[s.Dst]++
			case TileMMA:
				reads[s.A]++
				reads[s.B]++
				reads[s.C]++
				reads[s.D]++
			}
		})
		removed := false
		body = filter(body, func(s Stmt) bool {
			if d, ok := s.(Decl); ok && !d.Mutable && reads[d.Name] == 0 {
				removed = true
				return false
			}
			return true
		})
		if !removed {
			return body
		}
	}
}

func filter(body []Stmt, keep func(Stmt) bool) []Stmt {
	var out []Stmt
	for _, s := range body {
		if !keep(s) {
			continue
		}
		switch t := s.(type) {
		case For:
			t.Body = filter(t.Body, keep)
			s = t
		case If:
			t.Then, t.Else = filter(t.Then, keep), filter(t.Else, keep)
			s = t
		}
		out = append(out, s)
	}
	return out
}

// walk visits every expression (and sub-expression) and statement of body.
func walk(body []Stmt, fe func(Expr), fs func(Stmt)) {
	var ex func(e Expr)
	ex = func(e Expr) {
		if e == nil {
			return
		}
		fe(e)
		switch e := e.(type) {
		case Index:
			fe(Var{e.Buf})
			ex(e.I)
		case Bin:
			ex(e.A)
			ex(e.B)
		case Neg:
			ex(e.X)
		case Not:
			ex(e.X)
		case Call:
			for _, a := range e.Args {
				ex(a)
			}
		case Convert:
			ex(e.X)
		case Select:
			ex(e.Cond)
			ex(e.A)
			ex(e.B)
		case Simd:
			ex(e.X)
			ex(e.Arg)
		}
	}
	for _, s := range body {
		fs(s)
		switch s := s.(type) {
		case Decl:
			ex(s.Init)
		case Assign:
			ex(s.LHS)
			ex(s.RHS)
		case For:
			ex(s.From)
			ex(s.To)
			ex(s.Step)
			walk(s.Body, fe, fs)
		case If:
			ex(s.Cond)
			walk(s.Then, fe, fs)
			walk(s.Else, fe, fs)
		case TileLoad:
			ex(s.Off)
			ex(s.Stride)
		case TileStore:
			ex(s.Off)
			ex(s.Stride)
		}
	}
}

// Walk visits every expression and statement of body (statements before
// their parts), for renderers and checks.
func Walk(body []Stmt, fe func(Expr), fs func(Stmt)) { walk(body, fe, fs) }
