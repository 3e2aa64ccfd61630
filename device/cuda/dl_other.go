//go:build !(linux && (amd64 || arm64))

package cuda

import (
	"errors"
	"runtime"
)

// NVIDIA's driver for CUDA exists on Linux for amd64 and arm64 only (here).
func dlopen(string) (uintptr, error) {
	return 0, errors.New("the CUDA device runs on Linux (amd64, arm64) only, not " + runtime.GOOS + "/" + runtime.GOARCH)
}

func bind(uintptr, string, any) error { return errors.New("unreachable: no driver") }
