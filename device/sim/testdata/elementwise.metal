#include <metal_stdlib>
using namespace metal;

// y = a*x + y over n elements; the grid may overhang n.
kernel void axpy(device float* y [[buffer(0)]],
                 device const float* x [[buffer(1)]],
                 constant float& a [[buffer(2)]],
                 constant uint& n [[buffer(3)]],
                 uint gid [[thread_position_in_grid]]) {
    if (gid >= n) return;
    y[gid] = a * x[gid] + y[gid];
}

struct Params {
    uint n;
    float scale;
    half bias;
};

// Half loads and stores: out = half(x * scale + bias), via float.
kernel void half_affine(device half* out [[buffer(0)]],
                        device const half* x [[buffer(1)]],
                        constant Params& p [[buffer(2)]],
                        uint gid [[thread_position_in_grid]]) {
    if (gid >= p.n) return;
    float v = float(x[gid]) * p.scale;
    out[gid] = half(v) + p.bias;
}

// half2/half4 vectors: arithmetic, component access and conversion.
kernel void half_vectors(device half4* out4 [[buffer(0)]],
                         device const half4* a [[buffer(1)]],
                         device const half4* b [[buffer(2)]],
                         device half2* out2 [[buffer(3)]],
                         device float4* outf [[buffer(4)]],
                         uint gid [[thread_position_in_grid]]) {
    half4 s = a[gid] * b[gid] + half4(1.0h);
    out4[gid] = s;
    half2 t = half2(s.x, s.w) - half2(a[gid].y, 0.5h);
    out2[gid] = t;
    outf[gid] = float4(s) * 2.0f;
}

// Thread positions as uint3/uint2/uint scalars, grid-linearised.
kernel void positions(device uint4* out [[buffer(0)]],
                      uint3 gid [[thread_position_in_grid]],
                      uint2 tid2 [[thread_position_in_threadgroup]],
                      uint3 tg [[threadgroup_position_in_grid]],
                      uint3 tpg [[threads_per_grid]],
                      uint3 ntg [[threadgroups_per_grid]],
                      uint3 tptg [[threads_per_threadgroup]],
                      uint lin [[thread_index_in_threadgroup]],
                      ushort lane [[thread_index_in_simdgroup]],
                      uint sg [[simdgroup_index_in_threadgroup]]) {
    uint i = (gid.z * tpg.y + gid.y) * tpg.x + gid.x;
    out[i] = uint4(gid.x + 1000 * tid2.x + 100000 * tid2.y,
                   tg.x + 10 * tg.y + 100 * tg.z + 1000 * ntg.x + 10000 * ntg.y + 100000 * ntg.z,
                   lin + 10000 * tptg.x,
                   lane + 100 * sg);
}

// Math functions and vector helpers, against Go's math package.
kernel void math_funcs(device float* out [[buffer(0)]],
                       device const float* x [[buffer(1)]],
                       uint gid [[thread_position_in_grid]]) {
    float v = x[gid];
    device float* o = out + gid * 16;
    o[0] = exp(v);
    o[1] = precise::exp2(v);
    o[2] = log(fabs(v) + 1.0f);
    o[3] = sqrt(fabs(v));
    o[4] = rsqrt(fabs(v) + 1.0f);
    o[5] = fast::tanh(v);
    o[6] = fma(v, 2.0f, 1.0f);
    o[7] = pow(fabs(v), 1.5f);
    o[8] = max(v, 0.0f);
    o[9] = min(v, 0);
    o[10] = clamp(v, -1.0f, 1.0f);
    o[11] = floor(v) + ceil(v);
    o[12] = select(-1.0f, 1.0f, v > 0.0f);
    o[13] = isnan(v / v) ? 1.0f : 0.0f;
    o[14] = isinf(1.0f / v) ? 1.0f : 0.0f;
    float4 q = float4(v, 1.0f, float2(2.0f, 3.0f));
    o[15] = dot(q, q) + abs(-v) + log2(4.0f) + metal::max(float2(v, 1.0f), float2(0.5f)).y +
            median3(v, 0.0f, 1.0f) - clamp(v, 0.0f, 1.0f) + fast::divide(max3(v, 2.0f, 1.0f), 2.0f) - max(v, 2.0f) / 2;
}

// Conversions: every half bit pattern to float, floats to half and bfloat.
kernel void convert(device float* h2f [[buffer(0)]],
                    device const half* h [[buffer(1)]],
                    device half* f2h [[buffer(2)]],
                    device bfloat* f2bf [[buffer(3)]],
                    device const float* f [[buffer(4)]],
                    uint gid [[thread_position_in_grid]]) {
    h2f[gid] = h[gid];
    f2h[gid] = half(f[gid]);
    f2bf[gid] = bfloat(f[gid]);
}
