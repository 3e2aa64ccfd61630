//go:build darwin && !cgo

package metal

import (
	"errors"

	"github.com/scm-magellano/magc/runtime"
)

// New reports that the Metal device needs cgo.
func New() (runtime.Device, error) {
	return nil, errors.New("the Metal device needs cgo: build magc with CGO_ENABLED=1 (and Xcode's command-line tools)")
}
