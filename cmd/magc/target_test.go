package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --target cuda writes kernels.cu in place of kernels.metal, with every
// kernel the plan launches; the plan is the same for both targets.
func TestCompileTarget(t *testing.T) {
	out := map[string]string{}
	for _, target := range []string{"msl", "cuda"} {
		dir := t.TempDir()
		if code, _, stderr := magc(t, "compile", "../../models/tiny.graph", "--target", target, "-o", dir); code != 0 {
			t.Fatalf("--target %s: exit %d: %s", target, code, stderr)
		}
		out[target] = dir
	}
	cu, err := os.ReadFile(filepath.Join(out["cuda"], "kernels.cu"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out["cuda"], "kernels.metal")); err == nil {
		t.Error("--target cuda also wrote kernels.metal")
	}
	if _, err := os.Stat(filepath.Join(out["msl"], "kernels.cu")); err == nil {
		t.Error("--target msl wrote kernels.cu")
	}
	plans := map[string]string{}
	for target, dir := range out {
		data, err := os.ReadFile(filepath.Join(dir, "plan.json"))
		if err != nil {
			t.Fatal(err)
		}
		plans[target] = string(data)
	}
	if plans["msl"] != plans["cuda"] {
		t.Error("the plan differs between targets")
	}
	var plan struct {
		Kernels []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(plans["cuda"]), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Kernels) == 0 {
		t.Fatal("the plan has no kernels")
	}
	for _, k := range plan.Kernels {
		if !strings.Contains(string(cu), ") "+k.Name+"(\n") {
			t.Errorf("kernels.cu has no kernel %s", k.Name)
		}
	}
	if code, _, _ := magc(t, "compile", "../../models/tiny.graph", "--target", "ptx"); code == 0 {
		t.Error("--target ptx was accepted")
	}
}
