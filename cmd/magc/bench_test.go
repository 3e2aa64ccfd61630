package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bench on the sim times a step and writes its figures; --profile on a
// device that cannot time its dispatches is refused by name.
func TestBenchOnSim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.json")
	code, stdout, stderr := magc(t, "bench", "--model", "tiny", "--steps", "2", "--device", "sim", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "tokens/s") || !strings.Contains(stderr, "62 launches") {
		t.Errorf("output lacks tokens/s or the launch count:\n%s\n%s", stdout, stderr)
	}
	var r benchResult
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.StepS) != 2 || r.StepSMedian <= 0 || r.TokensPerS != float64(r.Batch*r.Seq)/r.StepSMedian || r.Launches != 62 {
		t.Errorf("figures do not add up: %+v", r)
	}
	if code, _, stderr := magc(t, "bench", "--steps", "1", "--device", "sim", "--profile"); code != 1 || !strings.Contains(stderr, "sim cannot time") {
		t.Errorf("--profile on the sim: exit %d, %s", code, stderr)
	}
	if code, _, stderr := magc(t, "bench", "--device", "ref"); code != 1 || !strings.Contains(stderr, "compiled kernels") {
		t.Errorf("bench on ref: exit %d, %s", code, stderr)
	}
}

// The compile summary and report.json carry the M4 prediction, labelled.
func TestCompilePredictsM4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	code, stdout, stderr := magc(t, "compile", "../../models/tiny.graph", "--report", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "on an M4") || !strings.Contains(stdout, "not a measurement") {
		t.Errorf("summary lacks the labelled prediction:\n%s", stdout)
	}
	var r report
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.PredictedM4StepMS <= 0 || r.PredictedM4TokensPerS <= 0 {
		t.Errorf("report lacks the prediction: %+v", r)
	}
}
