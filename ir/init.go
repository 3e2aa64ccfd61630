package ir

import (
	"errors"
	"fmt"
	"slices"
)

// Init kinds understood by the reference initialiser (ir/ref) and the
// runtime. fan_in is the last axis of the parameter's shape: weights are
// stored (out, in) as nn.Linear stores them, experts (E, out, in).
//
//	zeros, ones              constant fill
//	const(value)             constant fill
//	normal(std, mean=0)      Gaussian
//	uniform(lo, hi)          uniform on [lo, hi)
//	kaiming_uniform(a, gain=1)
//	                         U(−b, b), b = gain·√(6 / ((1+a²)·fan_in)); PyTorch's
//	                         nn.Linear default is a = √5, giving b = 1/√fan_in
//	s4d_real                 A_log[…, n] = ln(n+1) along the last axis (Mamba's A init)
//	dt_bias(dt_min=0.001, dt_max=0.1, floor=1e-4)
//	                         dt = exp(U·(ln dt_max − ln dt_min) + ln dt_min) clamped ≥ floor,
//	                         value = dt + ln(−expm1(−dt)) (inverse softplus)
var InitKinds = map[string][]string{
	"zeros":           nil,
	"ones":            nil,
	"const":           {"value"},
	"normal":          {"std", "mean"},
	"uniform":         {"lo", "hi"},
	"kaiming_uniform": {"a", "gain"},
	"s4d_real":        nil,
	"dt_bias":         {"dt_min", "dt_max", "floor"},
}

// InitDefaults are the values of optional init arguments.
var InitDefaults = map[string]map[string]float64{
	"normal":          {"mean": 0},
	"kaiming_uniform": {"gain": 1},
	"dt_bias":         {"dt_min": 0.001, "dt_max": 0.1, "floor": 1e-4},
}

// NewInit checks an init kind and its arguments and fills in defaults.
func NewInit(kind string, args map[string]float64) (Init, error) {
	names, ok := InitKinds[kind]
	if !ok {
		known := make([]string, 0, len(InitKinds))
		for k := range InitKinds {
			known = append(known, k)
		}
		msg := fmt.Sprintf("unknown init %q", kind)
		if s := Closest(kind, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return Init{}, errors.New(msg)
	}
	out := map[string]float64{}
	for k, v := range args {
		if !slices.Contains(names, k) {
			return Init{}, fmt.Errorf("init %s has no argument %q (it takes %v)", kind, k, names)
		}
		out[k] = v
	}
	for _, n := range names {
		if _, ok := out[n]; ok {
			continue
		}
		d, ok := InitDefaults[kind][n]
		if !ok {
			return Init{}, fmt.Errorf("init %s needs argument %q", kind, n)
		}
		out[n] = d
	}
	if len(out) == 0 {
		out = nil
	}
	return Init{Kind: kind, Args: out}, nil
}
