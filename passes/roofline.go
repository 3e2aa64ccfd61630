package passes

import "time"

// Machine is what a roofline estimate needs of a processor: its arithmetic
// rate, its memory bandwidth and the cost of one kernel launch.
type Machine struct {
	Name      string
	FLOPs     float64       // fp32 operations per second
	Bandwidth float64       // bytes per second
	Launch    time.Duration // per dispatch, in a stream of them
}

// The machines magc predicts for, from their makers' figures: the M4's
// 10-core GPU (about 4 TFLOP/s fp32, 120 GB/s), and the H100 SXM without
// tensor cores (67 TFLOP/s fp32, 3.35 TB/s). Launch costs are estimates of a
// dispatch within one command buffer or stream.
var (
	M4   = Machine{Name: "Apple M4 (10-core GPU)", FLOPs: 4e12, Bandwidth: 120e9, Launch: 5 * time.Microsecond}
	H100 = Machine{Name: "NVIDIA H100 SXM (fp32, no tensor cores)", FLOPs: 67e12, Bandwidth: 3.35e12, Launch: 3 * time.Microsecond}
)

// Time is the roofline estimate of a kernel: it can run no faster than its
// arithmetic at the peak rate or its traffic at the peak bandwidth,
// whichever is longer, plus the launch.
func (m Machine) Time(c Cost) time.Duration {
	s := max(float64(c.FLOPs)/m.FLOPs, float64(c.Bytes)/m.Bandwidth)
	return time.Duration(s*1e9) + m.Launch
}
