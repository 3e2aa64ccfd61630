package lang

import (
	"testing"
)

func TestTinyBuilds(t *testing.T) {
	g, err := Load("../../models/tiny.graph", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(g.String())
	t.Log(g.ParamCount())
}
