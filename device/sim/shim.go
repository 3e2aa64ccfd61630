package sim

import (
	"crypto/sha256"
	"embed"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// The shim: C++ headers that implement the MSL subset. metal_stdlib is the
// entry point; the translation unit includes it first, and the user's own
// #include <metal_stdlib> then finds it again through -isystem.
//
//go:embed shim/metal_stdlib shim/*.h
var shimFS embed.FS

// shimAliases are other Metal headers a kernel may include; each just
// includes metal_stdlib.
var shimAliases = []string{
	"metal_math", "metal_common", "metal_compute", "metal_integer", "metal_relational",
	"metal_geometric", "metal_simdgroup", "metal_simdgroup_matrix", "metal_atomic",
	"metal_numeric", "metal_types", "metal_matrix", "simd/simd.h",
}

var shimOnce = sync.OnceValues(func() (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(shimFS, "shim", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := shimFS.ReadFile(path)
		files[filepath.Base(path)] = data
		return err
	})
	for _, a := range shimAliases {
		files[a] = []byte("#include <metal_stdlib>\n")
	}
	return files, err
})

// shimDigest hashes every shim file, for the cache key.
func shimDigest() ([]byte, error) {
	files, err := shimOnce()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(files[n])
		h.Write([]byte{0})
	}
	return h.Sum(nil), nil
}

// writeShim writes the shim headers into dir.
func writeShim(dir string) error {
	files, err := shimOnce()
	if err != nil {
		return err
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
