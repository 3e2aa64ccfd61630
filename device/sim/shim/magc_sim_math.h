// magc sim: the metal:: math, common, integer, relational and geometric
// functions. half and bfloat are computed in float and rounded back. The
// compiler builtins (__builtin_expf, ...) stand in for <cmath>, which would
// double the time to compile a small kernel.
#pragma once
#include <type_traits>

namespace magc_sim {
template <class T> struct tag { using type = T; };

// The common type of two scalar arguments, following MSL: half with an int is
// half, half with float is float.
template <class A, class B> struct scommon {
  static auto pick() {
    if constexpr (std::is_same_v<A, B>) return tag<A>{};
    else if constexpr (is_fp16<A>::value && std::is_integral_v<B>) return tag<A>{};
    else if constexpr (is_fp16<B>::value && std::is_integral_v<A>) return tag<B>{};
    else if constexpr (is_fp16<A>::value || is_fp16<B>::value) return tag<float>{};
    else return tag<std::common_type_t<A, B>>{};
  }
  using type = typename decltype(pick())::type;
};

template <class X> inline constexpr bool is_msl_v = is_scalar_v<X> || vinfo<X>::is_vec;

template <class A, class B> struct common2 {
  static auto pick() {
    if constexpr (vinfo<A>::is_vec || vinfo<B>::is_vec) return tag<vbin_t<A, B>>{};
    else return tag<typename scommon<A, B>::type>{};
  }
  using type = typename decltype(pick())::type;
};
template <class A, class B, class C>
using common3_t = typename common2<typename common2<A, B>::type, C>::type;

template <class T> inline constexpr bool is_fvec_v = is_float_v<typename vinfo<T>::elem>;
}  // namespace magc_sim

namespace metal {
using magc_sim::vec;

// Elementwise application of a scalar function to a vector.
#define MAGC_MAP1(NAME)                                                                     \
  template <class T, int N, bool P> inline auto NAME(const vec<T, N, P>& v) {               \
    vec<decltype(NAME(v[0])), N> r;                                                         \
    for (int i = 0; i < N; i++) r[i] = NAME(v[i]);                                          \
    return r;                                                                               \
  }

#define MAGC_UNARY(NAME, EXPR)                                                              \
  template <class T, std::enable_if_t<magc_sim::is_float_v<T>, int> = 0> inline T NAME(T x_) { \
    float x = float(x_);                                                                    \
    return T(EXPR);                                                                         \
  }                                                                                         \
  MAGC_MAP1(NAME)

MAGC_UNARY(exp, __builtin_expf(x))
MAGC_UNARY(exp2, __builtin_exp2f(x))
MAGC_UNARY(exp10, __builtin_powf(10.0f, x))
MAGC_UNARY(log, __builtin_logf(x))
MAGC_UNARY(log2, __builtin_log2f(x))
MAGC_UNARY(log10, __builtin_log10f(x))
MAGC_UNARY(sqrt, __builtin_sqrtf(x))
MAGC_UNARY(rsqrt, 1.0f / __builtin_sqrtf(x))
MAGC_UNARY(sin, __builtin_sinf(x))
MAGC_UNARY(cos, __builtin_cosf(x))
MAGC_UNARY(tan, __builtin_tanf(x))
MAGC_UNARY(asin, __builtin_asinf(x))
MAGC_UNARY(acos, __builtin_acosf(x))
MAGC_UNARY(atan, __builtin_atanf(x))
MAGC_UNARY(sinh, __builtin_sinhf(x))
MAGC_UNARY(cosh, __builtin_coshf(x))
MAGC_UNARY(tanh, __builtin_tanhf(x))
MAGC_UNARY(asinh, __builtin_asinhf(x))
MAGC_UNARY(acosh, __builtin_acoshf(x))
MAGC_UNARY(atanh, __builtin_atanhf(x))
MAGC_UNARY(sinpi, __builtin_sinf(x * M_PI_F))
MAGC_UNARY(cospi, __builtin_cosf(x * M_PI_F))
MAGC_UNARY(tanpi, __builtin_tanf(x * M_PI_F))
MAGC_UNARY(floor, __builtin_floorf(x))
MAGC_UNARY(ceil, __builtin_ceilf(x))
MAGC_UNARY(round, __builtin_roundf(x))
MAGC_UNARY(rint, __builtin_nearbyintf(x))
MAGC_UNARY(trunc, __builtin_truncf(x))
MAGC_UNARY(fabs, __builtin_fabsf(x))
MAGC_UNARY(fract, __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f))
MAGC_UNARY(saturate, __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f))
MAGC_UNARY(sign, x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x == x ? x : 0.0f)))
MAGC_UNARY(radians, x * (M_PI_F / 180.0f))
MAGC_UNARY(degrees, x * (180.0f / M_PI_F))

#define MAGC_PREDICATE(NAME, EXPR)                                                            \
  template <class T, std::enable_if_t<magc_sim::is_float_v<T>, int> = 0> inline bool NAME(T x_) { \
    float x = float(x_);                                                                      \
    return EXPR;                                                                              \
  }                                                                                           \
  MAGC_MAP1(NAME)
MAGC_PREDICATE(isnan, __builtin_isnan(x))
MAGC_PREDICATE(isinf, __builtin_isinf(x))
MAGC_PREDICATE(isfinite, __builtin_isfinite(x))
MAGC_PREDICATE(isnormal, __builtin_isnormal(x))
MAGC_PREDICATE(signbit, __builtin_signbit(x))

// abs works on integers and floats.
template <class T, std::enable_if_t<magc_sim::is_scalar_v<T>, int> = 0> inline T abs(T x) {
  if constexpr (magc_sim::is_float_v<T>) return T(__builtin_fabsf(float(x)));
  else if constexpr (std::is_signed_v<T>) return x < 0 ? T(-x) : x;
  else return x;
}
MAGC_MAP1(abs)

// Binary functions of two scalars or vectors, elementwise; mixed arguments
// are converted to their common type (a scalar is replicated).
#define MAGC_BINARY(NAME, SCALAR)                                                            \
  template <class T, std::enable_if_t<magc_sim::is_scalar_v<T>, int> = 0>                   \
  inline T NAME##_scalar_(T a, T b) { SCALAR }                                               \
  template <class A, class B,                                                                \
            std::enable_if_t<magc_sim::is_msl_v<A> && magc_sim::is_msl_v<B>, int> = 0>       \
  inline auto NAME(const A& a_, const B& b_) {                                               \
    using C = typename magc_sim::common2<A, B>::type;                                        \
    C a = C(a_), b = C(b_);                                                                  \
    if constexpr (magc_sim::vinfo<C>::is_vec) {                                              \
      C r;                                                                                   \
      for (int i = 0; i < C::size; i++) r[i] = NAME##_scalar_(a[i], b[i]);                   \
      return r;                                                                              \
    } else {                                                                                 \
      return NAME##_scalar_(a, b);                                                           \
    }                                                                                        \
  }

#define MAGC_FBINARY(NAME, EXPR)                                                             \
  MAGC_BINARY(NAME, static_assert(magc_sim::is_float_v<T>, "magc sim: " #NAME " needs floating-point arguments"); \
              float x = float(a); float y = float(b); return T(EXPR);)

// max and min return the other argument when one is NaN (like fmax/fmin).
MAGC_BINARY(max, if constexpr (magc_sim::is_float_v<T>) return T(__builtin_fmaxf(float(a), float(b))); else return a > b ? a : b;)
MAGC_BINARY(min, if constexpr (magc_sim::is_float_v<T>) return T(__builtin_fminf(float(a), float(b))); else return a < b ? a : b;)
MAGC_FBINARY(fmax, __builtin_fmaxf(x, y))
MAGC_FBINARY(fmin, __builtin_fminf(x, y))
MAGC_FBINARY(pow, __builtin_powf(x, y))
MAGC_FBINARY(powr, __builtin_powf(x, y))
MAGC_FBINARY(atan2, __builtin_atan2f(x, y))
MAGC_FBINARY(fmod, __builtin_fmodf(x, y))
MAGC_FBINARY(copysign, __builtin_copysignf(x, y))
MAGC_FBINARY(fdim, __builtin_fdimf(x, y))
MAGC_FBINARY(step, y < x ? 0.0f : 1.0f)
MAGC_FBINARY(divide, x / y)
MAGC_BINARY(absdiff, return a > b ? T(a - b) : T(b - a);)

#define MAGC_TERNARY(NAME, SCALAR)                                                            \
  template <class T> inline T NAME##_scalar_(T a, T b, T c) { SCALAR }                        \
  template <class A, class B, class D,                                                        \
            std::enable_if_t<magc_sim::is_msl_v<A> && magc_sim::is_msl_v<B> && magc_sim::is_msl_v<D>, int> = 0> \
  inline auto NAME(const A& a_, const B& b_, const D& c_) {                                   \
    using C = magc_sim::common3_t<A, B, D>;                                                   \
    C a = C(a_), b = C(b_), c = C(c_);                                                        \
    if constexpr (magc_sim::vinfo<C>::is_vec) {                                               \
      C r;                                                                                    \
      for (int i = 0; i < C::size; i++) r[i] = NAME##_scalar_(a[i], b[i], c[i]);              \
      return r;                                                                               \
    } else {                                                                                  \
      return NAME##_scalar_(a, b, c);                                                         \
    }                                                                                         \
  }

MAGC_TERNARY(fma, if constexpr (magc_sim::is_float_v<T>) return T(__builtin_fmaf(float(a), float(b), float(c))); else return T(a * b + c);)
MAGC_TERNARY(mad, return T(a * b + c);)
MAGC_TERNARY(clamp, return min_scalar_(max_scalar_(a, b), c);)
MAGC_TERNARY(min3, return min_scalar_(min_scalar_(a, b), c);)
MAGC_TERNARY(max3, return max_scalar_(max_scalar_(a, b), c);)
MAGC_TERNARY(fmin3, return min_scalar_(min_scalar_(a, b), c);)
MAGC_TERNARY(fmax3, return max_scalar_(max_scalar_(a, b), c);)
MAGC_TERNARY(median3, return max_scalar_(min_scalar_(a, b), min_scalar_(max_scalar_(a, b), c));)
MAGC_TERNARY(mix, return T(float(a) + (float(b) - float(a)) * float(c));)
MAGC_TERNARY(smoothstep, float t = __builtin_fminf(__builtin_fmaxf((float(c) - float(a)) / (float(b) - float(a)), 0.0f), 1.0f);
             return T(t * t * (3.0f - 2.0f * t));)

// select(a, b, c) is c ? b : a, per component when c is a bool vector.
template <class A, class B, std::enable_if_t<magc_sim::is_msl_v<A> && magc_sim::is_msl_v<B>, int> = 0>
inline auto select(const A& a_, const B& b_, bool c) {
  using C = typename magc_sim::common2<A, B>::type;
  return c ? C(b_) : C(a_);
}
template <class A, class B, int N, bool P,
          std::enable_if_t<magc_sim::is_msl_v<A> && magc_sim::is_msl_v<B>, int> = 0>
inline auto select(const A& a_, const B& b_, const vec<bool, N, P>& c) {
  using C0 = typename magc_sim::common2<A, B>::type;
  using C = std::conditional_t<magc_sim::vinfo<C0>::is_vec, C0, vec<C0, N>>;
  static_assert(magc_sim::vinfo<C>::n == N, "magc sim: select needs a bool vector of the same length");
  C a = C(a_), b = C(b_), r;
  for (int i = 0; i < N; i++) r[i] = c[i] ? b[i] : a[i];
  return r;
}

inline bool all(bool b) { return b; }
inline bool any(bool b) { return b; }
template <int N, bool P> inline bool all(const vec<bool, N, P>& v) {
  for (int i = 0; i < N; i++) if (!v[i]) return false;
  return true;
}
template <int N, bool P> inline bool any(const vec<bool, N, P>& v) {
  for (int i = 0; i < N; i++) if (v[i]) return true;
  return false;
}

// Geometric functions.
template <class T, int N, bool P, bool Q> inline T dot(const vec<T, N, P>& a, const vec<T, N, Q>& b) {
  float s = 0.0f;
  for (int i = 0; i < N; i++) s += float(a[i]) * float(b[i]);
  return T(s);
}
template <class T, int N, bool P> inline T length_squared(const vec<T, N, P>& a) { return dot(a, a); }
template <class T, int N, bool P> inline T length(const vec<T, N, P>& a) { return T(__builtin_sqrtf(float(dot(a, a)))); }
template <class T, int N, bool P, bool Q> inline T distance(const vec<T, N, P>& a, const vec<T, N, Q>& b) {
  return length(a - b);
}
template <class T, int N, bool P> inline vec<T, N> normalize(const vec<T, N, P>& a) {
  return a * T(1.0f / __builtin_sqrtf(float(dot(a, a))));
}
template <class T, bool P, bool Q> inline vec<T, 3> cross(const vec<T, 3, P>& a, const vec<T, 3, Q>& b) {
  return vec<T, 3>(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}

// Integer functions.
#define MAGC_IUNARY(NAME, EXPR)                                                                   \
  template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0> inline T NAME(T x) {       \
    using U = std::make_unsigned_t<T>;                                                            \
    constexpr int bits = 8 * sizeof(T);                                                           \
    U u = U(x);                                                                                   \
    (void)bits;                                                                                   \
    return T(EXPR);                                                                               \
  }                                                                                               \
  MAGC_MAP1(NAME)
MAGC_IUNARY(popcount, __builtin_popcountll((unsigned long long)u))
MAGC_IUNARY(clz, u == 0 ? bits : __builtin_clzll((unsigned long long)u) - (64 - bits))
MAGC_IUNARY(ctz, u == 0 ? bits : __builtin_ctzll((unsigned long long)u))
MAGC_IUNARY(reverse_bits, ([&] { U r = 0; for (int i = 0; i < bits; i++) r |= U(((u >> i) & 1) << (bits - 1 - i)); return r; })())
MAGC_BINARY(mul_hi,
            static_assert(std::is_integral_v<T> && sizeof(T) <= 4, "magc sim: mul_hi needs 32-bit integers");
            return T(((long long)a * (long long)b) >> (8 * sizeof(T)));)
MAGC_BINARY(rotate, static_assert(std::is_integral_v<T>, "magc sim: rotate needs integers");
            using U = std::make_unsigned_t<T>; constexpr int bits = 8 * sizeof(T); int s = int(U(b) % bits);
            return s == 0 ? a : T((U(a) << s) | (U(a) >> (bits - s)));)

template <class T> struct numeric_limits : std::numeric_limits<T> {};

// precise:: and fast:: name the same functions: the sim computes every
// function the same, precise way.
namespace precise { using namespace ::metal; }
namespace fast { using namespace ::metal; }

}  // namespace metal
