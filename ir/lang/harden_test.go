package lang

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The nesting guard sees what the parser sees: '#' and brackets inside
// strings, and unary minuses, which the parser recurses on as on brackets.
func TestNestingGuardSeesWhatTheParserSees(t *testing.T) {
	deep := strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000)
	for name, src := range map[string]string{
		"hash in a string":    `output y = f("#", ` + deep + ")\n",
		"unary minus":         "const a = " + strings.Repeat("-", 200000) + "1\n",
		"spaced unary minus":  "const a = " + strings.Repeat("- ", 100000) + "1\n",
		"minus and brackets":  "const a = " + strings.Repeat("-(", 40) + "1" + strings.Repeat(")", 40) + "\n",
		"after a comment":     "# (((\nconst a = " + deep + "\n",
		"nested blocks":       strings.Repeat("repeat 1 { ", 100) + strings.Repeat("} ", 100) + "\n",
		"string then nesting": "import \"((\"\nconst a = " + deep + "\n",
	} {
		_, err := buildSrc(t, src)
		if err == nil || !strings.Contains(err.Error(), "nest deeper than 64") {
			t.Errorf("%s: %.200v", name, err)
		}
	}
	// Not nesting: binary minus chains, brackets in strings and comments.
	for name, src := range map[string]string{
		"binary minus":        "const a = 1" + strings.Repeat(" - 1", 1000) + "\noutput y = a\n",
		"brackets in string":  `import "` + strings.Repeat("(", 100) + `"` + "\n",
		"brackets in comment": "# " + strings.Repeat("(", 100) + "\nconst a = 1\n",
		"a few minuses":       "const a = - - -(1)\n",
	} {
		_, err := buildSrc(t, src)
		if err != nil && strings.Contains(err.Error(), "nest deeper") {
			t.Errorf("%s: %.200v", name, err)
		}
	}
}

// Messages a user meets in a model file: numbers out of range without Go's
// library names, long lines clipped with the caret under the spot, a BOM
// ignored, and an import cycle spelled by relative paths called a cycle.
func TestClearMessages(t *testing.T) {
	for src, want := range map[string]string{
		"const a = 99999999999999999999\n": "the number 99999999999999999999 is too large (integers go up to",
		"const a = 1e999\n":                "the number 1e999 is too large (floats go up to",
	} {
		_, err := buildSrc(t, src)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "strconv") || strings.Contains(err.Error(), "conform") {
			t.Errorf("%q: %v", src, err)
		}
	}
	// A 1 MB line: the message stays short and the caret is under the error.
	long := "const a = " + strings.Repeat("1 + ", 250000) + "nope\n"
	_, err := buildSrc(t, long)
	var d *Diagnostic
	if !errors.As(err, &d) {
		t.Fatalf("long line: %v", err)
	}
	text := err.Error()
	if len(text) > 600 {
		t.Errorf("the message about a 1 MB line is %d bytes", len(text))
	}
	lines := strings.Split(text, "\n")
	caret := strings.Index(lines[2], "^")
	src := []rune(lines[1])
	if caret < 0 || caret >= len(lines[1]) || !strings.HasPrefix(string(src[caret:]), "nope") {
		t.Errorf("the caret is not under the name:\n%s", text)
	}
	// Short lines are shown whole.
	if got, col := clip("abc", 2); got != "abc" || col != 2 {
		t.Errorf("clip of a short line: %q %d", got, col)
	}
	// A BOM before the first line is not a character of the source.
	if _, err := Build("m.graph", []byte("\xef\xbb\xbfmodel m\ninput x: f32[2]\noutput y = exp(x)\n"), Options{}); err != nil {
		t.Errorf("BOM: %v", err)
	}
	// A cycle through "./a.graph" is a cycle, named once around.
	files := map[string]string{"a.graph": "import \"b.graph\"\n", "b.graph": "import \"./a.graph\"\n"}
	read := func(p string) ([]byte, error) {
		if s, ok := files[filepath.Base(p)]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	for _, root := range []string{"./a.graph", "a.graph"} {
		_, err := Load(root, Options{ReadFile: read})
		if err == nil || !strings.Contains(err.Error(), "import cycle") || strings.Count(err.Error(), "b.graph") > 2 {
			t.Errorf("%s: %v", root, err)
		}
	}
}
