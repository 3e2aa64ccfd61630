// What nvcc's headers give kernels.cu, for compiling it to PTX with
// clang -nocudainc -nocudalib (the CI check, where there is no CUDA
// toolkit). Math functions call libdevice's names, as nvcc's do; the PTX
// declares them extern. Only what magc's kernels use.
#pragma once

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(n) __attribute__((launch_bounds(n)))

// threadIdx, blockIdx, blockDim, gridDim: clang's own, self-contained.
#include <__clang_cuda_builtin_vars.h>

#define MAGC_SHUFFLE(name, mode, clamp)                                                 \
    __device__ __forceinline__ int name(unsigned mask, int x, int lane) {              \
        return __nvvm_shfl_sync_##mode##_i32(mask, x, lane, clamp);                   \
    }                                                                                  \
    __device__ __forceinline__ unsigned name(unsigned mask, unsigned x, int lane) {    \
        return unsigned(__nvvm_shfl_sync_##mode##_i32(mask, int(x), lane, clamp));    \
    }                                                                                  \
    __device__ __forceinline__ float name(unsigned mask, float x, int lane) {          \
        return __nvvm_shfl_sync_##mode##_f32(mask, x, lane, clamp);                   \
    }
// clamp: 0x1f for the lane index, shuffle down and xor; 0 for shuffle up.
MAGC_SHUFFLE(__shfl_sync, idx, 0x1f)
MAGC_SHUFFLE(__shfl_up_sync, up, 0)
MAGC_SHUFFLE(__shfl_down_sync, down, 0x1f)
MAGC_SHUFFLE(__shfl_xor_sync, bfly, 0x1f)
#undef MAGC_SHUFFLE

// __syncthreads is a clang builtin.
__device__ __forceinline__ float __int_as_float(int x) { return __nvvm_bitcast_i2f(x); }

extern "C" {
__device__ float __nv_expf(float);
__device__ float __nv_logf(float);
__device__ float __nv_sqrtf(float);
__device__ float __nv_rsqrtf(float);
__device__ float __nv_fabsf(float);
__device__ float __nv_tanhf(float);
__device__ float __nv_fmaf(float, float, float);
__device__ float __nv_powf(float, float);
__device__ float __nv_floorf(float);
__device__ float __nv_fmaxf(float, float);
__device__ float __nv_fminf(float, float);
__device__ int __nv_isnanf(float);
__device__ int __nv_finitef(float);
}
__device__ __forceinline__ float expf(float x) { return __nv_expf(x); }
__device__ __forceinline__ float logf(float x) { return __nv_logf(x); }
__device__ __forceinline__ float sqrtf(float x) { return __nv_sqrtf(x); }
__device__ __forceinline__ float rsqrtf(float x) { return __nv_rsqrtf(x); }
__device__ __forceinline__ float fabsf(float x) { return __nv_fabsf(x); }
__device__ __forceinline__ float tanhf(float x) { return __nv_tanhf(x); }
__device__ __forceinline__ float fmaf(float x, float y, float z) { return __nv_fmaf(x, y, z); }
__device__ __forceinline__ float powf(float x, float y) { return __nv_powf(x, y); }
__device__ __forceinline__ float floorf(float x) { return __nv_floorf(x); }
__device__ __forceinline__ bool isnan(float x) { return __nv_isnanf(x) != 0; }
__device__ __forceinline__ bool isfinite(float x) { return __nv_finitef(x) != 0; }

__device__ __forceinline__ float max(float a, float b) { return __nv_fmaxf(a, b); }
__device__ __forceinline__ float min(float a, float b) { return __nv_fminf(a, b); }
__device__ __forceinline__ int max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
__device__ __forceinline__ unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
