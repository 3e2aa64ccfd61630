// Package data supplies training batches: the synthetic tasks of the Mamba
// paper (selective copying, induction heads), generated on the fly, and text
// tokenised with GPT-2's BPE.
//
// Every source is stateless: the batch for step s is a function of the seed
// and s, so a resumed run sees exactly the batches it would have seen.
package data

import (
	"fmt"
	"math/rand/v2"
)

// Ignore marks a target position that is not scored (PyTorch's ignore index).
const Ignore = -100

// Batch is B sequences of L tokens with their targets (Ignore where unscored).
type Batch struct {
	B, L    int
	Tokens  []int32
	Targets []int32
}

// Source produces batches.
type Source interface {
	// Name describes the source for logs.
	Name() string
	// Vocab is the number of token ids the source uses.
	Vocab() int
	// Batch returns the training batch for a step.
	Batch(step int) Batch
	// Eval returns the i-th held-out batch (disjoint seeds from training).
	Eval(i int) Batch
}

// rng returns a generator for (seed, stream, index): independent streams
// for training and evaluation, one generator per batch.
func rng(seed uint64, stream, index int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15*uint64(stream+1), uint64(index)))
}

// Synthetic task tokens (docs/maths.md, Synthetic tasks): 0 is noise, 15
// the marker, 1..14 data.
const (
	taskVocab = 16
	noise     = 0
	marker    = 15
)

// SelectiveCopying is the Mamba paper's selective copying task: M data
// tokens at random positions among Len−M slots of noise, then M markers; at
// the j-th marker the model must output the j-th data token.
type SelectiveCopying struct {
	Seed           uint64
	BatchSize, Len int // sequences per batch, tokens per sequence
	M              int // data tokens to copy
}

func (s *SelectiveCopying) Name() string {
	return fmt.Sprintf("selective copying (%d tokens, %d to copy)", s.Len, s.M)
}
func (s *SelectiveCopying) Vocab() int           { return taskVocab }
func (s *SelectiveCopying) Batch(step int) Batch { return s.make(rng(s.Seed, 0, step)) }
func (s *SelectiveCopying) Eval(i int) Batch     { return s.make(rng(s.Seed, 1, i)) }

func (s *SelectiveCopying) make(r *rand.Rand) Batch {
	b := newBatch(s.BatchSize, s.Len)
	slots := s.Len - s.M
	for i := 0; i < s.BatchSize; i++ {
		tok, tgt := b.Tokens[i*s.Len:(i+1)*s.Len], b.Targets[i*s.Len:(i+1)*s.Len]
		// Choose M of the slots (sorted, since we walk them in order).
		pos := r.Perm(slots)[:s.M]
		chosen := make([]bool, slots)
		for _, p := range pos {
			chosen[p] = true
		}
		var data []int32
		for p := 0; p < slots; p++ {
			tok[p] = noise
			if chosen[p] {
				tok[p] = int32(1 + r.IntN(marker-1))
				data = append(data, tok[p])
			}
		}
		for j := 0; j < s.M; j++ {
			tok[slots+j] = marker
			tgt[slots+j] = data[j]
		}
	}
	return b
}

// InductionHeads is the Mamba paper's induction-heads task: random tokens
// in which a trigger appears once, followed by a token to remember; the
// sequence ends with the trigger again, and only the prediction after it is
// scored.
type InductionHeads struct {
	Seed           uint64
	BatchSize, Len int
}

func (s *InductionHeads) Name() string         { return fmt.Sprintf("induction heads (%d tokens)", s.Len) }
func (s *InductionHeads) Vocab() int           { return taskVocab }
func (s *InductionHeads) Batch(step int) Batch { return s.make(rng(s.Seed, 0, step)) }
func (s *InductionHeads) Eval(i int) Batch     { return s.make(rng(s.Seed, 1, i)) }

func (s *InductionHeads) make(r *rand.Rand) Batch {
	b := newBatch(s.BatchSize, s.Len)
	for i := 0; i < s.BatchSize; i++ {
		tok, tgt := b.Tokens[i*s.Len:(i+1)*s.Len], b.Targets[i*s.Len:(i+1)*s.Len]
		for p := range tok {
			tok[p] = int32(r.IntN(marker)) // 0..14: anything but the trigger
		}
		at := r.IntN(s.Len - 3) // trigger, then its successor, before the final trigger
		tok[at] = marker
		tok[s.Len-1] = marker
		tgt[s.Len-1] = tok[at+1]
	}
	return b
}

func newBatch(b, l int) Batch {
	out := Batch{B: b, L: l, Tokens: make([]int32, b*l), Targets: make([]int32, b*l)}
	for i := range out.Targets {
		out.Targets[i] = Ignore
	}
	return out
}

// Accuracy is the fraction of scored targets whose argmax prediction is
// right; logits are [B·L, V] row-major.
func Accuracy(b Batch, logits []float32, vocab int) (correct, scored int) {
	for p, t := range b.Targets {
		if t == Ignore {
			continue
		}
		row := logits[p*vocab : (p+1)*vocab]
		best := 0
		for j, x := range row {
			if x > row[best] {
				best = j
			}
		}
		scored++
		if int32(best) == t {
			correct++
		}
	}
	return correct, scored
}
