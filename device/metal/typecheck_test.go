package metal

import (
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"testing"
)

// TestDarwinFilesTypeCheck type-checks the files that build on macOS with
// cgo (the real device) and without it, here on any OS, with cgo faked, so
// a broken signature is caught without a Mac.
func TestDarwinFilesTypeCheck(t *testing.T) {
	for _, cgo := range []bool{true, false} {
		ctx := build.Default
		ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled = "darwin", "arm64", cgo
		pkg, err := ctx.ImportDir(".", 0)
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		var files []*ast.File
		for _, name := range append(pkg.GoFiles, pkg.CgoFiles...) {
			f, err := parser.ParseFile(fset, filepath.Join(".", name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		if cgo && len(pkg.CgoFiles) == 0 {
			t.Fatal("no cgo files selected for darwin")
		}
		conf := types.Config{FakeImportC: true, Importer: importer.ForCompiler(fset, "source", nil)}
		conf.Error = func(err error) { t.Errorf("cgo=%v: %v", cgo, err) }
		conf.Check("github.com/scm-magellano/magc/device/metal", fset, files, nil)
	}
}
