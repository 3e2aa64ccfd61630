// A stand-in for the CUDA toolkit's cuda_bf16.h when clang compiles
// kernels.cu to PTX without a toolkit (golden's TestCUDAToPTX): only what
// magc's kernels use, bfloat16 converted to and from float with rounding to
// nearest even. nvcc uses the toolkit's own header.
#pragma once
struct __nv_bfloat16 {
    unsigned short x;
    __nv_bfloat16() = default;
    __device__ __nv_bfloat16(float f) {
        unsigned u = __nvvm_bitcast_f2i(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            x = (u >> 16) | 0x40u;  // NaN stays NaN
        } else {
            x = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        }
    }
    __device__ operator float() const { return __nvvm_bitcast_i2f(unsigned(x) << 16); }
};
