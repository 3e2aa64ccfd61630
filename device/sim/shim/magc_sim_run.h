// magc sim: running a dispatch. Each worker OS thread takes threadgroups from
// the launch's shared counter and runs all threads of one threadgroup at a
// time, as a plain loop or, when the kernel synchronizes, as fibers.
#pragma once
#include <cstdarg>
#include <cstdio>
#include <type_traits>

namespace magc_sim {

struct Pos {
  uint3 tpig;   // thread_position_in_grid
  uint3 tpitg;  // thread_position_in_threadgroup
  uint3 tgpig;  // threadgroup_position_in_grid
  uint3 tptg;   // threads_per_threadgroup
  uint3 tgpg;   // threadgroups_per_grid
  uint3 tpg;    // threads_per_grid
  uint tiitg;   // thread_index_in_threadgroup
  uint lane;    // thread_index_in_simdgroup
  uint sgitg;   // simdgroup_index_in_threadgroup
  uint sgptg;   // simdgroups_per_threadgroup
};

void fail(Worker* w, const char* fmt, ...) {
  magc_launch* L = w->L;
  int32_t expected = 0;
  if (__atomic_compare_exchange_n(&L->failed, &expected, 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->msg, sizeof L->msg, fmt, ap);
    va_end(ap);
  }
}

void deadlock(Worker* w) {
  uint32_t simd = 0;
  uint32_t nsg = (w->nthreads + kSimdWidth - 1) / kSimdWidth;
  for (uint32_t s = 0; s < nsg; s++) simd += w->sg[s].nwait;
  fail(w,
       "magc sim: kernel %s deadlocked in threadgroup (%u,%u,%u): %u threads wait at threadgroup_barrier and "
       "%u at simd-group functions, and no other thread can run; every thread of a threadgroup must reach "
       "the same barriers, and every lane of a SIMD group the same simd_* calls",
       w->kname, w->group[0], w->group[1], w->group[2], w->nwait, simd);
}

void barrier_after_return(Worker* w) {
  fail(w,
       "magc sim: kernel %s, threadgroup (%u,%u,%u): a threadgroup_barrier is reached after %u of its %u threads "
       "returned; every thread of a threadgroup must reach each barrier (on a GPU this may hang or pass early)",
       w->kname, w->group[0], w->group[1], w->group[2], w->nthreads - w->live, w->nthreads);
}

void matrix_misuse(Worker* w, uint32_t sg, const char* fn, unsigned line, const char* detail) {
  fail(w,
       "magc sim: kernel %s, threadgroup (%u,%u,%u), simdgroup %u: %s at kernels.metal:%u: %s; simdgroup matrix "
       "functions need all 32 lanes of the simdgroup, converged, with the same arguments",
       w->kname, w->group[0], w->group[1], w->group[2], sg, fn, line, detail);
}

void matrix_report(Worker* w, uint32_t sg) {
  const SimdGroup& g = w->sg[sg];
  uint32_t r = kSimdWidth, took = 0;  // r: the first lane that made a call
  for (uint32_t j = 0; j < (uint32_t)kSimdWidth; j++)
    if (g.mcount[j]) took++, r = r == (uint32_t)kSimdWidth ? j : r;
  if (r == (uint32_t)kSimdWidth) return;  // unreachable: traces differ only after calls
  const char* fn = g.mfirst_fn[r];
  const unsigned line = g.mfirst_line[r];
  char detail[256];
  for (uint32_t j = 0; j < (uint32_t)kSimdWidth; j++) {
    if (g.mcount[j] && (g.mfirst_fn[j] != fn || g.mfirst_line[j] != line || g.mfirst_key[j] != g.mfirst_key[r])) {
      snprintf(detail, sizeof detail, "lane %u made another call or passed other arguments (lanes diverged)", j);
      return matrix_misuse(w, sg, fn, line, detail);
    }
  }
  if (took < (uint32_t)kSimdWidth) {
    snprintf(detail, sizeof detail, "only %u of 32 lanes took part", took);
    return matrix_misuse(w, sg, fn, line, detail);
  }
  for (uint32_t j = 0; j < (uint32_t)kSimdWidth; j++) {
    if (g.mcount[j] != g.mcount[r] || g.mhash[j] != g.mhash[r]) {
      snprintf(detail, sizeof detail,
               "from here to %s at kernels.metal:%u lane %u made %u simdgroup matrix calls and lane %u "
               "made %u, not the same calls with the same arguments (lanes diverged)",
               g.mlast_fn[r], g.mlast_line[r], r, g.mcount[r], j, g.mcount[j]);
      return matrix_misuse(w, sg, fn, line, detail);
    }
  }
}

void misuse(Worker* w) {
  fail(w,
       "magc sim: kernel %s called a barrier or simd-group function that magc's source scan did not find, "
       "so it ran without fibers; please report this",
       w->kname);
}

inline bool next_group(Worker* w, uint64_t& g) {
  magc_launch* L = w->L;
  if (__atomic_load_n(&L->failed, __ATOMIC_RELAXED)) return false;
  g = __atomic_fetch_add(&L->next, 1, __ATOMIC_RELAXED);
  if (g >= L->total) return false;
  w->group[0] = (uint32_t)(g % L->groups[0]);
  w->group[1] = (uint32_t)(g / L->groups[0] % L->groups[1]);
  w->group[2] = (uint32_t)(g / ((uint64_t)L->groups[0] * L->groups[1]));
  return true;
}

inline void group_pos(Pos& p, const Worker* w) {
  const magc_launch* L = w->L;
  p.tptg = uint3(L->threads[0], L->threads[1], L->threads[2]);
  p.tgpg = uint3(L->groups[0], L->groups[1], L->groups[2]);
  p.tpg = uint3(L->threads[0] * L->groups[0], L->threads[1] * L->groups[1], L->threads[2] * L->groups[2]);
  p.tgpig = uint3(w->group[0], w->group[1], w->group[2]);
  p.sgptg = (L->threads[0] * L->threads[1] * L->threads[2] + kSimdWidth - 1) / kSimdWidth;
}

inline void thread_pos(Pos& p, uint32_t x, uint32_t y, uint32_t z, uint32_t i) {
  p.tpitg = uint3(x, y, z);
  p.tpig = uint3(p.tgpig.x * p.tptg.x + x, p.tgpig.y * p.tptg.y + y, p.tgpig.z * p.tptg.z + z);
  p.tiitg = i;
  p.lane = i % kSimdWidth;
  p.sgitg = i / kSimdWidth;
}

// Kernels without barriers or simd calls: a plain loop over the threads, with
// the kernel inlined into it.
template <void (*F)(const Pos&, void* const*)> void plain_groups(Worker* w) {
  void* const* args = w->L->args;
  const uint32_t tx = w->L->threads[0], ty = w->L->threads[1], tz = w->L->threads[2];
  uint64_t g;
  while (next_group(w, g)) {
    Pos p;
    group_pos(p, w);
    uint32_t i = 0;
    for (uint32_t z = 0; z < tz; z++)
      for (uint32_t y = 0; y < ty; y++)
        for (uint32_t x = 0; x < tx; x++, i++) {
          thread_pos(p, x, y, z, i);
          F(p, args);
        }
  }
}

template <void (*F)(const Pos&, void* const*)> void fiber_main(void* arg) {
  Fiber* f = (Fiber*)arg;
  Worker* w = f->w;
  Pos p;
  group_pos(p, w);
  uint32_t i = f->idx, tx = w->L->threads[0], ty = w->L->threads[1];
  thread_pos(p, i % tx, i / tx % ty, i / (tx * ty), i);
  F(p, w->L->args);
  fiber_exit(f);
}

// Kernels that synchronize: one fiber per thread. The control context starts
// the first fiber; the fibers then hand over to each other at barriers and
// the last one to finish switches back.
template <void (*F)(const Pos&, void* const*)> void fiber_groups(Worker* w) {
  const uint32_t T = w->L->threads[0] * w->L->threads[1] * w->L->threads[2];
  if (!ensure_slots(w, T + 1)) {
    fail(w, "magc sim: kernel %s: cannot allocate fiber stacks for %u threads", w->kname, T);
    return;
  }
  w->nthreads = T;
  const uint32_t nsg = (T + kSimdWidth - 1) / kSimdWidth;
  uint64_t g;
  while (next_group(w, g)) {
    w->rq_head = w->rq_len = 0;
    for (uint32_t i = 0; i < T; i++) {
      Fiber* f = fiber_at(w, i);
      f->w = w;
      f->idx = i;
      f->lane = i % kSimdWidth;
      f->sg = i / kSimdWidth;
      f->fiber = true;
      f->sp = init_stack(stack_top(f), &fiber_main<F>, f);
      rq_push(w, i);
    }
    w->live = T;
    w->arrived = w->nwait = 0;
    for (uint32_t s = 0; s < nsg; s++) {
      SimdGroup& sg = w->sg[s];
      sg.live = T - s * kSimdWidth < (uint32_t)kSimdWidth ? T - s * kSimdWidth : kSimdWidth;
      sg.arrived = sg.arrived_mask = sg.nwait = sg.gen = 0;
      matrix_reset(sg);
    }
    magc_sim_switch(&w->control->sp, rq_pop(w)->sp);
    // The threadgroup has ended (or deadlocked, already an error): the
    // lanes' last matrix calls are checked here.
    for (uint32_t s = 0; s < nsg; s++) matrix_settle(w, s);
  }
}

inline void control_main(void* arg) {
  Worker* w = (Worker*)arg;
  w->body(w);
  void* dummy;
  magc_sim_switch(&dummy, w->os_sp);
}

// run is the body of each kernel's exported entry point.
template <void (*F)(const Pos&, void* const*), bool Fibers> int run(magc_launch* L, const char* name) {
  Worker* w = acquire_worker();
  if (!w) {
    int32_t expected = 0;
    if (__atomic_compare_exchange_n(&L->failed, &expected, 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      snprintf(L->msg, sizeof L->msg, "magc sim: kernel %s: out of memory for fiber stacks", name);
    return -1;
  }
  w->L = L;
  w->kname = name;
  w->body = Fibers ? &fiber_groups<F> : &plain_groups<F>;
  Fiber* c = w->control = fiber_in((uintptr_t)slot_base(w, 0));
  c->w = w;
  c->fiber = false;
  c->sp = init_stack(stack_top(c), &control_main, w);
  magc_sim_switch(&w->os_sp, c->sp);
  w->L = nullptr;
  release_worker(w);
  return __atomic_load_n(&L->failed, __ATOMIC_SEQ_CST) ? -1 : 0;
}

// ---- binding kernel parameters ----

template <class F> struct fn_traits;
template <size_t I, class A0, class... A> struct type_at { using type = typename type_at<I - 1, A...>::type; };
template <class A0, class... A> struct type_at<0, A0, A...> { using type = A0; };
template <class R, class... A> struct fn_traits<R(A...)> {
  static constexpr size_t arity = sizeof...(A);
  template <size_t I> using arg = typename type_at<I, A...>::type;
};
template <class F, size_t I> using param_t = typename fn_traits<F>::template arg<I>;

template <class P> inline P buffer_arg(void* p) {
  if constexpr (std::is_pointer_v<P>) return (P)p;
  else if constexpr (std::is_reference_v<P>) return *(std::remove_reference_t<P>*)p;
  else return *(const P*)p;
}

// pos_arg converts a position to the parameter's type: uint takes .x, uint2
// takes .xy, uint3 all three.
template <class P> inline std::decay_t<P> pos_arg(const uint3& v) {
  using D = std::decay_t<P>;
  if constexpr (vinfo<D>::is_vec) {
    static_assert(D::size <= 3, "magc sim: a thread position attribute takes a scalar, 2- or 3-vector");
    if constexpr (D::size == 2) return D(v.x, v.y);
    else return D(v.x, v.y, v.z);
  } else {
    return D(v.x);
  }
}
template <class P> inline std::decay_t<P> pos_arg(uint v) {
  using D = std::decay_t<P>;
  static_assert(!vinfo<D>::is_vec, "magc sim: this attribute takes a scalar");
  return D(v);
}

template <class P> constexpr magc_param_info param_info(int index) {
  if constexpr (std::is_pointer_v<P>) {
    using E = std::remove_cv_t<std::remove_pointer_t<P>>;
    if constexpr (std::is_void_v<E>) return magc_param_info{1, 1, MAGC_PARAM_POINTER, index};
    else return magc_param_info{(int64_t)sizeof(E), (int64_t)alignof(E), MAGC_PARAM_POINTER, index};
  } else if constexpr (std::is_reference_v<P>) {
    using E = std::remove_cv_t<std::remove_reference_t<P>>;
    return magc_param_info{(int64_t)sizeof(E), (int64_t)alignof(E), MAGC_PARAM_REF, index};
  } else {
    return magc_param_info{(int64_t)sizeof(P), (int64_t)alignof(P), MAGC_PARAM_VALUE, index};
  }
}

// tg_limit refuses kernels over Apple M4's 32 KiB of threadgroup memory.
template <unsigned long N> inline void tg_limit() {
  static_assert(N <= kMaxTgMemory, "magc sim: threadgroup memory over the 32 KiB (32768 bytes) limit");
}

}  // namespace magc_sim
