package sim

import (
	"fmt"
	"strings"
)

// userFile and wrapperFile name the two parts of the translation unit in
// compiler messages.
const (
	userFile    = "kernels.metal"
	wrapperFile = "magc-sim-wrappers"
)

// translationUnit is the C++ the compiler sees: the shim, the user's source
// (rewritten, line for line) and one wrapper per kernel with extern "C"
// entry points:
//
//	int magc_run_<name>(magc_launch*)      runs a dispatch on one worker thread
//	magc_param_info magc_params_<name>[]   sizes of the parameters, for checks
func (p *program) translationUnit() string {
	var b strings.Builder
	b.WriteString("#include <metal_stdlib>\n")
	fmt.Fprintf(&b, "#line 1 %q\n", userFile)
	b.WriteString(p.source)
	fmt.Fprintf(&b, "\n#line 1 %q\n", wrapperFile)
	for _, k := range p.kernels {
		writeWrapper(&b, k)
	}
	return b.String()
}

func writeWrapper(b *strings.Builder, k *kernelInfo) {
	ft := "decltype(" + k.qual + ")"
	var args []string
	for i, prm := range k.params {
		pt := fmt.Sprintf("magc_sim::param_t<%s, %d>", ft, i)
		if prm.attr == "buffer" {
			args = append(args, fmt.Sprintf("magc_sim::buffer_arg<%s>(a[%d])", pt, prm.index))
		} else {
			args = append(args, fmt.Sprintf("magc_sim::pos_arg<%s>(%s)", pt, positionAttrs[prm.attr]))
		}
	}
	fmt.Fprintf(b, "namespace magc_sim_gen {\n")
	fmt.Fprintf(b, "__attribute__((always_inline)) inline void t_%s(const magc_sim::Pos& p, void* const* a) {\n", k.name)
	fmt.Fprintf(b, "  (void)p; (void)a;\n")
	fmt.Fprintf(b, "  static_assert(magc_sim::fn_traits<%s>::arity == %d, \"magc sim: cannot read the parameters of kernel %s\");\n", ft, len(k.params), k.name)
	fmt.Fprintf(b, "  %s(%s);\n}\n}  // namespace magc_sim_gen\n", k.qual, strings.Join(args, ", "))
	fmt.Fprintf(b, "extern \"C\" __attribute__((visibility(\"default\"))) int magc_run_%s(magc_launch* L) {\n", k.name)
	fmt.Fprintf(b, "  return magc_sim::run<magc_sim_gen::t_%s, %v>(L, %q);\n}\n", k.name, k.fibers, k.name)
	fmt.Fprintf(b, "extern \"C\" __attribute__((visibility(\"default\"))) const magc_param_info magc_params_%s[] = {\n", k.name)
	for i, prm := range k.params {
		fmt.Fprintf(b, "  magc_sim::param_info<magc_sim::param_t<%s, %d>>(%d),\n", ft, i, prm.index)
	}
	fmt.Fprintf(b, "  {0, 0, -1, -1}};\n")
}
