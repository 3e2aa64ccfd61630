//go:build darwin && !cgo

package metal

import (
	"errors"

	"github.com/scm-magellano/magc/device"
)

// New reports that the Metal device needs cgo.
func New() (device.Device, error) {
	return nil, errors.New("the Metal device needs cgo: build magc with CGO_ENABLED=1 (and Xcode's command-line tools)")
}
