// magc sim: MSL scalar and vector types.
//
// half and bfloat are 16-bit storage types; arithmetic is done in float and
// rounded back (round to nearest even), which gives the correctly rounded
// result of each single operation. Vector types have Metal's sizes and
// alignments (float3 is 16 bytes, packed_float3 is 12).
#pragma once
#include <cfloat>
#include <cstdint>
#include <limits>
#include <type_traits>

#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif
#ifndef NAN
#define NAN (__builtin_nanf(""))
#endif
#ifndef HUGE_VALF
#define HUGE_VALF (__builtin_huge_valf())
#endif

typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;

namespace magc_sim {

inline uint32_t f2u(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }

// float -> binary16, round to nearest even (after F. Giesen's float_to_half_fast3_rtne).
inline uint16_t f2h(float f) {
  uint32_t u = f2u(f);
  uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t o;
  if (u >= 0x47800000u) {  // >= 65536, Inf or NaN
    o = u > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (u < 0x38800000u) {  // half subnormal or zero: let the FPU round
    o = (uint16_t)(f2u(u2f(u) + 0.5f) - 0x3f000000u);
  } else {
    uint32_t odd = (u >> 13) & 1;
    u += 0xc8000fffu + odd;  // rebias exponent and round
    o = (uint16_t)(u >> 13);
  }
  return (uint16_t)(o | (sign >> 16));
}

inline float h2f(uint16_t h) {
  uint32_t o = (uint32_t)(h & 0x7fff) << 13;
  uint32_t exp = o & 0x0f800000u;
  o += 0x38000000u;
  if (exp == 0x0f800000u) {
    o += 0x38000000u;  // Inf/NaN
  } else if (exp == 0) {
    o = f2u(u2f(o + 0x00800000u) - u2f(0x38800000u));  // zero/subnormal
  }
  return u2f(o | ((uint32_t)(h & 0x8000) << 16));
}

// float -> bfloat16, round to nearest even; NaN stays NaN.
inline uint16_t f2bf(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
inline float bf2f(uint16_t b) { return u2f((uint32_t)b << 16); }

template <class T> struct is_fp16 : std::false_type {};

}  // namespace magc_sim

// Narrowing to H is explicit: half(x), bfloat(x), or a typed literal.
// Metal refuses an implicit float -> bfloat conversion; it accepts one to
// half, but the sim refuses that too, so that code magc emits (which must
// be correct for both) converts in the open. INT_IMPLICIT: whether an
// integer converts implicitly (to half, as in MSL).
#define MAGC_FP16_TYPE(H, TOBITS, TOFLOAT, INT_IMPLICIT)                                          \
  struct H {                                                                                      \
    uint16_t bits;                                                                                \
    H() = default;                                                                                \
    explicit H(float f) : bits(magc_sim::TOBITS(f)) {}                                            \
    explicit H(double d) : bits(magc_sim::TOBITS((float)d)) {}                                    \
    template <class I, std::enable_if_t<std::is_integral_v<I> && INT_IMPLICIT, int> = 0>          \
    H(I i) : bits(magc_sim::TOBITS((float)i)) {}                                                  \
    template <class I, std::enable_if_t<std::is_integral_v<I> && !INT_IMPLICIT, int> = 0>         \
    explicit H(I i) : bits(magc_sim::TOBITS((float)i)) {}                                         \
    operator float() const { return magc_sim::TOFLOAT(bits); }                                    \
    H& operator+=(H o) { return *this = H(float(*this) + float(o)); }                             \
    H& operator-=(H o) { return *this = H(float(*this) - float(o)); }                             \
    H& operator*=(H o) { return *this = H(float(*this) * float(o)); }                             \
    H& operator/=(H o) { return *this = H(float(*this) / float(o)); }                             \
    H& operator++() { return *this += H(1.0f); }                                                  \
    H& operator--() { return *this -= H(1.0f); }                                                  \
    H operator++(int) { H t = *this; ++*this; return t; }                                         \
    H operator--(int) { H t = *this; --*this; return t; }                                         \
  };                                                                                              \
  namespace magc_sim {                                                                            \
  template <> struct is_fp16<H> : std::true_type {};                                              \
  }                                                                                               \
  inline H operator-(H a) { H r; r.bits = (uint16_t)(a.bits ^ 0x8000); return r; }               \
  inline H operator+(H a) { return a; }

// Mixed arithmetic follows MSL: H op H and H op int give H, H op float gives
// float (double literals act as float, as MSL has no double).
#define MAGC_FP16_ARITH(H, OP)                                                                    \
  inline H operator OP(H a, H b) { return H(float(a) OP float(b)); }                              \
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>                            \
  inline H operator OP(H a, I b) { return H(float(a) OP float(b)); }                              \
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>                            \
  inline H operator OP(I a, H b) { return H(float(a) OP float(b)); }                              \
  inline float operator OP(H a, float b) { return float(a) OP b; }                                \
  inline float operator OP(float a, H b) { return a OP float(b); }                                \
  inline float operator OP(H a, double b) { return float(a) OP float(b); }                        \
  inline float operator OP(double a, H b) { return float(a) OP float(b); }

#define MAGC_FP16_CMP(H, OP)                                                                      \
  inline bool operator OP(H a, H b) { return float(a) OP float(b); }                              \
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>                            \
  inline bool operator OP(H a, I b) { return float(a) OP float(b); }                              \
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>                            \
  inline bool operator OP(I a, H b) { return float(a) OP float(b); }                              \
  inline bool operator OP(H a, float b) { return float(a) OP b; }                                 \
  inline bool operator OP(float a, H b) { return a OP float(b); }                                 \
  inline bool operator OP(H a, double b) { return float(a) OP float(b); }                         \
  inline bool operator OP(double a, H b) { return float(a) OP float(b); }

#define MAGC_FP16(H, TOBITS, TOFLOAT, INT_IMPLICIT) \
  MAGC_FP16_TYPE(H, TOBITS, TOFLOAT, INT_IMPLICIT)  \
  MAGC_FP16_ARITH(H, +)               \
  MAGC_FP16_ARITH(H, -)               \
  MAGC_FP16_ARITH(H, *)               \
  MAGC_FP16_ARITH(H, /)               \
  MAGC_FP16_CMP(H, ==)                \
  MAGC_FP16_CMP(H, !=)                \
  MAGC_FP16_CMP(H, <)                 \
  MAGC_FP16_CMP(H, >)                 \
  MAGC_FP16_CMP(H, <=)                \
  MAGC_FP16_CMP(H, >=)

MAGC_FP16(half, f2h, h2f, true)
MAGC_FP16(bfloat, f2bf, bf2f, false)

// Literal suffixes: 1.0h is a half, 1.0bf a bfloat.
inline half operator"" h(long double v) { return half((float)v); }
inline half operator"" h(unsigned long long v) { return half((float)v); }
inline half operator"" H(long double v) { return half((float)v); }
inline bfloat operator"" bf(long double v) { return bfloat((float)v); }

namespace std {
template <> struct numeric_limits<half> {
  static constexpr bool is_specialized = true, is_signed = true, is_integer = false;
  static constexpr bool has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 11;
  static half from(uint16_t b) { half h; h.bits = b; return h; }
  static half min() { return from(0x0400); }
  static half max() { return from(0x7bff); }
  static half lowest() { return from(0xfbff); }
  static half epsilon() { return from(0x1400); }
  static half infinity() { return from(0x7c00); }
  static half quiet_NaN() { return from(0x7e00); }
  static half denorm_min() { return from(0x0001); }
};
template <> struct numeric_limits<bfloat> {
  static constexpr bool is_specialized = true, is_signed = true, is_integer = false;
  static constexpr bool has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 8;
  static bfloat from(uint16_t b) { bfloat h; h.bits = b; return h; }
  static bfloat min() { return from(0x0080); }
  static bfloat max() { return from(0x7f7f); }
  static bfloat lowest() { return from(0xff7f); }
  static bfloat epsilon() { return from(0x3c00); }
  static bfloat infinity() { return from(0x7f80); }
  static bfloat quiet_NaN() { return from(0x7fc0); }
  static bfloat denorm_min() { return from(0x0001); }
};
}  // namespace std

namespace magc_sim {

template <class T> inline constexpr bool is_float_v = std::is_floating_point_v<T> || is_fp16<T>::value;
template <class T> inline constexpr bool is_scalar_v = std::is_arithmetic_v<T> || is_fp16<T>::value;

template <class T, int N, bool P> struct vstore;
template <class T, bool P> struct alignas(P ? alignof(T) : 2 * sizeof(T)) vstore<T, 2, P> { T x, y; };
template <class T, bool P> struct alignas(P ? alignof(T) : 4 * sizeof(T)) vstore<T, 3, P> { T x, y, z; };
template <class T, bool P> struct alignas(P ? alignof(T) : 4 * sizeof(T)) vstore<T, 4, P> { T x, y, z, w; };

template <class T, int N, bool P = false> struct vec;

template <class X> struct vinfo {
  static constexpr bool is_vec = false;
  static constexpr int n = is_scalar_v<X> ? 1 : 1000;  // 1000: not a vector component
  using elem = X;
};
template <class T, int N, bool P> struct vinfo<vec<T, N, P>> {
  static constexpr bool is_vec = true;
  static constexpr int n = N;
  using elem = T;
};

template <class T, int N, bool P> struct vec : vstore<T, N, P> {
  using elem = T;
  static constexpr int size = N;

  vec() = default;
  // A scalar converts implicitly, replicated into every component (as in MSL).
  template <class S, std::enable_if_t<is_scalar_v<S>, int> = 0>
  vec(S s) {
    for (int i = 0; i < N; i++) (*this)[i] = T(s);
  }
  // Converting between element types is explicit: float4(some_int4).
  template <class U, bool Q, std::enable_if_t<!std::is_same_v<U, T>, int> = 0>
  explicit vec(const vec<U, N, Q>& o) {
    for (int i = 0; i < N; i++) (*this)[i] = T(o[i]);
  }
  // packed <-> aligned of the same element type is implicit.
  template <bool Q, std::enable_if_t<Q != P, int> = 0>
  vec(const vec<T, N, Q>& o) {
    for (int i = 0; i < N; i++) (*this)[i] = o[i];
  }
  // float4(a, b, c, d), float4(xy, zw), float4(xyz, w), float3(xy, z), ...
  template <class A, class B, class... R,
            std::enable_if_t<vinfo<A>::n + vinfo<B>::n + (vinfo<R>::n + ... + 0) == N, int> = 0>
  vec(const A& a, const B& b, const R&... r) {
    int i = 0;
    put(i, a);
    put(i, b);
    (put(i, r), ...);
  }

  T& operator[](int i) { return (&this->x)[i]; }
  const T& operator[](int i) const { return (&this->x)[i]; }

  template <class O> vec& operator+=(const O& o) { return *this = *this + o; }
  template <class O> vec& operator-=(const O& o) { return *this = *this - o; }
  template <class O> vec& operator*=(const O& o) { return *this = *this * o; }
  template <class O> vec& operator/=(const O& o) { return *this = *this / o; }
  template <class O> vec& operator%=(const O& o) { return *this = *this % o; }
  template <class O> vec& operator&=(const O& o) { return *this = *this & o; }
  template <class O> vec& operator|=(const O& o) { return *this = *this | o; }
  template <class O> vec& operator^=(const O& o) { return *this = *this ^ o; }
  template <class O> vec& operator<<=(const O& o) { return *this = *this << o; }
  template <class O> vec& operator>>=(const O& o) { return *this = *this >> o; }

 private:
  template <class S> void put(int& i, const S& s) {
    if constexpr (vinfo<S>::is_vec) {
      for (int j = 0; j < vinfo<S>::n; j++) (*this)[i++] = T(s[j]);
    } else {
      (*this)[i++] = T(s);
    }
  }
};

// vbin<A, B>: the result of an elementwise operation on A and B when at least
// one is a vector: same element type and length, or a vector and a scalar.
template <class A, class B> struct vbin_check {
  static constexpr bool va = vinfo<A>::is_vec, vb = vinfo<B>::is_vec;
  using E = typename vinfo<std::conditional_t<va, A, B>>::elem;
  static constexpr int n = va ? vinfo<A>::n : vinfo<B>::n;
  static constexpr bool ok =
      (va && vb) ? (std::is_same_v<typename vinfo<A>::elem, typename vinfo<B>::elem> && vinfo<A>::n == vinfo<B>::n)
                 : (va ? is_scalar_v<B> : (vb && is_scalar_v<A>));
};
template <class A, class B>
using vbin_t = std::enable_if_t<vbin_check<A, B>::ok, vec<typename vbin_check<A, B>::E, vbin_check<A, B>::n>>;
template <class A, class B>
using vcmp_t = std::enable_if_t<vbin_check<A, B>::ok, vec<bool, vbin_check<A, B>::n>>;

template <class E, class X> inline E vget(const X& x, int i) {
  if constexpr (vinfo<X>::is_vec) return x[i];
  else return E(x);
}

}  // namespace magc_sim

// The operators live in magc_sim, next to vec, so that argument-dependent
// lookup finds them from any namespace.
namespace magc_sim {
#define MAGC_VEC_BINOP(OP)                                                         \
  template <class A, class B, class R = vbin_t<A, B>>                    \
  inline R operator OP(const A& a, const B& b) {                                   \
    using E = typename R::elem;                                                    \
    R r;                                                                           \
    for (int i = 0; i < R::size; i++)                                              \
      r[i] = E(vget<E>(a, i) OP vget<E>(b, i));                \
    return r;                                                                      \
  }
#define MAGC_VEC_CMPOP(OP)                                                         \
  template <class A, class B, class R = vcmp_t<A, B>>                    \
  inline R operator OP(const A& a, const B& b) {                                   \
    using E = typename vbin_check<A, B>::E;                              \
    R r;                                                                           \
    for (int i = 0; i < R::size; i++)                                              \
      r[i] = vget<E>(a, i) OP vget<E>(b, i);                   \
    return r;                                                                      \
  }
MAGC_VEC_BINOP(+)
MAGC_VEC_BINOP(-)
MAGC_VEC_BINOP(*)
MAGC_VEC_BINOP(/)
MAGC_VEC_BINOP(%)
MAGC_VEC_BINOP(&)
MAGC_VEC_BINOP(|)
MAGC_VEC_BINOP(^)
MAGC_VEC_BINOP(<<)
MAGC_VEC_BINOP(>>)
MAGC_VEC_CMPOP(==)
MAGC_VEC_CMPOP(!=)
MAGC_VEC_CMPOP(<)
MAGC_VEC_CMPOP(>)
MAGC_VEC_CMPOP(<=)
MAGC_VEC_CMPOP(>=)
MAGC_VEC_CMPOP(&&)
MAGC_VEC_CMPOP(||)

template <class T, int N, bool P> inline vec<T, N> operator-(const vec<T, N, P>& a) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = T(-a[i]);
  return r;
}
template <class T, int N, bool P> inline vec<T, N> operator+(const vec<T, N, P>& a) { return a; }
template <class T, int N, bool P> inline vec<T, N> operator~(const vec<T, N, P>& a) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = T(~a[i]);
  return r;
}
template <class T, int N, bool P> inline vec<bool, N> operator!(const vec<T, N, P>& a) {
  vec<bool, N> r;
  for (int i = 0; i < N; i++) r[i] = !a[i];
  return r;
}

}  // namespace magc_sim

#define MAGC_VEC_TYPEDEFS(T, NAME)                         \
  typedef magc_sim::vec<T, 2> NAME##2;                     \
  typedef magc_sim::vec<T, 3> NAME##3;                     \
  typedef magc_sim::vec<T, 4> NAME##4;                     \
  typedef magc_sim::vec<T, 2, true> packed_##NAME##2;      \
  typedef magc_sim::vec<T, 3, true> packed_##NAME##3;      \
  typedef magc_sim::vec<T, 4, true> packed_##NAME##4;
MAGC_VEC_TYPEDEFS(float, float)
MAGC_VEC_TYPEDEFS(half, half)
MAGC_VEC_TYPEDEFS(bfloat, bfloat)
MAGC_VEC_TYPEDEFS(int, int)
MAGC_VEC_TYPEDEFS(uint, uint)
MAGC_VEC_TYPEDEFS(short, short)
MAGC_VEC_TYPEDEFS(ushort, ushort)
MAGC_VEC_TYPEDEFS(char, char)
MAGC_VEC_TYPEDEFS(uchar, uchar)
MAGC_VEC_TYPEDEFS(long, long)
MAGC_VEC_TYPEDEFS(ulong, ulong)
MAGC_VEC_TYPEDEFS(bool, bool)

// as_type reinterprets the bits of a value of the same size.
template <class To, class From> inline To as_type(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "magc sim: as_type needs types of the same size");
  To t;
  __builtin_memcpy((void*)&t, (const void*)&f, sizeof(To));
  return t;
}

#define MAXFLOAT FLT_MAX
#define MAXHALF (half(65504.0f))
#define HALF_MAX (half(65504.0f))
#define HALF_MIN (half(6.103515625e-05f))
#define HALF_EPSILON (half(0.0009765625f))
#define M_E_F 2.71828182845904523536f
#define M_LOG2E_F 1.44269504088896340736f
#define M_LOG10E_F 0.434294481903251827651f
#define M_LN2_F 0.693147180559945309417f
#define M_LN10_F 2.30258509299404568402f
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_PI_4_F 0.785398163397448309616f
#define M_1_PI_F 0.318309886183790671538f
#define M_2_PI_F 0.636619772367581343076f
#define M_2_SQRTPI_F 1.12837916709551257390f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.707106781186547524401f
#define M_PI_H (half(3.14159265358979323846f))
#define M_E_H (half(2.71828182845904523536f))
