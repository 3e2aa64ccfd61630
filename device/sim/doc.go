// Package sim is magc's "sim" device: it runs the Metal Shading Language
// kernels that magc emits on the CPU, so that everything above the
// runtime.Device seam can be built and tested without a Mac.
//
// # How it works
//
// Compile reads the MSL source in Go (kernel signatures, which kernels
// synchronize, threadgroup variables), appends a C++ wrapper per kernel, and
// builds the result with the host C++ compiler ($CXX, else c++; g++ and
// clang++ both work) against a shim: C++17 headers under shim/ that
// implement the MSL subset below. The shared library is cached on disk under
// os.UserCacheDir()/magc/sim, keyed by the SHA-256 of the shim, the source,
// the compiler and its flags, and in memory; then it is loaded with dlopen.
// Compiler errors point at lines of the MSL source ("kernels.metal:12:5").
//
// A dispatch runs every threadgroup of the grid, in parallel over
// min(GOMAXPROCS, CPUs) OS threads. Inside a threadgroup, a kernel that
// calls threadgroup_barrier, simdgroup_barrier or a simd_* function (found
// by scanning its body and the functions it calls) runs one fiber per
// thread: a cooperative context switched in a few instructions of assembly
// (x86-64 and arm64). Other kernels run as a plain loop over the threads.
// A worker thread runs one threadgroup at a time, so a kernel's threadgroup
// variables live in the worker's threadgroup arena, at offsets fixed at
// compile time (threadgroup variables of helper functions are thread_local).
// Dispatches are synchronous.
//
// Limits are an Apple M4's: at most 1024 threads per threadgroup, at most
// 32 KiB of threadgroup memory per kernel, SIMD groups of 32 threads.
//
// # Supported MSL
//
//   - #include <metal_stdlib> (and the other metal_* headers), using
//     namespace metal, the address spaces device, constant, threadgroup and
//     thread, program-scope constant data.
//   - kernel functions (also [[kernel]], in namespaces) with [[buffer(n)]]
//     pointer or reference parameters and the attributes
//     thread_position_in_grid, thread_position_in_threadgroup,
//     threadgroup_position_in_grid, threads_per_threadgroup,
//     threadgroups_per_grid, threads_per_grid, thread_index_in_threadgroup,
//     thread_index_in_simdgroup, simdgroup_index_in_threadgroup,
//     simdgroups_per_threadgroup, threads_per_simdgroup,
//     thread_execution_width, as uint/ushort or 2- and 3-vectors;
//     [[max_total_threads_per_threadgroup(n)]].
//   - half (IEEE binary16, round to nearest even) and bfloat; vectors of 2,
//     3 and 4 of float, half, bfloat, int, uint, short, ushort, char, uchar,
//     long, ulong, bool, packed_ variants, with Metal's sizes and alignments,
//     .x .y .z .w and [i], arithmetic, comparisons and conversions;
//     as_type; literal suffixes 1.0h and 1.0bf. Narrowing to half or
//     bfloat is explicit (half(x), bfloat(x)): Metal refuses an implicit
//     float -> bfloat conversion, and the sim refuses it for half too (an
//     integer still converts to half implicitly).
//   - metal:: math (exp, exp2, exp10, log, log2, log10, sqrt, rsqrt, pow,
//     powr, sin ... atanh, tanh, fma, mad, floor, ceil, round, rint, trunc,
//     fract, fabs, abs, min, max, fmin, fmax, clamp, saturate, mix, step,
//     smoothstep, sign, select, isnan, isinf, isfinite, signbit, fmod,
//     copysign, dot, length, normalize, distance, cross, all, any, popcount,
//     clz, ctz, mul_hi, rotate), also as precise:: and fast::;
//     numeric_limits.
//   - threadgroup_barrier and simdgroup_barrier with mem_flags; simd_sum,
//     simd_product, simd_max, simd_min, simd_and, simd_or, simd_xor,
//     simd_prefix_{exclusive,inclusive}_{sum,product}, simd_shuffle,
//     simd_shuffle_{up,down,xor,rotate_up,rotate_down}, simd_broadcast,
//     simd_broadcast_first, simd_ballot, simd_all, simd_any, simd_is_first,
//     simd_active_threads_mask. Lanes that have returned take no part.
//   - simdgroup_float8x8, simdgroup_half8x8, simdgroup_bfloat8x8 with
//     simdgroup_load and simdgroup_store (elements_per_row, matrix_origin,
//     transpose), simdgroup_multiply, simdgroup_multiply_accumulate and
//     make_filled_simdgroup_matrix.
//   - atomic_int, atomic_uint, atomic_float (and atomic<T>) in device and
//     threadgroup memory with the atomic_*_explicit functions.
//
// Refused, with an error that names the feature: textures, samplers,
// matrix types (float4x4 ...), quad-group functions, [[stage_in]],
// [[texture(n)]], [[sampler(n)]], [[threadgroup(n)]] arguments, function
// constants, vertex and fragment functions, template kernels, threadgroup
// variables declared by a macro. Swizzles beyond single components (.xy)
// are not implemented: the compiler reports the missing member.
//
// A kernel whose threads do not all reach the same barriers (or whose lanes
// do not all reach the same simd_* calls) fails its dispatch with a
// deadlock error. What is undefined on a GPU fails the dispatch too, naming
// the kernel and threadgroup: a threadgroup_barrier reached after some of
// the threadgroup's threads returned, and a simdgroup matrix function
// (simdgroup_load, _store, _multiply, _multiply_accumulate) called by a
// simdgroup of fewer than 32 live lanes, or by lanes at different calls
// (lines) or with different pointers, strides or origins. The matrix
// checks cost no fiber switch: each lane keeps a hash of its calls, and the
// lanes' hashes are compared where they meet anyway (simd-group functions,
// barriers, the threadgroup's end), so an error names the first call after
// the last such point. A fiber that overflows its stack (over 52 KiB) hits
// a guard page and crashes the process, as an out-of-bounds access can.
package sim
