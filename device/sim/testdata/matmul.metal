#include <metal_stdlib>
using namespace metal;

struct Dims {
    uint M, N, K;
};

#define TILE 16
#define TILE32 32

// C[M,N] = A[M,K] * B[K,N], row-major, one thread per element of C, with
// TILE x TILE tiles of A and B staged in threadgroup memory. Any M, N, K.
kernel void matmul_tiled(device float* C [[buffer(0)]],
                         device const float* A [[buffer(1)]],
                         device const float* B [[buffer(2)]],
                         constant Dims& d [[buffer(3)]],
                         uint2 gid [[thread_position_in_grid]],
                         uint2 tid [[thread_position_in_threadgroup]]) {
    threadgroup float As[TILE][TILE];
    threadgroup float Bs[TILE][TILE];
    uint row = gid.y, col = gid.x;
    float acc = 0.0f;
    for (uint k0 = 0; k0 < d.K; k0 += TILE) {
        uint ak = k0 + tid.x, bk = k0 + tid.y;
        As[tid.y][tid.x] = (row < d.M && ak < d.K) ? A[row * d.K + ak] : 0.0f;
        Bs[tid.y][tid.x] = (bk < d.K && col < d.N) ? B[bk * d.N + col] : 0.0f;
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint k = 0; k < TILE; k++) acc += As[tid.y][k] * Bs[k][tid.x];
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (row < d.M && col < d.N) C[row * d.N + col] = acc;
}

// The same with 32x32 tiles: 1024 threads per threadgroup.
kernel void matmul_tiled32(device float* C [[buffer(0)]],
                         device const float* A [[buffer(1)]],
                         device const float* B [[buffer(2)]],
                         constant Dims& d [[buffer(3)]],
                         uint2 gid [[thread_position_in_grid]],
                         uint2 tid [[thread_position_in_threadgroup]]) {
    threadgroup float As[TILE32][TILE32];
    threadgroup float Bs[TILE32][TILE32];
    uint row = gid.y, col = gid.x;
    float acc = 0.0f;
    for (uint k0 = 0; k0 < d.K; k0 += TILE32) {
        uint ak = k0 + tid.x, bk = k0 + tid.y;
        As[tid.y][tid.x] = (row < d.M && ak < d.K) ? A[row * d.K + ak] : 0.0f;
        Bs[tid.y][tid.x] = (bk < d.K && col < d.N) ? B[bk * d.N + col] : 0.0f;
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint k = 0; k < TILE32; k++) acc += As[tid.y][k] * Bs[k][tid.x];
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (row < d.M && col < d.N) C[row * d.N + col] = acc;
}

// Register blocking, as GPU matmuls are usually written: a threadgroup of
// 16x16 threads computes a 64x64 block of C, each thread a 4x4 block, from
// 64x16 and 16x64 tiles of A and B in threadgroup memory. Any M, N, K.
kernel void matmul_blocked(device float* C [[buffer(0)]],
                           device const float* A [[buffer(1)]],
                           device const float* B [[buffer(2)]],
                           constant Dims& d [[buffer(3)]],
                           uint2 tg [[threadgroup_position_in_grid]],
                           uint2 tid [[thread_position_in_threadgroup]],
                           uint li [[thread_index_in_threadgroup]]) {
    threadgroup float As[64][17];
    threadgroup float4 Bs[16][16];
    uint row0 = tg.y * 64, col0 = tg.x * 64;
    float4 acc[4] = {float4(0.0f), float4(0.0f), float4(0.0f), float4(0.0f)};
    for (uint k0 = 0; k0 < d.K; k0 += 16) {
        for (uint e = li; e < 64 * 16; e += 256) {
            uint r = e / 16, k = e % 16;
            As[r][k] = (row0 + r < d.M && k0 + k < d.K) ? A[(row0 + r) * d.K + k0 + k] : 0.0f;
            uint kb = e / 64, c = e % 64;
            Bs[kb][c / 4][c % 4] = (k0 + kb < d.K && col0 + c < d.N) ? B[(k0 + kb) * d.N + col0 + c] : 0.0f;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint k = 0; k < 16; k++) {
            float4 b = Bs[k][tid.x];
            for (uint i = 0; i < 4; i++) acc[i] += As[tid.y * 4 + i][k] * b;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    for (uint i = 0; i < 4; i++) {
        uint r = row0 + tid.y * 4 + i;
        for (uint j = 0; j < 4; j++) {
            uint c = col0 + tid.x * 4 + j;
            if (r < d.M && c < d.N) C[r * d.N + c] = acc[i][j];
        }
    }
}

// The same product with simdgroup matrices: each simdgroup computes one 8x8
// block of C; M, N and K are multiples of 8. Threadgroups of 4 simdgroups
// (128 threads) cover a 16x16 block. A is loaded transposed from At = A^T
// to exercise the transpose argument.
kernel void matmul_simdgroup(device float* C [[buffer(0)]],
                             device const float* At [[buffer(1)]],
                             device const half* B [[buffer(2)]],
                             constant Dims& d [[buffer(3)]],
                             uint2 tg [[threadgroup_position_in_grid]],
                             uint sg [[simdgroup_index_in_threadgroup]]) {
    uint row0 = tg.y * 16 + (sg / 2) * 8;
    uint col0 = tg.x * 16 + (sg % 2) * 8;
    if (row0 >= d.M || col0 >= d.N) return;
    simdgroup_float8x8 acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    simdgroup_float8x8 a;
    simdgroup_half8x8 b;
    for (uint k = 0; k < d.K; k += 8) {
        simdgroup_load(a, At, d.M, ulong2(row0, k), true);
        simdgroup_load(b, B + k * d.N + col0, d.N);
        simdgroup_multiply_accumulate(acc, a, b, acc);
    }
    simdgroup_store(acc, C, d.N, ulong2(col0, row0));
}
