package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/scm-magellano/magc/ir"
	"github.com/scm-magellano/magc/ir/lang"
	"github.com/scm-magellano/magc/models"
	"github.com/scm-magellano/magc/passes"
)

func main() {
	p, read := models.Resolve("scm3b")
	g, err := lang.Load(p, lang.Options{ReadFile: read})
	if err != nil {
		panic(err)
	}
	g, _, err = passes.Run(g, &passes.Config{Train: true})
	if err != nil {
		panic(err)
	}
	s := passes.Fuse(g, true)
	for _, grp := range s.Groups {
		if grp.Root.Scope != "mamba.5" && grp.Root.Scope != "grad/mamba.5" && !strings.Contains(grp.Root.Scope, "mamba.5") {
			continue
		}
		var ops []string
		for _, n := range grp.Nodes {
			ops = append(ops, string(n.Op))
		}
		fmt.Printf("%-22s %-14s %v <- %v\n", grp.Root.Scope, grp.Kind, grp.Outputs[0].Type, ops)
	}
	for _, fuse := range []bool{true, false} {
		s := passes.Fuse(g, fuse)
		bytes := map[string]int64{}
		count := map[string]int{}
		for _, grp := range s.Groups {
			one := &passes.Schedule{Groups: []*passes.Group{grp}, Alias: s.Alias}
			k := grp.Kind
			if k == "pointwise" {
				k += ":" + string(grp.Root.Op)
			}
			bytes[k] += one.GlobalBytes()
			count[k]++
		}
		var keys []string
		for k := range bytes {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return bytes[keys[i]] > bytes[keys[j]] })
		fmt.Println("fuse", fuse, len(s.Groups), s.GlobalBytes())
		for _, k := range keys[:min(25, len(keys))] {
			fmt.Printf("  %-40s %5d %8.2f GB\n", k, count[k], float64(bytes[k])/1e9)
		}
	}
	_ = ir.OpAdd
}
