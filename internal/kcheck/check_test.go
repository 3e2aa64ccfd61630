package kcheck

import (
	"testing"

	"github.com/scm-magellano/magc/codegen"
	"github.com/scm-magellano/magc/device"
	"github.com/scm-magellano/magc/device/sim"
	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/ir/ref"
	"github.com/scm-magellano/magc/passes"
	"github.com/scm-magellano/magc/pipeline"
)

// tinyStep compiles the tiny model's train step and makes its feeds.
func tinyStep(t *testing.T) (*pipeline.Unit, func() (map[string]*ref.Tensor, map[string]*ref.Tensor)) {
	t.Helper()
	g, err := lang.Load("../../models/tiny.graph", lang.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := pipeline.Run(g, &pipeline.Config{Passes: passes.Config{Mode: "full", Train: true}}, "")
	if err != nil {
		t.Fatal(err)
	}
	feeds := func() (map[string]*ref.Tensor, map[string]*ref.Tensor) {
		params, err := ref.InitParams(u.Graph, 1)
		if err != nil {
			t.Fatal(err)
		}
		inputs := map[string]*ref.Tensor{}
		for _, in := range u.Graph.Inputs {
			x := ref.New(in.Value.Type)
			for k := range x.Data {
				switch in.Name {
				case "lr":
					x.Data[k] = 0.01
				case "step":
					x.Data[k] = 1
				default:
					x.Data[k] = float64((k*5 + 3) % 7)
				}
			}
			inputs[in.Name] = x
		}
		return inputs, params
	}
	return u, feeds
}

// TestCheckGraph checks that the streamed check passes the tiny train step
// as the whole-reference check does, and catches a kernel launched on too
// small a grid, naming its dispatch.
func TestCheckGraph(t *testing.T) {
	u, feeds := tinyStep(t)
	devs := []device.Device{sim.New()}
	in, ps := feeds()
	res, err := ref.Eval(u.Graph, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := CheckProgram(devs[0], u.Prog, res.Values)
	if err != nil {
		t.Fatal(err)
	}
	in, ps = feeds()
	streamed, err := CheckGraph(devs, u.Prog, u.Graph, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 0 || len(streamed[0]) != 0 {
		t.Fatalf("tiny's kernels fail: whole %v, streamed %v", whole, streamed[0])
	}

	// Cut the grid of the first launch writing more than 4096 elements to
	// one thread: most of its output keeps the poison.
	broken := *u.Prog
	broken.Dispatches = append([]codegen.Dispatch(nil), u.Prog.Dispatches...)
	cut := -1
	for i, d := range broken.Dispatches {
		if len(d.Writes) > 0 && d.Writes[0].Type.Shape.Elems() > 4096 && d.Writes[0].Type.DType == ir.F32 {
			d.Groups, d.Threads = [3]int{1, 1, 1}, [3]int{1, 1, 1}
			broken.Dispatches[i], cut = d, i
			break
		}
	}
	if cut < 0 {
		t.Fatal("no launch writes more than 4096 f32 elements")
	}
	in, ps = feeds()
	bad, err := CheckGraph(devs, &broken, u.Graph, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad[0]) == 0 {
		t.Fatalf("dispatch %d (%s) on one thread passed", cut, broken.Dispatches[cut].Kernel)
	}
	for _, m := range bad[0] {
		if m.Dispatch != cut {
			t.Errorf("mismatch in dispatch %d, only %d was cut: %v", m.Dispatch, cut, m)
		}
	}
}

// TestArenaPlacesOneDispatch checks that the arena executor refuses a value
// the current dispatch does not bind, rather than handing out stale memory.
func TestArenaPlacesOneDispatch(t *testing.T) {
	u, _ := tinyStep(t)
	x, err := NewArenaExecutor(sim.New(), u.Prog)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.begin(0); err != nil {
		t.Fatal(err)
	}
	bound := map[*ir.Value]bool{}
	for _, b := range u.Prog.Dispatches[0].Bindings {
		bound[x.resolve(b.Value)] = true
	}
	for _, n := range u.Graph.Nodes {
		v := n.Outputs[0]
		if !bound[v] {
			if _, _, err := x.place(v); err == nil {
				t.Fatalf("%v, not bound by dispatch 0, was placed", v)
			}
			return
		}
	}
}

// TestCheckGraphSplit checks how a reduction split in two launches is
// checked: the first launch's partials (no reference value) are carried to
// the second, whose result is compared. Cutting the first launch's grid to
// one threadgroup leaves partials NaN, and the mismatch shows at the second.
func TestCheckGraphSplit(t *testing.T) {
	u, feeds := tinyStep(t)
	first, second := -1, -1
	for i, d := range u.Prog.Dispatches {
		for _, v := range d.Writes {
			if u.Prog.Scratch[v] && first < 0 {
				first = i
				for j := i + 1; j < len(u.Prog.Dispatches) && second < 0; j++ {
					for _, b := range u.Prog.Dispatches[j].Bindings {
						if b.Value == v {
							second = j
						}
					}
				}
			}
		}
	}
	if first < 0 || second < 0 {
		t.Fatal("tiny's train step has no reduction split in two launches (its gradient norm's parts are long enough)")
	}
	broken := *u.Prog
	broken.Dispatches = append([]codegen.Dispatch(nil), u.Prog.Dispatches...)
	broken.Dispatches[first].Groups = [3]int{1, 1, 1}
	in, ps := feeds()
	bad, err := CheckGraph([]device.Device{sim.New()}, &broken, u.Graph, in, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad[0]) == 0 {
		t.Fatalf("pass 1 (dispatch %d, %s) on one threadgroup passed", first, broken.Dispatches[first].Kernel)
	}
	for _, m := range bad[0] {
		if m.Dispatch != second {
			t.Errorf("mismatch in dispatch %d, want only %d (the launch folding the partials): %v", m.Dispatch, second, m)
		}
	}
}
