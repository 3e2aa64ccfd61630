#include <metal_stdlib>
using namespace metal;

// Program-scope constant data.
constant float weights[4] = {0.5f, 1.0f, 2.0f, 4.0f};

// Atomics: a histogram of x into 16 bins (device atomics across
// threadgroups running in parallel), and a float sum.
kernel void histogram(device atomic_uint* bins [[buffer(0)]],
                      device const uint* x [[buffer(1)]],
                      device atomic_float* total [[buffer(2)]],
                      uint gid [[thread_position_in_grid]]) {
    atomic_fetch_add_explicit(&bins[x[gid] % 16], 1u, memory_order_relaxed);
    atomic_fetch_add_explicit(total, weights[gid % 4], memory_order_relaxed);
}

// A threadgroup atomic counter and atomic max, read after a barrier.
kernel void tg_atomics(device uint* out [[buffer(0)]],
                       device const uint* x [[buffer(1)]],
                       uint tid [[thread_position_in_threadgroup]],
                       uint tg [[threadgroup_position_in_grid]],
                       uint gid [[thread_position_in_grid]]) {
    threadgroup atomic_uint count;
    threadgroup atomic_uint biggest;
    if (tid == 0) {
        atomic_store_explicit(&count, 0u, memory_order_relaxed);
        atomic_store_explicit(&biggest, 0u, memory_order_relaxed);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (x[gid] % 3 == 0) atomic_fetch_add_explicit(&count, 1u, memory_order_relaxed);
    atomic_fetch_max_explicit(&biggest, x[gid], memory_order_relaxed);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid == 0) {
        out[2 * tg] = atomic_load_explicit(&count, memory_order_relaxed);
        out[2 * tg + 1] = atomic_load_explicit(&biggest, memory_order_relaxed);
    }
}

// Threads past n return before the barriers: undefined on a GPU (the
// barrier may hang or pass early), so an error on the sim.
kernel void early_exit(device float* out [[buffer(0)]],
                       constant uint& n [[buffer(1)]],
                       uint gid [[thread_position_in_grid]],
                       uint tid [[thread_position_in_threadgroup]],
                       uint tg [[threadgroup_position_in_grid]],
                       uint nt [[threads_per_threadgroup]]) {
    threadgroup float buf[256];
    if (gid >= n) return;
    buf[tid] = float(gid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float s = 0.0f;
    uint live = min(nt, n - tg * nt);
    for (uint i = 0; i < live; i++) s += buf[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[gid] = s;
}

namespace blas {
// A kernel inside a namespace; Metal finds it by its plain name.
kernel void fill(device float* out [[buffer(0)]],
                 uint gid [[thread_position_in_grid]]) {
    out[gid] = weights[gid % 4] + float(gid);
}
}
