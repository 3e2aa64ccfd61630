package codegen_test

import (
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/plan"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scm-magellano/magc/codegen"
)

// Awkward names still give a package that parses and is gofmt-clean:
// keywords and digits as inputs, names that collide once made identifiers.
func TestGoSourceNames(t *testing.T) {
	buf := func(name, dtype string, shape []int, role ir.Role) plan.Buffer {
		return plan.Buffer{Name: name, DType: dtype, Shape: shape, Role: role}
	}
	p := &plan.Plan{Version: plan.Version, Model: "odd-model",
		Buffers: []plan.Buffer{
			buf("a.b", "f32", []int{2}, ir.Trainable), buf("a_b", "f32", []int{2}, ir.Trainable),
			buf("w", "nf4", []int{64}, ir.FrozenNF4),
			buf("type", "i32", []int{3}, ir.HostInput), buf("0x", "f32", nil, ir.HostInput), buf("m", "f32", []int{2}, ir.HostInput),
			buf("n", "i32", nil, ir.HostInput), buf("step", "f32", nil, ir.HostInput),
			buf("loss%3", "f32", nil, ir.Activation), buf("h%4", "f32", []int{2}, ir.Activation),
		},
		Host: plan.Host{Feed: []string{"type", "0x", "m", "n", "step"},
			Read: map[string]string{"loss": "loss%3", "hidden.state": "h%4"}},
	}
	pkg := codegen.GoPackageName(p.Model)
	if pkg != "oddmodel" {
		t.Errorf("package name of odd-model: %q", pkg)
	}
	src, err := codegen.GoSource(pkg, p, []string{"msl"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0); err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	if formatted, _ := format.Source(src); string(formatted) != string(src) {
		t.Error("the generated code is not gofmt-clean")
	}
	for _, want := range []string{
		"ParamAB   = \"a.b\"", "ParamAB_2 = \"a_b\"", "ParamW    = \"w\"",
		"func (m *Model) Step(typeIn []int32, in0x float32, mIn []float32, n int32, step int) (out Outputs, err error)",
		"Loss float64", "OutputHiddenState = \"hidden.state\"",
	} {
		if !strings.Contains(string(src), want) {
			t.Errorf("generated code lacks %q:\n%s", want, src)
		}
	}
	if strings.Contains(string(src), "HiddenState float64") {
		t.Error("a vector output became a field of Outputs")
	}
	for _, bad := range []string{"", "main", "my-pkg", "func", "_"} {
		if _, err := codegen.GoSource(bad, p, []string{"msl"}); err == nil {
			t.Errorf("package name %q accepted", bad)
		}
	}
	dir := filepath.Join(t.TempDir(), "out")
	if err := codegen.EmitGo(dir, pkg, p, map[string]string{"msl": "// kernels\n"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"oddmodel.go", "kernels.metal", "plan.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}
