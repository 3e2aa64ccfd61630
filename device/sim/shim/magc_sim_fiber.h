// magc sim: cooperative fibers, one per GPU thread of a threadgroup.
//
// All fibers of a threadgroup run on one OS thread, so threadgroup memory can
// be thread_local storage and no locks are needed inside a threadgroup. A
// switch saves only the callee-saved registers and the stack pointer
// (ucontext's swapcontext would add a sigprocmask syscall per switch).
#pragma once
#include <cstdint>
#include <cstdio>
#include <new>
#include <sys/mman.h>

#include "magc_sim_launch.h"

extern "C" void magc_sim_switch(void** save_sp, void* to_sp) __attribute__((visibility("hidden")));
extern "C" void magc_sim_trampoline() __attribute__((visibility("hidden")));

#if defined(__x86_64__)
// rdi = where to save the old stack pointer, rsi = the new one.
__asm__(
    ".pushsection .text\n"
    ".p2align 4\n"
    ".globl magc_sim_switch\n"
    ".hidden magc_sim_switch\n"
    ".type magc_sim_switch,%function\n"
    "magc_sim_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size magc_sim_switch, .-magc_sim_switch\n"
    // A new fiber's first switch returns here: r12 = argument, r13 = entry.
    ".globl magc_sim_trampoline\n"
    ".hidden magc_sim_trampoline\n"
    ".type magc_sim_trampoline,%function\n"
    "magc_sim_trampoline:\n"
    "  movq %r12, %rdi\n"
    "  callq *%r13\n"
    "  ud2\n"
    ".size magc_sim_trampoline, .-magc_sim_trampoline\n"
    ".popsection\n");
#elif defined(__aarch64__)
// x0 = where to save the old stack pointer, x1 = the new one.
__asm__(
    ".pushsection .text\n"
    ".p2align 4\n"
    ".globl magc_sim_switch\n"
    ".hidden magc_sim_switch\n"
    ".type magc_sim_switch,%function\n"
    "magc_sim_switch:\n"
    "  sub sp, sp, #160\n"
    "  stp x19, x20, [sp, #0]\n"
    "  stp x21, x22, [sp, #16]\n"
    "  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n"
    "  stp x27, x28, [sp, #64]\n"
    "  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n"
    "  stp d10, d11, [sp, #112]\n"
    "  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mov x9, sp\n"
    "  str x9, [x0]\n"
    "  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n"
    "  ldp x21, x22, [sp, #16]\n"
    "  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n"
    "  ldp x27, x28, [sp, #64]\n"
    "  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n"
    "  ldp d10, d11, [sp, #112]\n"
    "  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #160\n"
    "  ret\n"
    ".size magc_sim_switch, .-magc_sim_switch\n"
    // A new fiber's first switch returns here: x19 = argument, x20 = entry.
    ".globl magc_sim_trampoline\n"
    ".hidden magc_sim_trampoline\n"
    ".type magc_sim_trampoline,%function\n"
    "magc_sim_trampoline:\n"
    "  mov x0, x19\n"
    "  blr x20\n"
    "  brk #0\n"
    ".size magc_sim_trampoline, .-magc_sim_trampoline\n"
    ".popsection\n");
#else
#error "magc sim: fibers are implemented for x86-64 and arm64 only"
#endif

namespace magc_sim {

// Each fiber owns one slot of kSlot bytes, aligned to kSlot: a guard page at
// the bottom, then the stack, then the Fiber itself. Any code can find its
// Fiber from its stack pointer, with no thread_local lookup, and a switch
// touches few cache lines: the Fiber and the top of its stack are adjacent.
// They sit lower in the slot the higher the slot's address (cache
// colouring): at the same offset in every slot they would all fall in the
// same cache sets and evict each other at every switch.
constexpr uintptr_t kSlot = 64 << 10;  // at least 52 KiB of stack
constexpr uintptr_t kGuard = 4096;
constexpr uintptr_t kColours = 128;  // of 64 bytes: up to 8 KiB lower
constexpr int kMaxThreads = 1024;
constexpr int kSimdWidth = 32;
constexpr int kMaxSimdgroups = kMaxThreads / kSimdWidth;
constexpr unsigned long kMaxTgMemory = 32768;  // as on Apple M4

struct Worker;

struct Fiber {
  void* sp;
  Worker* w;
  uint32_t idx;   // thread_index_in_threadgroup
  uint32_t lane;  // thread_index_in_simdgroup
  uint32_t sg;    // simdgroup_index_in_threadgroup
  bool fiber;     // false for the worker's control context
};

// Per-simdgroup state for simd_* functions and simdgroup_barrier. Values are
// exchanged through slot[gen&1]: double buffering lets the first lanes to
// leave an operation enter the next one while late lanes still read.
//
// Simdgroup matrix calls are checked lazily (a fiber switch per call made
// the sim 1.65x slower): each lane folds its calls into a running trace,
// and the lanes' traces are compared where the lanes meet anyway (see
// matrix_settle).
struct SimdGroup {
  uint32_t live, arrived, arrived_mask, nwait, gen;
  uint32_t mask[2];  // lanes that took part, per buffer
  uint16_t wait[kSimdWidth];
  alignas(16) unsigned char slot[2][kSimdWidth][16];
  // Each lane's simdgroup matrix calls since the last comparison: how
  // many, a hash of their (function, line, arguments), and the first and
  // last call, to name them in an error.
  uint32_t mdirty;  // some lane made a call since the last comparison
  uint32_t mcount[kSimdWidth];
  uint64_t mhash[kSimdWidth];
  uint64_t mfirst_key[kSimdWidth];
  const char* mfirst_fn[kSimdWidth];
  const char* mlast_fn[kSimdWidth];
  uint32_t mfirst_line[kSimdWidth], mlast_line[kSimdWidth];
};

struct Worker {
  char* slots = nullptr;  // first slot, aligned to kSlot, of a region never unmapped
  uint32_t guarded = 0;  // slots whose guard page is set up
  void* os_sp = nullptr;
  Fiber* control;
  // The threadgroup being run.
  uint32_t nthreads, live, arrived, nwait;
  uint16_t wait[kMaxThreads];
  uint16_t rq[kMaxThreads];  // ready queue (ring)
  uint32_t rq_head, rq_len;
  SimdGroup sg[kMaxSimdgroups];
  alignas(16) unsigned char scratch[16];
  // The threadgroup memory of the threadgroup being run (kernel-scope
  // threadgroup variables live here, at offsets fixed at compile time).
  alignas(64) unsigned char tg_arena[kMaxTgMemory + 1024];
  // The dispatch being run.
  magc_launch* L;
  const char* kname;
  uint32_t group[3];
  void (*body)(Worker*);
  Worker* next_free;
};

inline char* slot_base(Worker* w, uint32_t i) { return w->slots + (uintptr_t)i * kSlot; }
inline Fiber* fiber_in(uintptr_t base) {
  return (Fiber*)(base + kSlot - 64 - ((base / kSlot) % kColours) * 64);
}
// Slot 0 is the worker's control context; thread i runs in slot i+1.
inline Fiber* fiber_at(Worker* w, uint32_t i) { return fiber_in((uintptr_t)slot_base(w, i + 1)); }
inline void* stack_top(Fiber* f) { return (char*)f - 16; }

__attribute__((always_inline)) inline Fiber* self() {
  uintptr_t sp;
#if defined(__x86_64__)
  __asm__("movq %%rsp, %0" : "=r"(sp));
#else
  __asm__("mov %0, sp" : "=r"(sp));
#endif
  return fiber_in(sp & ~(kSlot - 1));
}

// tg_base is the running threadgroup's memory.
__attribute__((always_inline)) inline unsigned char* tg_base() { return self()->w->tg_arena; }

// tg_align rounds a threadgroup memory offset up for T, for an alignas(A),
// and to 16 bytes, which vector loads like.
template <class T, unsigned long A> constexpr unsigned long tg_align(unsigned long off) {
  constexpr unsigned long a0 = alignof(T) > 16 ? alignof(T) : 16;
  constexpr unsigned long a = A > a0 ? A : a0;
  static_assert(a <= 64, "magc sim: threadgroup variables can be aligned to at most 64 bytes");
  return (off + a - 1) / a * a;
}

// init_stack prepares a stack so that switching to it calls entry(arg).
inline void* init_stack(void* top, void (*entry)(void*), void* arg) {
#if defined(__x86_64__)
  void** sp = (void**)top - 9;  // after the trampoline's ret, rsp is 16-aligned
  for (int i = 0; i < 9; i++) sp[i] = nullptr;
  sp[2] = (void*)entry;  // r13
  sp[3] = arg;           // r12
  sp[6] = (void*)&magc_sim_trampoline;
#else
  void** sp = (void**)((char*)top - 160);
  for (int i = 0; i < 20; i++) sp[i] = nullptr;
  sp[0] = arg;           // x19
  sp[1] = (void*)entry;  // x20
  sp[11] = (void*)&magc_sim_trampoline;  // x30
#endif
  return sp;
}

// fail records the dispatch's first error; later ones are dropped.
void fail(Worker* w, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

inline bool ensure_slots(Worker* w, uint32_t n) {
  if (!w->slots) {
    size_t len = (size_t)(kMaxThreads + 2) * kSlot;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    w->slots = (char*)(((uintptr_t)p + kSlot - 1) & ~(kSlot - 1));
  }
  for (; w->guarded < n; w->guarded++) {
    if (mprotect(slot_base(w, w->guarded), kGuard, PROT_NONE) != 0) return false;
  }
  return true;
}

// The worker pool: a dispatch borrows one worker per OS thread that runs it.
// A spinlock guards it (held for a few instructions, twice per dispatch and
// worker); <mutex> would add a third to the time to compile a kernel.
inline int& pool_lock() {
  static int l = 0;
  return l;
}
inline Worker*& pool_head() {
  static Worker* h = nullptr;
  return h;
}
inline void pool_acquire() {
  while (__atomic_exchange_n(&pool_lock(), 1, __ATOMIC_ACQUIRE)) {
  }
}
inline void pool_release() { __atomic_store_n(&pool_lock(), 0, __ATOMIC_RELEASE); }
inline Worker* acquire_worker() {
  pool_acquire();
  Worker* w = pool_head();
  if (w) pool_head() = w->next_free;
  pool_release();
  if (w) return w;
  w = new (std::nothrow) Worker();
  if (w && !ensure_slots(w, 1)) {
    delete w;
    return nullptr;
  }
  return w;
}
inline void release_worker(Worker* w) {
  pool_acquire();
  w->next_free = pool_head();
  pool_head() = w;
  pool_release();
}

// ---- scheduling inside one threadgroup ----

inline void rq_push(Worker* w, uint32_t i) {
  w->rq[(w->rq_head + w->rq_len++) % kMaxThreads] = (uint16_t)i;
}

// rq_pop returns the next ready fiber, and prefetches the one after it: its
// stack will be needed at the next switch, and fetching it now hides the
// cache misses behind this fiber's work.
inline Fiber* rq_pop(Worker* w) {
  Fiber* f = fiber_at(w, w->rq[w->rq_head]);
  w->rq_head = (w->rq_head + 1) % kMaxThreads;
  w->rq_len--;
  if (w->rq_len) {
    // The Fiber and the top of its stack, without reading it (that load
    // would wait for the miss).
    char* n = (char*)fiber_at(w, w->rq[w->rq_head]);
    for (int i = 0; i < 8; i++) __builtin_prefetch(n - 64 * i, 1);
  }
  return f;
}

void deadlock(Worker* w);

// block switches away from f until another fiber makes it ready again.
inline void block(Fiber* f) {
  Worker* w = f->w;
  if (w->rq_len == 0) {
    deadlock(w);
    magc_sim_switch(&f->sp, w->control->sp);  // never resumed
    return;
  }
  Fiber* n = rq_pop(w);
  magc_sim_switch(&f->sp, n->sp);
}

// matrix_report names the first disagreement between the lanes' matrix
// traces (the rare path, out of line).
void matrix_report(Worker* w, uint32_t sg);

inline void matrix_reset(SimdGroup& g) {
  g.mdirty = 0;
  for (int j = 0; j < kSimdWidth; j++) g.mcount[j] = 0, g.mhash[j] = 0;
}

// matrix_settle compares the matrix traces of a simdgroup's 32 lanes at a
// point where all its live lanes meet (simd-group function or barrier
// completion, the threadgroup's end): no live lane is past that point, so
// all made the same calls since the last comparison. Lanes that returned
// keep the trace they left with, so calls made without them show.
inline void matrix_settle(Worker* w, uint32_t sg) {
  SimdGroup& g = w->sg[sg];
  if (__builtin_expect(!g.mdirty, 1)) return;
  uint32_t diff = 0;
  for (int j = 1; j < kSimdWidth; j++) diff |= (g.mcount[j] != g.mcount[0]) | (g.mhash[j] != g.mhash[0]);
  if (__builtin_expect(diff, 0)) matrix_report(w, sg);
  matrix_reset(g);
}

inline void complete_tg(Worker* w) {
  for (uint32_t s = 0, n = (w->nthreads + kSimdWidth - 1) / kSimdWidth; s < n; s++) matrix_settle(w, s);
  w->arrived = 0;
  for (uint32_t i = 0; i < w->nwait; i++) rq_push(w, w->wait[i]);
  w->nwait = 0;
}

inline void complete_simd(Worker* w, SimdGroup& g) {
  matrix_settle(w, (uint32_t)(&g - w->sg));
  g.mask[g.gen & 1] = g.arrived_mask;
  g.arrived = 0;
  g.arrived_mask = 0;
  g.gen++;
  for (uint32_t i = 0; i < g.nwait; i++) rq_push(w, g.wait[i]);
  g.nwait = 0;
}

void misuse(Worker* w);

void barrier_after_return(Worker* w);

// tg_barrier waits until every live thread of the threadgroup arrives. A
// barrier that some threads can no longer reach, as they returned, is
// undefined on a GPU (it may hang or pass early): an error here.
inline void tg_barrier() {
  Fiber* f = self();
  Worker* w = f->w;
  if (__builtin_expect(!f->fiber, 0)) return misuse(w);
  if (__builtin_expect(w->live != w->nthreads, 0)) barrier_after_return(w);
  if (++w->arrived == w->live) return complete_tg(w);
  w->wait[w->nwait++] = (uint16_t)f->idx;
  block(f);
}

// simd_arrive waits until every live lane of the caller's simdgroup arrives.
inline void simd_arrive(Fiber* f, SimdGroup& g) {
  g.arrived++;
  g.arrived_mask |= 1u << f->lane;
  if (g.arrived == g.live) return complete_simd(f->w, g);
  g.wait[g.nwait++] = (uint16_t)f->idx;
  block(f);
}

// fiber_exit retires a finished thread; it may complete a barrier that was
// waiting only for this thread.
[[noreturn]] inline void fiber_exit(Fiber* f) {
  Worker* w = f->w;
  SimdGroup& g = w->sg[f->sg];
  w->live--;
  g.live--;
  if (w->arrived) barrier_after_return(w);  // others wait at a barrier it will never reach
  if (g.live && g.arrived == g.live) complete_simd(w, g);
  if (w->live && w->arrived == w->live) complete_tg(w);
  void* dummy;
  if (w->rq_len) {
    magc_sim_switch(&dummy, rq_pop(w)->sp);
  } else {
    if (w->live) deadlock(w);
    magc_sim_switch(&dummy, w->control->sp);
  }
  __builtin_unreachable();
}

}  // namespace magc_sim
