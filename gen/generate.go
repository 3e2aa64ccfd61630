package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Sampling picks the next token from logits: greedy at temperature 0,
// otherwise temperature, then top-k, then top-p (nucleus), as transformers
// orders its warpers.
type Sampling struct {
	Temperature float64
	TopK        int     // 0: no limit
	TopP        float64 // 0 or 1: no limit
	Seed        uint64
}

// Check refuses settings that mean nothing.
func (s Sampling) Check() error {
	switch {
	case s.Temperature < 0 || math.IsNaN(s.Temperature):
		return fmt.Errorf("temperature must be 0 (greedy) or positive, got %g", s.Temperature)
	case s.TopK < 0:
		return fmt.Errorf("top-k must be 0 (off) or positive, got %d", s.TopK)
	case s.TopP < 0 || s.TopP > 1 || math.IsNaN(s.TopP):
		return fmt.Errorf("top-p must be in (0, 1] (0: off), got %g", s.TopP)
	}
	return nil
}

// sampler draws tokens with its own random stream.
type sampler struct {
	Sampling
	rng *rand.Rand
}

func newSampler(s Sampling) *sampler {
	return &sampler{Sampling: s, rng: rand.New(rand.NewPCG(s.Seed, 0x6d616763))}
}

// Argmax is the first index of the largest logit (torch.argmax's tie rule).
func Argmax(logits []float64) int {
	best := 0
	for i, x := range logits {
		if x > logits[best] {
			best = i
		}
	}
	return best
}

func (s *sampler) next(logits []float64) int {
	if s.Temperature == 0 {
		return Argmax(logits)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if s.TopK > 0 && s.TopK < len(idx) {
		idx = idx[:s.TopK]
	}
	// Softmax of logits/T over the survivors, largest first.
	p := make([]float64, len(idx))
	top := logits[idx[0]] / s.Temperature
	var sum float64
	for i, j := range idx {
		p[i] = math.Exp(logits[j]/s.Temperature - top)
		sum += p[i]
	}
	if s.TopP > 0 && s.TopP < 1 {
		// Keep the smallest prefix whose mass reaches top-p (at least one token).
		var acc float64
		for i := range p {
			acc += p[i] / sum
			if acc >= s.TopP {
				p, idx = p[:i+1], idx[:i+1]
				break
			}
		}
		sum = 0
		for _, x := range p {
			sum += x
		}
	}
	r := s.rng.Float64() * sum
	for i, x := range p {
		if r < x {
			return idx[i]
		}
		r -= x
	}
	return idx[len(idx)-1]
}

// Options say how much to generate and how.
type Options struct {
	Sampling
	MaxTokens int
	// Stop ends generation after any of these tokens (end of text).
	Stop []int
}

// Stats time a generation.
type Stats struct {
	PromptTokens, NewTokens int
	Prefill, Decode         time.Duration // the prompt; steps on generated tokens
	DecodeSteps             int
	Sequence                bool // the prompt ran through the sequence prefill, not the step
}

// PrefillRate and DecodeRate are tokens per second.
func (s Stats) PrefillRate() float64 { return rate(s.PromptTokens, s.Prefill) }
func (s Stats) DecodeRate() float64  { return rate(s.DecodeSteps, s.Decode) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate continues prompt (batch-1 decoder): prefill runs d's sequence
// prefill when its length is the prompt's, else the step on each prompt
// token, then every sampled token is emitted and fed back,
// until MaxTokens or a stop token. The states start at zero.
func Generate(d *Decoder, prompt []int, o Options, emit func(id int) error) ([]int, Stats, error) {
	st := Stats{PromptTokens: len(prompt)}
	switch {
	case d.p.Batch != 1:
		return nil, st, fmt.Errorf("generation runs one sequence; the step has batch %d", d.p.Batch)
	case len(prompt) == 0:
		return nil, st, fmt.Errorf("empty prompt: give at least one token")
	case o.MaxTokens < 1:
		return nil, st, fmt.Errorf("max tokens must be positive, got %d", o.MaxTokens)
	}
	if err := o.Check(); err != nil {
		return nil, st, err
	}
	if err := d.Reset(); err != nil {
		return nil, st, err
	}
	start := time.Now()
	var logits []float64
	if d.PrefillLen() == len(prompt) {
		var err error
		if logits, err = d.Prefill(prompt); err != nil {
			return nil, st, err
		}
		st.Sequence = true
	} else {
		for _, t := range prompt {
			var err error
			if logits, err = d.Step([]int{t}); err != nil {
				return nil, st, err
			}
		}
	}
	st.Prefill = time.Since(start)
	s := newSampler(o.Sampling)
	var out []int
	start = time.Now()
	for {
		id := s.next(logits)
		out = append(out, id)
		if emit != nil {
			if err := emit(id); err != nil {
				return out, st, err
			}
		}
		if len(out) == o.MaxTokens || containsInt(o.Stop, id) {
			break
		}
		var err error
		if logits, err = d.Step([]int{id}); err != nil {
			return out, st, err
		}
		st.DecodeSteps++
	}
	st.Decode = time.Since(start)
	st.NewTokens = len(out)
	return out, st, nil
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
