// magc sim: barriers, simd-group functions and simdgroup matrices.
//
// Each SIMD group is 32 threads (fibers). A simd_* call stores the caller's
// value, waits until every live lane of its simdgroup has made the call, then
// computes the caller's result from all the lanes' values. Lanes that have
// returned from the kernel take no part (as inactive lanes on a GPU).
#pragma once
#include <type_traits>

namespace metal {

enum class mem_flags : unsigned {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16,
};
constexpr mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(unsigned(a) | unsigned(b)); }

// Fibers of a threadgroup share one OS thread, so memory is coherent between
// them; the flags only matter on a GPU.
inline void threadgroup_barrier(mem_flags = mem_flags::mem_none) { magc_sim::tg_barrier(); }
inline void simdgroup_barrier(mem_flags = mem_flags::mem_none) {
  magc_sim::Fiber* f = magc_sim::self();
  if (!f->fiber) return magc_sim::misuse(f->w);
  magc_sim::simd_arrive(f, f->w->sg[f->sg]);
}

}  // namespace metal

namespace magc_sim {

// SimdView is the outcome of one exchange: every lane's value and the mask of
// lanes that took part.
template <class T> struct SimdView {
  const unsigned char* base;
  uint32_t mask;
  uint32_t lane;
  T get(uint32_t j) const {
    T v;
    __builtin_memcpy((void*)&v, base + 16 * j, sizeof(T));
    return v;
  }
  bool active(uint32_t j) const { return j < 32 && ((mask >> j) & 1); }
  T get_or(uint32_t j, const T& own) const { return active(j) ? get(j) : own; }
};

template <class T> inline SimdView<T> simd_exchange(const T& v) {
  static_assert(sizeof(T) <= 16 && std::is_trivially_copyable_v<T>,
                "magc sim: simd-group functions take scalars and vectors of at most 16 bytes");
  Fiber* f = self();
  Worker* w = f->w;
  if (__builtin_expect(!f->fiber, 0)) {
    misuse(w);
    __builtin_memcpy(w->scratch, (const void*)&v, sizeof(T));
    return SimdView<T>{w->scratch, 1u, 0u};
  }
  SimdGroup& g = w->sg[f->sg];
  unsigned p = g.gen & 1;
  __builtin_memcpy(g.slot[p][f->lane], (const void*)&v, sizeof(T));
  simd_arrive(f, g);
  return SimdView<T>{&g.slot[p][0][0], g.mask[p], f->lane};
}

template <class T, class Op> inline T simd_fold(const SimdView<T>& s, uint32_t upto, bool inclusive, T init, Op op) {
  T acc = init;
  for (uint32_t j = 0; j < upto + (inclusive ? 1 : 0) && j < 32; j++)
    if (s.active(j)) acc = op(acc, s.get(j));
  return acc;
}

template <class T> inline T vzero() { return T(0); }
template <class T> inline T vone() { return T(1); }

}  // namespace magc_sim

namespace metal {

#define MAGC_SIMD_REDUCE(NAME, OP)                                                       \
  template <class T> inline T NAME(T x) {                                                     \
    auto s = magc_sim::simd_exchange(x);                                                      \
    bool first = true;                                                                        \
    T acc = x;                                                                                \
    for (uint32_t j = 0; j < 32; j++) {                                                       \
      if (!s.active(j)) continue;                                                             \
      T b = s.get(j);                                                                         \
      if (first) acc = b, first = false;                                                      \
      else acc = OP;                                                                          \
    }                                                                                         \
    return acc;                                                                               \
  }
MAGC_SIMD_REDUCE(simd_sum, T(acc + b))
MAGC_SIMD_REDUCE(simd_product, T(acc * b))
MAGC_SIMD_REDUCE(simd_max, T(max(acc, b)))
MAGC_SIMD_REDUCE(simd_min, T(min(acc, b)))
MAGC_SIMD_REDUCE(simd_and, T(acc & b))
MAGC_SIMD_REDUCE(simd_or, T(acc | b))
MAGC_SIMD_REDUCE(simd_xor, T(acc ^ b))

template <class T> inline T simd_prefix_exclusive_sum(T x) {
  auto s = magc_sim::simd_exchange(x);
  return magc_sim::simd_fold(s, s.lane, false, magc_sim::vzero<T>(), [](T a, T b) { return T(a + b); });
}
template <class T> inline T simd_prefix_inclusive_sum(T x) {
  auto s = magc_sim::simd_exchange(x);
  return magc_sim::simd_fold(s, s.lane, true, magc_sim::vzero<T>(), [](T a, T b) { return T(a + b); });
}
template <class T> inline T simd_prefix_exclusive_product(T x) {
  auto s = magc_sim::simd_exchange(x);
  return magc_sim::simd_fold(s, s.lane, false, magc_sim::vone<T>(), [](T a, T b) { return T(a * b); });
}
template <class T> inline T simd_prefix_inclusive_product(T x) {
  auto s = magc_sim::simd_exchange(x);
  return magc_sim::simd_fold(s, s.lane, true, magc_sim::vone<T>(), [](T a, T b) { return T(a * b); });
}

// Shuffles read another lane's value; a lane out of range or inactive gives
// the caller's own value (as Metal does for shuffle_up/down).
template <class T> inline T simd_shuffle(T x, ushort lane) {
  auto s = magc_sim::simd_exchange(x);
  return s.get_or(lane, x);
}
template <class T> inline T simd_broadcast(T x, ushort lane) { return simd_shuffle(x, lane); }
template <class T> inline T simd_shuffle_down(T x, ushort delta) {
  auto s = magc_sim::simd_exchange(x);
  return s.get_or(s.lane + delta, x);
}
template <class T> inline T simd_shuffle_up(T x, ushort delta) {
  auto s = magc_sim::simd_exchange(x);
  return delta > s.lane ? x : s.get_or(s.lane - delta, x);
}
template <class T> inline T simd_shuffle_xor(T x, ushort mask) {
  auto s = magc_sim::simd_exchange(x);
  return s.get_or(s.lane ^ mask, x);
}
template <class T> inline T simd_shuffle_rotate_down(T x, ushort delta) {
  auto s = magc_sim::simd_exchange(x);
  return s.get_or((s.lane + delta) % 32, x);
}
template <class T> inline T simd_shuffle_rotate_up(T x, ushort delta) {
  auto s = magc_sim::simd_exchange(x);
  return s.get_or((s.lane + 32 - delta % 32) % 32, x);
}
template <class T> inline T simd_broadcast_first(T x) {
  auto s = magc_sim::simd_exchange(x);
  return s.mask ? s.get(__builtin_ctz(s.mask)) : x;
}

// simd_vote holds one bit per lane.
struct simd_vote {
  typedef ulong vote_t;
  vote_t v;
  explicit simd_vote(vote_t x = 0) : v(x) {}
  explicit operator vote_t() const { return v; }
  bool all() const { return v == 0xffffffffu; }
  bool any() const { return v != 0; }
};

inline simd_vote simd_ballot(bool b) {
  auto s = magc_sim::simd_exchange(b);
  ulong m = 0;
  for (uint32_t j = 0; j < 32; j++)
    if (s.active(j) && s.get(j)) m |= 1ul << j;
  return simd_vote(m);
}
inline simd_vote simd_active_threads_mask() { return simd_vote(magc_sim::simd_exchange(true).mask); }
inline bool simd_all(bool b) {
  auto s = magc_sim::simd_exchange(b);
  for (uint32_t j = 0; j < 32; j++)
    if (s.active(j) && !s.get(j)) return false;
  return true;
}
inline bool simd_any(bool b) {
  auto s = magc_sim::simd_exchange(b);
  for (uint32_t j = 0; j < 32; j++)
    if (s.active(j) && s.get(j)) return true;
  return false;
}
inline bool simd_is_first() {
  auto s = magc_sim::simd_exchange(true);
  return s.mask && (uint32_t)__builtin_ctz(s.mask) == s.lane;
}

}  // namespace metal

namespace magc_sim {

void matrix_misuse(Worker* w, uint32_t sg, const char* fn, unsigned line, const char* detail);

inline uint64_t mix_key(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

// matrix_sync checks a simdgroup matrix call: Metal requires all 32 lanes
// of the simdgroup to make it together (the hardware spreads the matrix
// over them), so a simdgroup with lanes missing (a partial last simdgroup,
// lanes that returned) or lanes at different calls or with different
// arguments is an error. line is the caller's; key sums up the arguments
// that must agree. Missing lanes are seen at once; the call itself only
// goes into the lane's trace, compared with the other lanes' (also of
// lanes that returned since) when they next meet (matrix_settle), with no
// fiber switch here.
inline void matrix_sync(const char* fn, unsigned line, uint64_t key) {
  Fiber* f = self();
  Worker* w = f->w;
  if (__builtin_expect(!f->fiber, 0)) return misuse(w);
  SimdGroup& g = w->sg[f->sg];
  // A partial last simdgroup is seen at once. Lanes that returned are not:
  // they may have made this call before returning, as lanes run ahead of
  // each other between meeting points; their trace shows it.
  const uint32_t size = w->nthreads - f->sg * kSimdWidth;
  if (__builtin_expect(size < (uint32_t)kSimdWidth, 0)) {
    char detail[64];
    snprintf(detail, sizeof detail, "only %u of 32 lanes are live in the simdgroup", size);
    return matrix_misuse(w, f->sg, fn, line, detail);
  }
  const uint32_t l = f->lane;
  g.mdirty = 1;
  g.mhash[l] = mix_key(mix_key(mix_key(g.mhash[l] * 31 + 7, (uintptr_t)fn), line), key);
  if (g.mcount[l]++ == 0) {
    g.mfirst_fn[l] = fn;
    g.mfirst_line[l] = line;
    g.mfirst_key[l] = key;
  }
  g.mlast_fn[l] = fn;
  g.mlast_line[l] = line;
}

}  // namespace magc_sim

namespace metal {

// simdgroup matrices: every lane holds the whole matrix. All lanes of a
// simdgroup execute these functions together with the same arguments (as
// Metal requires; matrix_sync checks it), so each lane computing the full
// result is equivalent to the hardware's distributed form.
template <class T, int Cols, int Rows> struct simdgroup_matrix {
  T e[Rows][Cols];
  simdgroup_matrix() = default;
  // simdgroup_float8x8(d) is the diagonal matrix d*I, as in Metal.
  explicit simdgroup_matrix(T d) {
    for (int r = 0; r < Rows; r++)
      for (int c = 0; c < Cols; c++) e[r][c] = r == c ? d : T(0);
  }
};

typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <class T, int Cols, int Rows> inline simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T v) {
  simdgroup_matrix<T, Cols, Rows> m;
  for (int r = 0; r < Rows; r++)
    for (int c = 0; c < Cols; c++) m.e[r][c] = v;
  return m;
}

// matrix_origin is (column, row) of the matrix's first element in src.
template <class T, int Cols, int Rows, class S>
inline void simdgroup_load(simdgroup_matrix<T, Cols, Rows>& d, const S* src, ulong elements_per_row = Cols,
                           ulong2 matrix_origin = ulong2(0), bool transpose_matrix = false,
                           unsigned line = __builtin_LINE()) {
  using namespace magc_sim;
  matrix_sync("simdgroup_load", line,
              mix_key(mix_key(mix_key(mix_key((uintptr_t)src, elements_per_row), matrix_origin.x), matrix_origin.y),
                      transpose_matrix));
  const S* base = src + matrix_origin.y * elements_per_row + matrix_origin.x;
  for (int r = 0; r < Rows; r++)
    for (int c = 0; c < Cols; c++)
      d.e[r][c] = T(transpose_matrix ? base[c * elements_per_row + r] : base[r * elements_per_row + c]);
}

template <class T, int Cols, int Rows, class S>
inline void simdgroup_store(const simdgroup_matrix<T, Cols, Rows>& a, S* dst, ulong elements_per_row = Cols,
                            ulong2 matrix_origin = ulong2(0), bool transpose_matrix = false,
                            unsigned line = __builtin_LINE()) {
  using namespace magc_sim;
  matrix_sync("simdgroup_store", line,
              mix_key(mix_key(mix_key(mix_key((uintptr_t)dst, elements_per_row), matrix_origin.x), matrix_origin.y),
                      transpose_matrix));
  // Every lane stores the same values; lanes run one after another on one
  // OS thread, so the repeated stores do not race.
  S* base = dst + matrix_origin.y * elements_per_row + matrix_origin.x;
  for (int r = 0; r < Rows; r++)
    for (int c = 0; c < Cols; c++) {
      S v = S(a.e[r][c]);
      if (transpose_matrix) base[c * elements_per_row + r] = v;
      else base[r * elements_per_row + c] = v;
    }
}

// d = a * b + c, accumulated in float.
template <class TD, class TA, class TB, class TC, int M, int N, int K>
inline void simdgroup_multiply_accumulate(simdgroup_matrix<TD, N, M>& d, const simdgroup_matrix<TA, K, M>& a,
                                          const simdgroup_matrix<TB, N, K>& b, const simdgroup_matrix<TC, N, M>& c,
                                          unsigned line = __builtin_LINE()) {
  magc_sim::matrix_sync("simdgroup_multiply_accumulate", line, 0);  // operands are each lane's own
  float acc[M][N];
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) acc[i][j] = float(c.e[i][j]);
  for (int i = 0; i < M; i++)
    for (int k = 0; k < K; k++) {
      float av = float(a.e[i][k]);
      for (int j = 0; j < N; j++) acc[i][j] += av * float(b.e[k][j]);
    }
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) d.e[i][j] = TD(acc[i][j]);
}

template <class TD, class TA, class TB, int M, int N, int K>
inline void simdgroup_multiply(simdgroup_matrix<TD, N, M>& d, const simdgroup_matrix<TA, K, M>& a,
                               const simdgroup_matrix<TB, N, K>& b, unsigned line = __builtin_LINE()) {
  simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<float, N, M>(0.0f), line);
}

}  // namespace metal
