// magc sim: MSL features the sim does not implement. Each one is declared so
// that using it fails to compile with "magc sim: <feature> is not supported".
#pragma once
#include <type_traits>

namespace magc_sim {
template <class... A> struct dependent_false : std::false_type {};
// What an unsupported function returns: anything, so that the only error is
// the one naming the feature.
struct unsupported_value {
  template <class T> operator T() const { return T(); }
};
}

namespace metal {

enum class access { sample, read, write, read_write };

#define MAGC_UNSUPPORTED_TEXTURE(NAME)                                                              \
  template <class T, access A = access::sample> struct NAME {                                      \
    static_assert(magc_sim::dependent_false<T>::value, "magc sim: textures (" #NAME ") are not supported"); \
  };
MAGC_UNSUPPORTED_TEXTURE(texture1d)
MAGC_UNSUPPORTED_TEXTURE(texture1d_array)
MAGC_UNSUPPORTED_TEXTURE(texture2d)
MAGC_UNSUPPORTED_TEXTURE(texture2d_array)
MAGC_UNSUPPORTED_TEXTURE(texture2d_ms)
MAGC_UNSUPPORTED_TEXTURE(texture2d_ms_array)
MAGC_UNSUPPORTED_TEXTURE(texture3d)
MAGC_UNSUPPORTED_TEXTURE(texturecube)
MAGC_UNSUPPORTED_TEXTURE(texturecube_array)
MAGC_UNSUPPORTED_TEXTURE(texture_buffer)
MAGC_UNSUPPORTED_TEXTURE(depth2d)
MAGC_UNSUPPORTED_TEXTURE(depth2d_array)
MAGC_UNSUPPORTED_TEXTURE(depth2d_ms)
MAGC_UNSUPPORTED_TEXTURE(depthcube)

// Types that fail as soon as a value is made.
#define MAGC_UNSUPPORTED_TYPE(NAME, WHAT)                                                           \
  struct NAME {                                                                                     \
    template <class... A> constexpr NAME(A&&...) {                                                  \
      static_assert(magc_sim::dependent_false<A...>::value, "magc sim: " WHAT " is not supported"); \
    }                                                                                               \
  };
MAGC_UNSUPPORTED_TYPE(sampler, "sampler")
MAGC_UNSUPPORTED_TYPE(float2x2, "matrix type float2x2")
MAGC_UNSUPPORTED_TYPE(float3x3, "matrix type float3x3")
MAGC_UNSUPPORTED_TYPE(float4x4, "matrix type float4x4")
MAGC_UNSUPPORTED_TYPE(float2x3, "matrix type float2x3")
MAGC_UNSUPPORTED_TYPE(float3x2, "matrix type float3x2")
MAGC_UNSUPPORTED_TYPE(float2x4, "matrix type float2x4")
MAGC_UNSUPPORTED_TYPE(float4x2, "matrix type float4x2")
MAGC_UNSUPPORTED_TYPE(float3x4, "matrix type float3x4")
MAGC_UNSUPPORTED_TYPE(float4x3, "matrix type float4x3")
MAGC_UNSUPPORTED_TYPE(half2x2, "matrix type half2x2")
MAGC_UNSUPPORTED_TYPE(half3x3, "matrix type half3x3")
MAGC_UNSUPPORTED_TYPE(half4x4, "matrix type half4x4")

// Names used to build samplers, so that the sampler error is the one shown.
enum class coord { normalized, pixel };
enum class filter { nearest, linear };
enum class mip_filter { none, nearest, linear };
enum class address { repeat, mirrored_repeat, clamp_to_edge, clamp_to_zero, clamp_to_border };
enum class compare_func { none, less, less_equal, greater, greater_equal, equal, not_equal, always, never };

#define MAGC_UNSUPPORTED_FN(NAME, WHAT)                                                              \
  template <class... A> inline magc_sim::unsupported_value NAME(A&&...) {                           \
    static_assert(magc_sim::dependent_false<A...>::value, "magc sim: " WHAT " is not supported");    \
    return {};                                                                                       \
  }
MAGC_UNSUPPORTED_FN(quad_sum, "quad-group function quad_sum")
MAGC_UNSUPPORTED_FN(quad_product, "quad-group function quad_product")
MAGC_UNSUPPORTED_FN(quad_max, "quad-group function quad_max")
MAGC_UNSUPPORTED_FN(quad_min, "quad-group function quad_min")
MAGC_UNSUPPORTED_FN(quad_shuffle, "quad-group function quad_shuffle")
MAGC_UNSUPPORTED_FN(quad_shuffle_up, "quad-group function quad_shuffle_up")
MAGC_UNSUPPORTED_FN(quad_shuffle_down, "quad-group function quad_shuffle_down")
MAGC_UNSUPPORTED_FN(quad_shuffle_xor, "quad-group function quad_shuffle_xor")
MAGC_UNSUPPORTED_FN(quad_broadcast, "quad-group function quad_broadcast")
MAGC_UNSUPPORTED_FN(quad_prefix_exclusive_sum, "quad-group function quad_prefix_exclusive_sum")
MAGC_UNSUPPORTED_FN(quad_prefix_inclusive_sum, "quad-group function quad_prefix_inclusive_sum")
MAGC_UNSUPPORTED_FN(quad_ballot, "quad-group function quad_ballot")
MAGC_UNSUPPORTED_FN(simd_shuffle_and_fill_down, "simd_shuffle_and_fill_down")
MAGC_UNSUPPORTED_FN(simd_shuffle_and_fill_up, "simd_shuffle_and_fill_up")
MAGC_UNSUPPORTED_FN(discard_fragment, "discard_fragment (fragment functions)")

}  // namespace metal
