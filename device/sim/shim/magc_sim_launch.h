/* magc sim: the data shared by the Go side (cgo) and the compiled kernels. */
#ifndef MAGC_SIM_LAUNCH_H
#define MAGC_SIM_LAUNCH_H
#include <stdint.h>

/* Metal binds at most 31 buffers per kernel ([[buffer(0)]] .. [[buffer(30)]]). */
#define MAGC_SIM_MAX_ARGS 31

/* One dispatch. Every worker thread calls the kernel's entry point with the
   same launch; they share out the threadgroups through the next counter. */
typedef struct magc_launch {
  void* args[MAGC_SIM_MAX_ARGS];
  uint32_t groups[3];
  uint32_t threads[3];
  uint64_t total; /* groups[0]*groups[1]*groups[2] */
  uint64_t next;  /* next threadgroup to run (atomic) */
  int32_t failed; /* set once, by the first error (atomic) */
  char msg[512];
} magc_launch;

/* What the compiler knows about one kernel parameter, for argument checks. */
typedef struct magc_param_info {
  int64_t size;  /* bytes of the pointee (pointer/reference) or value */
  int64_t align;
  int32_t kind;  /* MAGC_PARAM_* */
  int32_t index; /* [[buffer(index)]], or -1 */
} magc_param_info;

enum { MAGC_PARAM_ATTR = 0, MAGC_PARAM_POINTER = 1, MAGC_PARAM_REF = 2, MAGC_PARAM_VALUE = 3 };

#endif
