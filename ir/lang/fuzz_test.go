package lang

import (
	"errors"
	"os"
	"testing"
)

// FuzzBuild feeds arbitrary text to the parser and builder: any input must
// give a graph or an error, never a panic or a hang.
//
//	go test ./ir/lang -run '^$' -fuzz FuzzBuild -fuzztime 5m
func FuzzBuild(f *testing.F) {
	for _, m := range []string{"tiny", "blocks"} {
		src, err := os.ReadFile("../../models/" + m + ".graph")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	f.Add(header + "h = gather(embed, tokens)\nrepeat 2 { checkpoint { h = h * 2.0 } }\noutput y = h\n")
	f.Add("fn f(a) { return f(a) }\ninput x: f32[2]\noutput y = f(x)\n")
	f.Add("const a = 3 * (2 + 1) % 2\ninput x: f32[a, a]\na1, a2 = topk(x, k = 1)\noutput y = a1\n")
	blocks, _ := os.ReadFile("../../models/blocks.graph")
	f.Fuzz(func(t *testing.T, src string) {
		read := func(p string) ([]byte, error) {
			if p == "blocks.graph" {
				return blocks, nil
			}
			return nil, errors.New("no such file")
		}
		g, err := Build("fuzz.graph", []byte(src), Options{ReadFile: read})
		if err == nil && g == nil {
			t.Fatal("no graph and no error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}
