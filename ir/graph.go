package ir

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Pos is a source position in a .graph file; the zero Pos means "no source".
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Col)
}

// Error is an error at a source position.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string {
	if e.Pos.File == "" && e.Pos.Line == 0 {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Errorf builds an *Error at pos.
func Errorf(pos Pos, format string, args ...any) *Error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// Value is an SSA value: one output of one node.
type Value struct {
	ID    int
	Type  Type
	Node  *Node
	Index int
	// Store, when set, is the narrower float type the value is kept in
	// memory as (passes.Precision): kernels compute it in Type and round
	// it on the store, and the reference rounds it the same way.
	Store DType
}

// Stored is the type of v as it sits in memory.
func (v *Value) Stored() Type {
	if v.Store == Invalid {
		return v.Type
	}
	return Type{DType: v.Store, Shape: v.Type.Shape}
}

func (v *Value) String() string { return "%" + strconv.Itoa(v.ID) }

// Node applies an op to values. Nodes are kept in creation order, which is a
// topological order: every input is defined by an earlier node.
type Node struct {
	ID      int
	Op      Op
	Inputs  []*Value
	Outputs []*Value
	Attrs   Attrs
	Pos     Pos
	// Scope is the dotted path of the layer that created the node ("mamba.3").
	Scope string
	// Region is the checkpoint region the node belongs to (0: none).
	Region int
}

// Out returns the node's single output.
func (n *Node) Out() *Value { return n.Outputs[0] }

// Role says what a tensor of a step is for. Parameters are Trainable,
// Frozen, FrozenNF4 or OptState; the memory plan and plan.json also give the
// roles of the other tensors. Its spelling (String, MarshalText) is the one
// every report, plot and plan.json uses.
type Role uint8

const (
	Trainable  Role = iota + 1
	Frozen          // dense weights that receive no update
	FrozenNF4       // NF4-quantised frozen weights
	OptState        // optimizer moments
	HostInput       // fed by the host each step
	Activation      // computed in the step
	Gradient        // computed in the backward pass
)

var roleNames = [...]string{"?", "trainable", "frozen", "frozen_nf4", "opt_state", "input", "activation", "gradient"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return "?"
}

// IsParam reports whether tensors of the role persist from step to step.
func (r Role) IsParam() bool { return r >= Trainable && r <= OptState }

func (r Role) MarshalText() ([]byte, error) {
	if r == 0 || int(r) >= len(roleNames) {
		return nil, fmt.Errorf("invalid role %d", r)
	}
	return []byte(roleNames[r]), nil
}

func (r *Role) UnmarshalText(b []byte) error {
	for i, n := range roleNames[1:] {
		if n == string(b) {
			*r = Role(i + 1)
			return nil
		}
	}
	return fmt.Errorf("unknown role %q", b)
}

// Init says how a parameter is initialised (see Init.Fill).
type Init struct {
	Kind string
	Args map[string]float64
}

func (in Init) String() string {
	if len(in.Args) == 0 {
		return in.Kind
	}
	keys := make([]string, 0, len(in.Args))
	for k := range in.Args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatFloat(in.Args[k], 'g', -1, 64)
	}
	return in.Kind + "(" + strings.Join(parts, ", ") + ")"
}

// Param is a named parameter of the graph.
type Param struct {
	Name string
	Role Role
	Init Init
	// NoDecay excludes the parameter from AdamW weight decay (A_log, D, norms, biases).
	NoDecay bool
	// LoRA marks a weight that QLoRA mode quantises to NF4 and adapts with low-rank factors.
	LoRA  bool
	Value *Value
}

// Input is a named graph input fed each step.
type Input struct {
	Name  string
	Value *Value
}

// Output is a named result of the graph.
type Output struct {
	Name  string
	Value *Value
}

// Update writes a new value into a parameter at the end of a step (a
// training step's updated weights and optimizer moments).
type Update struct {
	Param string
	Value *Value
}

// Layer records one instance of a layer function (a Mamba or MoE block).
type Layer struct {
	Kind  string
	Scope string
}

// Region is a checkpoint region: a span of nodes whose activations may be
// recomputed in the backward pass instead of kept.
type Region struct {
	ID   int
	Name string
}

// TrainSpec is the training mode a model file asks for by default.
type TrainSpec struct {
	Mode  string // "full" or "qlora"
	Rank  int    // LoRA rank r
	Alpha float64
	LR    float64 // the peak learning rate the model was tuned with (0: the mode's default)
}

// Graph is a dataflow graph of ops on statically shaped tensors.
type Graph struct {
	Name    string
	Nodes   []*Node
	Inputs  []*Input
	Params  []*Param
	Outputs []*Output
	// AuxLosses are scalar losses the model adds to its main loss (MoE load balancing).
	AuxLosses []*Value
	// Updates are the parameter writes of a training step.
	Updates []*Update
	Layers  []Layer
	Regions []Region
	// Consts are the model file's named integer settings (d_model, vocab, ...).
	Consts map[string]int
	Train  TrainSpec
	nextID int
}

// Param returns the parameter with the given name.
func (g *Graph) Param(name string) *Param {
	for _, p := range g.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Output returns the output with the given name.
func (g *Graph) Output(name string) *Output {
	for _, o := range g.Outputs {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Results lists the values a run of g leaves for the host: the outputs,
// the aux losses and the parameter updates.
func (g *Graph) Results() []*Value {
	var out []*Value
	for _, o := range g.Outputs {
		out = append(out, o.Value)
	}
	out = append(out, g.AuxLosses...)
	for _, u := range g.Updates {
		out = append(out, u.Value)
	}
	return out
}

// Uses maps every value to the nodes that read it, in node order.
func (g *Graph) Uses() map[*Value][]*Node {
	uses := map[*Value][]*Node{}
	for _, n := range g.Nodes {
		for _, v := range n.Inputs {
			uses[v] = append(uses[v], n)
		}
	}
	return uses
}

// ParamCount sums the elements of parameters with the given roles (all roles when none given).
func (g *Graph) ParamCount(roles ...Role) int64 {
	var n int64
	for _, p := range g.Params {
		if len(roles) == 0 || containsRole(roles, p.Role) {
			n += p.Value.Type.Shape.Elems()
		}
	}
	return n
}

// ParamBytes sums the storage bytes of parameters with the given roles.
func (g *Graph) ParamBytes(roles ...Role) int64 {
	var n int64
	for _, p := range g.Params {
		if len(roles) == 0 || containsRole(roles, p.Role) {
			n += p.Value.Type.Bytes()
		}
	}
	return n
}

func containsRole(rs []Role, r Role) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// LayerCount counts layers of one kind.
func (g *Graph) LayerCount(kind string) int {
	n := 0
	for _, l := range g.Layers {
		if l.Kind == kind {
			n++
		}
	}
	return n
}
