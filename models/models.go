// Package models embeds the model zoo, so an installed magc binary can
// train "tiny" or compile "scm3b" without the source tree.
package models

import (
	"embed"
	"os"
	"path"
	"strings"
)

//go:embed *.graph
var files embed.FS

// Resolve finds a model: a path on disk, or the name of a built-in model
// ("tiny", "scm3b.graph"). It returns the path to load and the matching reader.
func Resolve(name string) (string, func(string) ([]byte, error)) {
	if _, err := os.Stat(name); err == nil || strings.ContainsRune(name, os.PathSeparator) {
		return name, os.ReadFile
	}
	if !strings.HasSuffix(name, ".graph") {
		name += ".graph"
	}
	if _, err := files.Open(name); err != nil {
		return name, os.ReadFile // let the caller report the missing file
	}
	return name, func(p string) ([]byte, error) { return files.ReadFile(path.Clean(p)) }
}

// Names lists the built-in models.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".graph"); n != "blocks" {
			out = append(out, n)
		}
	}
	return out
}
