package lang

import (
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
