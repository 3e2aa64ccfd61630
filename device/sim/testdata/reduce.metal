#include <metal_stdlib>
using namespace metal;

// Sum of each threadgroup's slice in threadgroup memory: a tree with a
// barrier per level. Threads past n contribute zero.
kernel void tg_sum(device float* out [[buffer(0)]],
                   device const float* x [[buffer(1)]],
                   constant uint& n [[buffer(2)]],
                   uint gid [[thread_position_in_grid]],
                   uint tid [[thread_position_in_threadgroup]],
                   uint tg [[threadgroup_position_in_grid]],
                   uint nt [[threads_per_threadgroup]]) {
    threadgroup float buf[1024];
    buf[tid] = gid < n ? x[gid] : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) buf[tid] += buf[tid + s];
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (tid == 0) out[tg] = buf[0];
}

// Inclusive prefix sum over one threadgroup (Hillis-Steele, double buffered).
kernel void tg_scan(device uint* out [[buffer(0)]],
                    device const uint* x [[buffer(1)]],
                    uint gid [[thread_position_in_grid]],
                    uint tid [[thread_position_in_threadgroup]],
                    uint nt [[threads_per_threadgroup]]) {
    threadgroup uint a[512], b[512];
    threadgroup uint* src = a;
    threadgroup uint* dst = b;
    src[tid] = x[gid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint off = 1; off < nt; off <<= 1) {
        dst[tid] = tid >= off ? src[tid] + src[tid - off] : src[tid];
        threadgroup_barrier(mem_flags::mem_threadgroup);
        threadgroup uint* t = src;
        src = dst;
        dst = t;
    }
    out[gid] = src[tid];
}

// A helper that synchronizes: the kernel that calls it must run as fibers.
static float group_total(float v, threadgroup float* partial, uint sg, uint lane, uint nsg) {
    float s = simd_sum(v);
    if (lane == 0) partial[sg] = s;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float t = 0.0f;
    for (uint i = 0; i < nsg; i++) t += partial[i];
    return t;
}

// Every simd-group function, one output row per thread.
kernel void simd_ops(device float* out [[buffer(0)]],
                     device const float* x [[buffer(1)]],
                     uint gid [[thread_position_in_grid]],
                     uint lane [[thread_index_in_simdgroup]],
                     uint sg [[simdgroup_index_in_threadgroup]],
                     uint nsg [[simdgroups_per_threadgroup]]) {
    threadgroup float partial[32];
    float v = x[gid];
    device float* o = out + gid * 12;
    o[0] = simd_sum(v);
    o[1] = simd_max(v);
    o[2] = simd_min(v);
    o[3] = simd_shuffle_down(v, 3);
    o[4] = simd_shuffle_up(v, 5);
    o[5] = simd_shuffle_xor(v, 7);
    o[6] = simd_broadcast(v, 9);
    o[7] = simd_shuffle(v, (lane * 7) % 32);
    o[8] = simd_prefix_exclusive_sum(v);
    o[9] = simd_prefix_inclusive_sum(v);
    o[10] = float(simd_sum(uint(lane)));
    o[11] = group_total(v, partial, sg, lane, nsg);
}

// simd_sum over float4, and a reduction where some lanes have returned.
kernel void simd_partial(device float4* out [[buffer(0)]],
                         device const float4* x [[buffer(1)]],
                         constant uint& n [[buffer(2)]],
                         uint gid [[thread_position_in_grid]],
                         uint lane [[thread_index_in_simdgroup]]) {
    if (gid >= n) return;
    float4 s = simd_sum(x[gid]);
    if (simd_is_first()) out[gid / 32] = s;
}
