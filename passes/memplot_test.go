package passes

import (
	"github.com/scm-magellano/magc/ir"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestPlotMemory(t *testing.T) {
	plan := memPlanOK(t, []Buffer{
		{Name: "w", Bytes: 512, Role: ir.Frozen, Persistent: true},
		{Name: "a", Bytes: 1024, Role: ir.Activation, Start: 0, End: 2},
		{Name: "g", Bytes: 1024, Role: ir.Gradient, Start: 2, End: 4, InPlace: "a"},
		{Name: "x", Bytes: 768, Role: 0, Start: 1, End: 3},
	}, 5, MemOptions{MaxSegment: 2048})
	path := filepath.Join(t.TempDir(), "mem.png")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := PlotMemory(plan, path, "four buffers"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	w, h := 1344, 768 // 14×8 inches at 96 dpi
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Fatalf("picture is %v, want %dx%d", b, w, h)
	}
	// Every role's colour fills many more pixels than its legend swatch:
	// the buffers are drawn (the buffer without a role in grey).
	want := map[color.RGBA]string{memColor(0).(color.RGBA): "no role"}
	for _, r := range []ir.Role{ir.Frozen, ir.Activation, ir.Gradient} {
		want[memRoleColors[r]] = r.String()
	}
	count := map[color.RGBA]int{}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			count[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	for c, role := range want {
		if count[c] < 20000 {
			t.Errorf("%s: %d pixels of its colour, want a big rectangle", role, count[c])
		}
	}
}

func TestPlotMemoryTrainStep(t *testing.T) {
	bufs, kernels := memTrainStep(rand.New(rand.NewPCG(1, 2)), 8, 1)
	plan := memPlanOK(t, bufs, kernels, MemOptions{MaxSegment: 1 << 30})
	path := filepath.Join(t.TempDir(), "train.png")
	if err := PlotMemory(plan, path, "8 layers"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatal(err)
	}
}

func TestPlotMemoryErrors(t *testing.T) {
	dir := t.TempDir()
	if err := PlotMemory(nil, filepath.Join(dir, "nil.png"), ""); err == nil {
		t.Error("no error for a nil plan")
	}
	plan := memPlanOK(t, nil, 0, MemOptions{})
	if err := PlotMemory(plan, filepath.Join(dir, "missing", "x.png"), ""); err == nil {
		t.Error("no error for a missing directory")
	}
	if err := PlotMemory(plan, filepath.Join(dir, "empty.png"), "empty"); err != nil {
		t.Errorf("empty plan: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".memplot-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
