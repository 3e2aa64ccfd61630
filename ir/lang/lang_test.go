package lang

import (
	"errors"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/ir"
)

const header = `
const batch = 2
const context = 8
const d = 4
input tokens: i32[batch, context]
param embed: f32[16, d] = normal(std = 0.02)
`

func buildSrc(t *testing.T, src string) (*ir.Graph, error) {
	t.Helper()
	return Build("m.graph", []byte(src), Options{ReadFile: func(p string) ([]byte, error) {
		return nil, errors.New("no such file")
	}})
}

// Each malformed model gives a positioned diagnostic with the source line and caret.
func TestErrors(t *testing.T) {
	cases := []struct {
		name, src, pos, msg string
	}{
		{"syntax", header + "h = gather(embed tokens)\n", "m.graph:7:18", `unexpected token "tokens"`},
		{"unknown name", header + "h = gather(embedd, tokens)\noutput y = h\n", "m.graph:7:12", `unknown name "embedd"; did you mean "embed"?`},
		{"unknown function", header + "h = gathr(embed, tokens)\n", "m.graph:7:5", `did you mean "gather"?`},
		{"unknown dtype", header + "param w: f23[d] = zeros\n", "m.graph:7:10", `did you mean "f32"?`},
		{"shape mismatch", header + "h = gather(embed, tokens)\nparam w: f32[5, 3] = zeros\ny = linear(h, w)\noutput y = y\n", "m.graph:9:5", "matmul inner dimensions differ"},
		{"broadcast mismatch", header + "h = gather(embed, tokens)\nparam w: f32[3] = zeros\noutput y = h + w\n", "m.graph:9:14", "do not broadcast"},
		{"wrong arity fn", header + "fn f(a, b) { return a + b }\noutput y = f(embed)\n", "m.graph:8:12", "f takes 2 argument(s) (a, b), got 1"},
		{"wrong arity op", header + "output y = softmax(embed, embed)\n", "m.graph:7:12", "softmax takes 1 tensor argument(s), got 2"},
		{"recursive", header + "fn f(a) { return g(a) }\nfn g(a) { return f(a) }\noutput y = f(embed)\n", "m.graph:8:18", "recursive call: f → g → f"},
		{"zero dim", header + "param w: f32[d - 4] = zeros\n", "m.graph:7:14", "dimension 0 is 0: dimensions must be positive"},
		{"negative dim", header + "param w: f32[2, -3] = zeros\n", "m.graph:7:17", "dimension 1 is -3"},
		{"unknown init", header + "param w: f32[d] = normall(std = 1)\n", "m.graph:7:19", `did you mean "normal"?`},
		{"no output", header, "m.graph:1:1", "declares no output"},
		{"bad attribute", header + "output y = softmax(embed, axis = 1)\n", "m.graph:7:12", `softmax has no attribute "axis"`},
		{"missing import", `import "nope.graph"` + "\n", "m.graph:1:1", "cannot import"},
		{"divide by zero", "const a = 1 / 0\n", "m.graph:1:13", "division by zero"},
		{"int overflow", "const a = 1099511627776 * 1099511627776\n", "m.graph:1:25", "out of range"},
		{"deep nesting", "const a = " + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100) + "\n", "m.graph:1:75", "nest deeper"},
		{"tuple count", header + "a, b = softmax(embed)\n", "m.graph:7:8", "2 names on the left, but the right side gives 1"},
		{"return at top", header + "return embed\n", "m.graph:7:1", "return outside a function"},
		{"redefined const", "const a = 1\nconst a = 2\n", "m.graph:2:1", "const a is already defined"},
		{"bad repeat", header + "repeat -1 { }\n", "m.graph:7:8", "repeat count"},
		{"nested checkpoint", header + "checkpoint { checkpoint { } }\n", "m.graph:7:14", "cannot nest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := buildSrc(t, c.src)
			if err == nil {
				t.Fatal("expected an error")
			}
			var d *Diagnostic
			if !errors.As(err, &d) {
				t.Fatalf("error %q is not a Diagnostic", err)
			}
			if d.Pos.String() != c.pos || !strings.Contains(d.Msg, c.msg) {
				t.Fatalf("got %s: %s\nwant %s: ...%s...", d.Pos, d.Msg, c.pos, c.msg)
			}
			text := err.Error()
			shown, _ := clip(d.Line, d.Pos.Col)
			if d.Line != "" && (!strings.Contains(text, shown) || !strings.Contains(text, "^")) {
				t.Fatalf("diagnostic lacks the source line and caret:\n%s", text)
			}
		})
	}
}

func TestCaretUnderColumn(t *testing.T) {
	_, err := buildSrc(t, header+"\th = gather(embedd, tokens)\n")
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got:\n%s", err)
	}
	src, caret := lines[1], lines[2]
	i := strings.Index(src, "embedd")
	if caret[i] != '^' || caret[i-1] == '^' {
		t.Fatalf("caret is not under the name:\n%s", err)
	}
}

func TestOverridesFlowToDependents(t *testing.T) {
	src := "const context = 8\nconst half = context / 2\ninput x: f32[half]\noutput y = exp(x)\n"
	g, err := Build("m.graph", []byte(src), Options{Overrides: map[string]int{"context": 32}})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Inputs[0].Value.Type.Shape[0]; got != 16 || g.Consts["half"] != 16 {
		t.Fatalf("override did not reach the dependent constant: half=%d", got)
	}
}

func TestLayersScopesAndRegions(t *testing.T) {
	src := header + `
layer blk(h) {
    param w: f32[d, d] = kaiming_uniform(a = sqrt(5)) lora
    return h + linear(h, w)
}
h = gather(embed, tokens)
repeat 2 { checkpoint { h = blk(h) } }
h = blk(h)
output y = h
`
	g, err := buildSrc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range g.Params {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "embed blk.0.w blk.1.w blk.2.w" {
		t.Fatalf("params %s", got)
	}
	if g.LayerCount("blk") != 3 || len(g.Regions) != 2 {
		t.Fatalf("layers %v regions %v", g.Layers, g.Regions)
	}
	if !g.Param("blk.1.w").LoRA {
		t.Fatal("lora flag lost")
	}
	for _, n := range g.Nodes {
		if n.Scope == "blk.2" && n.Region != 0 {
			t.Fatal("third call is outside any checkpoint")
		}
		if n.Scope == "blk.1" && n.Region != 2 {
			t.Fatalf("second call in region %d", n.Region)
		}
	}
}

func TestImportSharesDefinitions(t *testing.T) {
	files := map[string]string{
		"lib/blocks.graph": "const two = 2\nfn double(x) { return x * two }\n",
		"lib/m.graph":      "import \"blocks.graph\"\ninput x: f32[3]\noutput y = double(x)\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, errors.New("missing")
	}
	g, err := Load("lib/m.graph", Options{ReadFile: read})
	if err != nil {
		t.Fatal(err)
	}
	if n := g.Nodes[len(g.Nodes)-1]; n.Op != ir.OpScale || n.Attrs.Float("factor") != 2 {
		t.Fatalf("import did not bring double: %v", n.Op)
	}
	files["lib/blocks.graph"] = "import \"m.graph\"\n"
	if _, err := Load("lib/m.graph", Options{ReadFile: read}); err == nil || !strings.Contains(err.Error(), "import cycle") {
		t.Fatalf("want an import cycle error, got %v", err)
	}
}

func TestArithmetic(t *testing.T) {
	src := "const a = (7 + 9) / 4 * 3 - 10 % 4\nconst f = 1 / sqrt(4)\ninput x: f32[a]\noutput y = 1 - x * f\n"
	g, err := buildSrc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	if g.Consts["a"] != 10 {
		t.Fatalf("a = %d, want 10", g.Consts["a"])
	}
	if _, ok := g.Consts["f"]; ok {
		t.Fatal("float constants are not dimension constants")
	}
	if g.Nodes[1].Op != ir.OpScale || g.Nodes[1].Attrs.Float("factor") != 0.5 {
		t.Fatalf("x * f should be a scale by 0.5, got %s", g.String())
	}
}

func TestModelsBuild(t *testing.T) {
	for _, m := range []string{"tiny", "phase1", "phase2", "phase3", "scm3b"} {
		if _, err := Load("../../models/"+m+".graph", Options{}); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}
