package train

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// PlotLoss draws the training loss per step (and a moving average when
// there are many steps) to a PNG.
func PlotLoss(losses []float64, firstStep int, path, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	pts := make(plotter.XYs, len(losses))
	for i, l := range losses {
		pts[i] = plotter.XY{X: float64(firstStep + i + 1), Y: l}
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("plotting the loss: %w", err)
	}
	line.Color = plotter.DefaultLineStyle.Color
	p.Add(line)
	if w := len(losses) / 20; w >= 2 {
		avg := make(plotter.XYs, 0, len(losses))
		sum := 0.0
		for i, l := range losses {
			sum += l
			if i >= w {
				sum -= losses[i-w]
			}
			if i >= w-1 {
				avg = append(avg, plotter.XY{X: pts[i].X, Y: sum / float64(w)})
			}
		}
		smooth, err := plotter.NewLine(avg)
		if err != nil {
			return err
		}
		smooth.Width = vg.Points(2)
		smooth.Color = plotter.DefaultGlyphStyle.Color
		p.Add(smooth)
		p.Legend.Add("loss", line)
		p.Legend.Add(fmt.Sprintf("mean of %d", w), smooth)
	}
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}
