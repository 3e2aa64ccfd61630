//go:build linux && (amd64 || arm64)

package cuda

import "github.com/ebitengine/purego"

// dlopen loads a shared library through purego: no cgo, so magc builds
// and tests everywhere and finds the driver only at run time.
func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
}

// bind points fptr, a pointer to a func variable, at the symbol name of lib.
func bind(lib uintptr, name string, fptr any) error {
	sym, err := purego.Dlsym(lib, name)
	if err != nil {
		return err
	}
	purego.RegisterFunc(fptr, sym)
	return nil
}
