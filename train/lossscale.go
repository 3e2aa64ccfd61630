package train

import (
	"fmt"
	"math"
)

// Defaults of dynamic loss scaling (PyTorch's GradScaler has the same).
const (
	DefaultLossScale         = 65536 // 2^16
	DefaultLossScaleFactor   = 2
	DefaultLossScaleInterval = 2000
	minLossScale             = 0x1p-126        // f32's smallest normal: 1/s stays finite
	maxLossScale             = math.MaxFloat32 // the loss_scale input is an f32
)

// LossScaler is dynamic loss scaling's host side. The train step (built
// with passes.Config.LossScale) multiplies the loss's gradient by Scale,
// unscales before clipping, and leaves weights and moments unchanged when
// the gradient norm is not finite; the scaler reads that norm after each
// step: a non-finite one divides Scale by Factor and counts the step as
// skipped (AdamW's bias correction does not count it either), and Interval
// clean steps in a row multiply it by Factor.
type LossScaler struct {
	Scale    float64
	Factor   float64 // growth factor; backing off divides by it
	Interval int     // clean steps in a row before Scale grows
	// Clean counts the clean steps since Scale last changed; Skipped the
	// steps skipped in the whole run (a resume carries both).
	Clean, Skipped int
}

// NewLossScaler starts a scaler at DefaultLossScale with the default
// factor and interval.
func NewLossScaler() *LossScaler {
	return &LossScaler{Scale: DefaultLossScale, Factor: DefaultLossScaleFactor, Interval: DefaultLossScaleInterval}
}

// Check refuses a state no train step can run with.
func (s *LossScaler) Check() error {
	switch {
	case !(s.Scale >= minLossScale && s.Scale <= maxLossScale):
		return fmt.Errorf("loss scale %v: it must be a finite f32 number from 2^-126 to %g", s.Scale, maxLossScale)
	case !(s.Factor > 1) || math.IsInf(s.Factor, 0):
		return fmt.Errorf("loss scale factor %v: it must be a finite number above 1", s.Factor)
	case s.Interval < 1:
		return fmt.Errorf("loss scale growth interval %d: it must be positive", s.Interval)
	case s.Clean < 0 || s.Skipped < 0:
		return fmt.Errorf("loss scaler counts %d clean and %d skipped steps: they cannot be negative", s.Clean, s.Skipped)
	}
	return nil
}

// Update takes the gradient norm of a step run at Scale and reports
// whether that step was applied. It fails when backing off would take the
// scale below f32's normal range (the gradients are not finite at any scale).
func (s *LossScaler) Update(gradNorm float64) (applied bool, err error) {
	if math.IsNaN(gradNorm) || math.IsInf(gradNorm, 0) {
		s.Skipped++
		s.Clean = 0
		if s.Scale/s.Factor < minLossScale {
			return false, fmt.Errorf("the gradient norm is %v even at a loss scale of %g (%d steps skipped in all): the gradients are not finite at any scale", gradNorm, s.Scale, s.Skipped)
		}
		s.Scale /= s.Factor
		return false, nil
	}
	s.Clean++
	if s.Clean >= s.Interval {
		s.Clean = 0
		// At f32's ceiling the scale stays: an infinite one would skip every step.
		if s.Scale*s.Factor <= maxLossScale {
			s.Scale *= s.Factor
		}
	}
	return true, nil
}

// String is the scale for a log line: a power of two as 2^k (as it
// usually is), else four digits.
func (s *LossScaler) String() string {
	if f, e := math.Frexp(s.Scale); f == 0.5 {
		return fmt.Sprintf("2^%d", e-1)
	}
	return fmt.Sprintf("%.4g", s.Scale)
}
