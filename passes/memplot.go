package passes

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/scm-magellano/magc/ir"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The picture PlotMemory draws: 1344×768 pixels.
const (
	memPlotWidth  = 14 * vg.Inch
	memPlotHeight = 8 * vg.Inch
	memPlotDPI    = 96
	memLegendW    = 2.2 * vg.Inch
)

// memRoleColors colours each role of a tensor.
var memRoleColors = map[ir.Role]color.RGBA{
	ir.Frozen:     {70, 110, 170, 255},
	ir.FrozenNF4:  {40, 60, 120, 255},
	ir.Trainable:  {190, 130, 220, 255},
	ir.OptState:   {60, 160, 160, 255},
	ir.HostInput:  {90, 170, 80, 255},
	ir.Activation: {240, 150, 50, 255},
	ir.Gradient:   {210, 60, 60, 255},
}

// PlotMemory draws plan to a PNG at path: kernel index (time) across, arena
// offset (segments stacked) up, one rectangle per buffer coloured by role,
// dashed lines at segment boundaries and a dotted one at the lower bound.
// The file is replaced only once the picture is complete.
func PlotMemory(plan *MemPlan, path, title string) error {
	if plan == nil {
		return errors.New("memplot: no plan")
	}
	unit, unitName := memUnit(plan.ArenaBytes)
	base := make([]float64, len(plan.Segments)) // where each segment starts, in units
	for k := 1; k < len(base); k++ {
		base[k] = base[k-1] + float64(plan.Segments[k-1])/unit
	}

	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s\narena %.2f %s in %d segment(s), lower bound %.2f %s (+%.2f%%), %d buffers, order %s",
		title, float64(plan.ArenaBytes)/unit, unitName, len(plan.Segments), float64(plan.LowerBound)/unit, unitName,
		100*(plan.Ratio()-1), len(plan.Buffers), plan.Order)
	p.X.Label.Text = "kernel"
	p.Y.Label.Text = "arena offset (" + unitName + ")"
	p.Add(&memRects{plan: plan, base: base, unit: unit})

	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.ThumbnailWidth = 0.3 * vg.Inch
	counts := map[ir.Role]int{}
	for _, b := range plan.Buffers {
		counts[b.Role]++
	}
	for _, role := range slices.Sorted(maps.Keys(counts)) {
		legend.Add(fmt.Sprintf("%s ×%d", role, counts[role]), memSwatch{memColor(role)})
	}
	kmax := float64(max(plan.Kernels, 1))
	if len(base) > 1 {
		for _, y := range base[1:] {
			l := memLine(plotter.XYs{{X: 0, Y: y}, {X: kmax, Y: y}}, color.Black, []vg.Length{vg.Points(6), vg.Points(3)})
			p.Add(l)
			if y == base[1] {
				legend.Add("segment boundary", l)
			}
		}
	}
	if plan.LowerBound > 0 {
		lb := float64(plan.LowerBound) / unit
		red := color.RGBA{200, 0, 0, 255}
		l := memLine(plotter.XYs{{X: 0, Y: lb}, {X: kmax, Y: lb}}, red, []vg.Length{vg.Points(1), vg.Points(2)})
		pk := float64(plan.PeakKernel) + 0.5
		p.Add(l, memLine(plotter.XYs{{X: pk, Y: 0}, {X: pk, Y: lb}}, red, []vg.Length{vg.Points(1), vg.Points(2)}))
		legend.Add(fmt.Sprintf("lower bound, kernel %d", plan.PeakKernel), l)
	}

	canvas := vgimg.NewWith(vgimg.UseWH(memPlotWidth, memPlotHeight), vgimg.UseDPI(memPlotDPI))
	dc := draw.New(canvas)
	left, right := dc, dc
	left.Max.X -= memLegendW
	right.Min.X = left.Max.X + vg.Points(6)
	right.Max.Y -= vg.Points(40) // level with the top of the plot, below the title
	p.Draw(left)
	legend.Draw(right)

	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(&buf); err != nil {
		return fmt.Errorf("memplot: %w", err)
	}
	return memWriteFile(path, buf.Bytes())
}

// memWriteFile writes data to path through a temporary file and a rename,
// so a failed write never leaves half a picture in place of the old one.
func memWriteFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".memplot-*.png")
	if err != nil {
		return fmt.Errorf("memplot: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp makes it 0600
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("memplot: %w", err)
	}
	return nil
}

// memColor is a role's colour (grey for a buffer without one).
func memColor(r ir.Role) color.Color {
	if c, ok := memRoleColors[r]; ok {
		return c
	}
	return color.RGBA{150, 150, 150, 255}
}

// memUnit picks the decimal unit in which n bytes reads best.
func memUnit(n int64) (float64, string) {
	switch {
	case n >= 1e9:
		return 1e9, "GB"
	case n >= 1e6:
		return 1e6, "MB"
	case n >= 1e3:
		return 1e3, "kB"
	}
	return 1, "bytes"
}

func memLine(xys plotter.XYs, c color.Color, dashes []vg.Length) *plotter.Line {
	l, _ := plotter.NewLine(xys) // cannot fail: the points are finite
	l.Color, l.Width, l.Dashes = c, vg.Points(1), dashes
	return l
}

// memRects draws one filled rectangle per buffer, from its first kernel to
// the end of its last, over its bytes. Rectangles large enough to see get a
// thin darker edge so that neighbours of one role stay apart; with
// thousands of buffers most are too small for one.
type memRects struct {
	plan *MemPlan
	base []float64
	unit float64
}

func (r *memRects) DataRange() (xmin, xmax, ymin, ymax float64) {
	return 0, float64(max(r.plan.Kernels, 1)), 0, max(float64(r.plan.ArenaBytes)/r.unit, 1e-9)
}

func (r *memRects) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	edge := draw.LineStyle{Width: vg.Points(0.3)}
	for _, b := range r.plan.Buffers {
		if b.Bytes == 0 || b.Segment < 0 || b.Segment >= len(r.base) {
			continue
		}
		y := r.base[b.Segment] + float64(b.Offset)/r.unit
		x0, x1 := trX(float64(b.Start)), trX(float64(b.End+1))
		y0, y1 := trY(y), trY(y+float64(b.Bytes)/r.unit)
		pts := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
		col := memColor(b.Role)
		c.FillPolygon(col, pts)
		if x1-x0 > vg.Points(4) && y1-y0 > vg.Points(4) {
			edge.Color = memDarker(col)
			c.StrokeLines(edge, append(pts, pts[0]))
		}
	}
}

func memDarker(c color.Color) color.Color {
	r, g, b, a := c.RGBA()
	return color.RGBA64{uint16(r * 3 / 5), uint16(g * 3 / 5), uint16(b * 3 / 5), uint16(a)}
}

// memSwatch is a legend entry's filled square.
type memSwatch struct{ c color.Color }

func (s memSwatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}
