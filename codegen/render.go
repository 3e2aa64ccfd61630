package codegen

import (
	"fmt"
	"strings"

	"github.com/scm-magellano/magc/codegen/cuda"
	"github.com/scm-magellano/magc/codegen/kir"
	"github.com/scm-magellano/magc/codegen/msl"
)

// renderers are the targets a module renders for, by name.
var renderers = map[string]func(*kir.Module) (string, error){
	"msl":  msl.Render,
	"cuda": cuda.Render,
}

// Targets lists the render targets.
func Targets() []string { return []string{"msl", "cuda"} }

// Render prints a module for a target: "msl" (Metal) or "cuda".
func Render(m *kir.Module, target string) (string, error) {
	r, ok := renderers[target]
	if !ok {
		return "", fmt.Errorf("codegen: no target %q (targets: %s)", target, strings.Join(Targets(), ", "))
	}
	return r(m)
}
