package plan

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// WriteTable prints a plan for a person to read: the arena, the kernels
// with how often each is launched, and the launches in order with the
// buffers they bind. It is what `magc compile --dump plan` shows and what
// the large plan goldens pin instead of the whole JSON.
func WriteTable(w io.Writer, p *Plan) error {
	var arena int64
	for _, s := range p.Segments {
		arena += s
	}
	roles := map[string]int64{}
	for _, b := range p.Buffers {
		roles[b.Role.String()] += b.Bytes
	}
	fmt.Fprintf(w, "plan of %s: %d buffers in %d segment(s), %d bytes; %d kernels, %d launches\n",
		p.Model, len(p.Buffers), len(p.Segments), arena, len(p.Kernels), len(p.Dispatches))
	names := make([]string, 0, len(roles))
	for r := range roles {
		names = append(names, r)
	}
	sort.Strings(names)
	for _, r := range names {
		fmt.Fprintf(w, "  %-12s %14d bytes\n", r, roles[r])
	}
	launches := map[string]int{}
	for _, d := range p.Dispatches {
		launches[d.Kernel]++
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nkernel\tthreads\tparams\tlaunches")
	for _, k := range p.Kernels {
		fmt.Fprintf(tw, "%s\t%d×%d×%d\t%d\t%d\n", k.Name, k.Threads[0], k.Threads[1], k.Threads[2], len(k.Params), launches[k.Name])
	}
	fmt.Fprintln(tw, "\n#\tkernel\tgroups\tbinds")
	for i, d := range p.Dispatches {
		fmt.Fprintf(tw, "%d\t%s\t%d×%d×%d\t", i, d.Kernel, d.Groups[0], d.Groups[1], d.Groups[2])
		for j, a := range d.Args {
			if j > 0 {
				fmt.Fprint(tw, " ")
			}
			fmt.Fprint(tw, a.Buffer)
			if a.Offset != 0 {
				fmt.Fprintf(tw, "+%d", a.Offset)
			}
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// Digest is a stable fingerprint of a plan: the SHA-256 of its JSON.
func Digest(p *Plan) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}
