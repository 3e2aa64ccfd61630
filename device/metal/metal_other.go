//go:build !darwin

package metal

import (
	"errors"

	"github.com/scm-magellano/magc/device"
)

// New reports that Metal exists only on macOS.
func New() (device.Device, error) {
	return nil, errors.New("the Metal device runs on macOS only; use --device sim")
}
