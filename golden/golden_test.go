// Package golden pins magc's generated outputs (grammar, printed IR, and
// later MSL and plans) as files under golden/. Run
//
//	go test ./golden -update
//
// to rewrite them, then review the diff. A file here that no test produces
// any more fails the run, so stale expectations cannot linger.
package golden

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

var (
	mu       sync.Mutex
	produced = map[string]bool{}
)

// check compares got with the golden file at name (relative to this directory).
func check(t *testing.T, name string, got []byte) {
	t.Helper()
	mu.Lock()
	produced[filepath.ToSlash(name)] = true
	mu.Unlock()
	if *update {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%s: %v (run go test ./golden -update to create it)", name, err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the golden file (-want +got):\n%s", name,
			cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")))
	}
}

// TestMain fails the run when a golden file exists that no test produced,
// provided every test ran (no -run filter).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" {
		if orphans := orphanFiles(); len(orphans) > 0 {
			fmt.Fprintf(os.Stderr, "golden files that no test produces (delete them or restore their test):\n  %s\n", strings.Join(orphans, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

func orphanFiles() []string {
	var out []string
	filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		if !produced[filepath.ToSlash(path)] {
			out = append(out, path)
		}
		return nil
	})
	sort.Strings(out)
	return out
}
