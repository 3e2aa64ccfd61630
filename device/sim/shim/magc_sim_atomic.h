// magc sim: Metal atomics. Threadgroups run in parallel on several OS
// threads, so device atomics are real CPU atomics (relaxed, as in Metal).
#pragma once
#include <type_traits>

namespace metal {

enum memory_order { memory_order_relaxed, memory_order_acquire, memory_order_release, memory_order_acq_rel, memory_order_seq_cst };
enum thread_scope { thread_scope_thread, thread_scope_simdgroup, thread_scope_threadgroup, thread_scope_device };

template <class T> struct atomic {
  static_assert(std::is_same_v<T, int> || std::is_same_v<T, uint> || std::is_same_v<T, bool> ||
                    std::is_same_v<T, float> || std::is_same_v<T, ulong> || std::is_same_v<T, long>,
                "magc sim: atomic<T> takes int, uint, bool, float, long or ulong");
  T v;
};
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<bool> atomic_bool;
typedef atomic<float> atomic_float;
typedef atomic<ulong> atomic_ulong;
typedef atomic<long> atomic_long;

}  // namespace metal

namespace magc_sim {
template <class A> using atomic_value_t = std::remove_cv_t<decltype(std::declval<A&>().v)>;

// rmw applies op atomically with a compare-exchange loop and returns the old value.
template <class T, class Op> inline T rmw(volatile T* p, Op op) {
  T old, next;
  __atomic_load((T*)p, &old, __ATOMIC_RELAXED);
  do {
    next = op(old);
  } while (!__atomic_compare_exchange((T*)p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
}  // namespace magc_sim

namespace metal {

template <class A, class U> inline void atomic_store_explicit(A* object, U desired, memory_order = memory_order_relaxed) {
  using T = magc_sim::atomic_value_t<A>;
  T d = T(desired);
  __atomic_store((T*)&object->v, &d, __ATOMIC_RELAXED);
}
template <class A> inline auto atomic_load_explicit(A* object, memory_order = memory_order_relaxed) {
  using T = magc_sim::atomic_value_t<A>;
  T r;
  __atomic_load((T*)&object->v, &r, __ATOMIC_RELAXED);
  return r;
}
template <class A, class U> inline auto atomic_exchange_explicit(A* object, U desired, memory_order = memory_order_relaxed) {
  using T = magc_sim::atomic_value_t<A>;
  T d = T(desired), r;
  __atomic_exchange((T*)&object->v, &d, &r, __ATOMIC_RELAXED);
  return r;
}
template <class A, class U>
inline bool atomic_compare_exchange_weak_explicit(A* object, magc_sim::atomic_value_t<A>* expected, U desired,
                                                  memory_order = memory_order_relaxed, memory_order = memory_order_relaxed) {
  using T = magc_sim::atomic_value_t<A>;
  T d = T(desired);
  return __atomic_compare_exchange((T*)&object->v, expected, &d, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
template <class A, class U>
inline bool atomic_compare_exchange_strong_explicit(A* object, magc_sim::atomic_value_t<A>* expected, U desired,
                                                    memory_order s = memory_order_relaxed, memory_order f = memory_order_relaxed) {
  return atomic_compare_exchange_weak_explicit(object, expected, desired, s, f);
}

#define MAGC_ATOMIC_RMW(NAME, EXPR)                                                               \
  template <class A, class U> inline auto NAME(A* object, U operand, memory_order = memory_order_relaxed) { \
    using T = magc_sim::atomic_value_t<A>;                                                        \
    T b = T(operand);                                                                             \
    return magc_sim::rmw(&object->v, [b](T a) { return T(EXPR); });                              \
  }
MAGC_ATOMIC_RMW(atomic_fetch_add_explicit, a + b)
MAGC_ATOMIC_RMW(atomic_fetch_sub_explicit, a - b)
MAGC_ATOMIC_RMW(atomic_fetch_and_explicit, a & b)
MAGC_ATOMIC_RMW(atomic_fetch_or_explicit, a | b)
MAGC_ATOMIC_RMW(atomic_fetch_xor_explicit, a ^ b)
MAGC_ATOMIC_RMW(atomic_fetch_min_explicit, b < a ? b : a)
MAGC_ATOMIC_RMW(atomic_fetch_max_explicit, b > a ? b : a)

inline void atomic_thread_fence(mem_flags, memory_order, thread_scope = thread_scope_device) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

}  // namespace metal
