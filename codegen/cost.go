package codegen

import "github.com/scm-magellano/magc/passes"

// Cost estimates a launch's work: the FLOPs of the ops it fuses, and the
// bytes of every buffer it binds, read or written once.
func (d *Dispatch) Cost() passes.Cost {
	var c passes.Cost
	for _, n := range d.Fuses {
		c.FLOPs += passes.NodeCost(n).FLOPs
	}
	for _, b := range d.Bindings {
		c.Bytes += b.Value.Stored().Bytes()
	}
	return c
}
