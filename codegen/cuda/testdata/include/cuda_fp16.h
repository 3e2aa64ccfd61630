// A stand-in for the CUDA toolkit's cuda_fp16.h when clang compiles
// kernels.cu to PTX without a toolkit (golden's TestCUDAToPTX): only what
// magc's kernels use, a 16-bit storage type converted to and from float
// with rounding to nearest even. nvcc uses the toolkit's own header.
#pragma once
struct __half {
    unsigned short x;
    __half() = default;
    __device__ __half(float f) {
        unsigned u = __nvvm_bitcast_f2i(f);
        unsigned sign = (u >> 16) & 0x8000u;
        u &= 0x7fffffffu;
        if (u >= 0x7f800000u) {  // Inf or NaN
            x = sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0u);
        } else if (u >= 0x47800000u) {  // overflows to Inf
            x = sign | 0x7c00u;
        } else if (u < 0x38800000u) {  // subnormal or zero: let the FPU round
            x = sign | (unsigned short)__nvvm_bitcast_f2i(__nvvm_bitcast_i2f(u) + 0.5f);
        } else {
            unsigned odd = (u >> 13) & 1u;
            u += 0xc8000fffu + odd;  // rebias the exponent, round to nearest even
            x = sign | (u >> 13);
        }
    }
    __device__ operator float() const {
        unsigned sign = (x & 0x8000u) << 16, e = (x >> 10) & 0x1fu, m = x & 0x3ffu;
        if (e == 0x1f) return __nvvm_bitcast_i2f(sign | 0x7f800000u | (m << 13));
        float mag = e ? __nvvm_bitcast_i2f(((e + 112u) << 23) | (m << 13)) : float(m) * 0x1p-24f;
        return sign ? -mag : mag;
    }
};
