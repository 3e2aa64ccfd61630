package codegen

import (
	"fmt"

	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/codegen/msl"
)

// Render prints a module in a target's kernel language.
func Render(m *kir.Module, target string) (string, error) {
	switch target {
	case "msl":
		return msl.Render(m)
	}
	return "", fmt.Errorf("unknown target %q (targets: msl)", target)
}
