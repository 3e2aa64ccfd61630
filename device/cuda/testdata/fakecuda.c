// A stand-in for libcuda.so.1 so the device's driver plumbing is tested
// without a GPU: device memory is host memory, kernels are C functions that
// compute what the test module's CUDA kernels compute, and events read a
// clock that each launch advances by 0.01 ms per block.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef uint64_t CUdeviceptr;
typedef void (*kernel_fn)(void **params, const unsigned g[3], const unsigned b[3]);

static int ctx_token;                 // the one context
static __thread void *current;        // contexts are per thread, as in CUDA
static int ctx_refs, live_allocs, live_modules, live_events;
static CUresult sticky;               // a fault poisons the context until fake_reset
static double clock_ms;

#define NEED_CTX if (current != &ctx_token) return 201 /* CUDA_ERROR_INVALID_CONTEXT */
#define N 1000

#define ARG(i) (*(float **)params[i])

static void vadd(void **params, const unsigned g[3], const unsigned b[3]) {
    float *o = ARG(0), *x = ARG(1), *y = ARG(2);
    for (unsigned i = 0; i < g[0] * b[0]; i++)
        if (i < N) o[i] = x[i] + y[i];
}

static void block_sum(void **params, const unsigned g[3], const unsigned b[3]) {
    float *o = ARG(0), *x = ARG(1);
    for (unsigned blk = 0; blk < g[0]; blk++) {
        float s = 0;
        for (unsigned t = 0; t < 256; t++)
            if (blk * 256 + t < N) s += x[blk * 256 + t];
        o[blk] = s;
    }
}

static void warp_sum(void **params, const unsigned g[3], const unsigned b[3]) {
    float *o = ARG(0), *x = ARG(1);
    for (unsigned w = 0; w < g[0] * b[0] / 32; w++) {
        float s = 0;
        for (unsigned i = w * 32; i < w * 32 + 32; i++)
            if (i < N) s += x[i];
        o[w] = s;
    }
}

static void grid3(void **params, const unsigned g[3], const unsigned b[3]) {
    float *o = ARG(0);
    for (unsigned bz = 0; bz < g[2]; bz++)
    for (unsigned by = 0; by < g[1]; by++)
    for (unsigned bx = 0; bx < g[0]; bx++)
    for (unsigned tz = 0; tz < b[2]; tz++)
    for (unsigned ty = 0; ty < b[1]; ty++)
    for (unsigned tx = 0; tx < b[0]; tx++) {
        unsigned t = (tz * b[1] + ty) * b[0] + tx, blk = (bz * g[1] + by) * g[0] + bx;
        o[blk * b[0] * b[1] * b[2] + t] = 1000.0f * (bx + 8 * by + 64 * bz) + tx + 4 * ty + 16 * tz;
    }
}

static void fault(void **params, const unsigned g[3], const unsigned b[3]) { sticky = 700; }

typedef struct { const char *name; kernel_fn fn; int max_threads; } kernel_t; // a CUfunction

static kernel_t kernels[] = {
    // max_threads as __launch_bounds__ gives them in testSrc
    {"vadd", vadd, 256}, {"block_sum", block_sum, 256}, {"warp_sum", warp_sum, 128}, {"grid3", grid3, 64}, {"fault", fault, 1024},
};

static struct { CUresult r; const char *name, *msg; } errs[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
};

CUresult cuGetErrorName(CUresult r, const char **s) {
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
        if (errs[i].r == r) { *s = errs[i].name; return 0; }
    return 1;
}

CUresult cuGetErrorString(CUresult r, const char **s) {
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
        if (errs[i].r == r) { *s = errs[i].msg; return 0; }
    return 1;
}

CUresult cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return ordinal == 0 ? 0 : 101; }
CUresult cuDeviceGetName(char *name, int n, int d) { snprintf(name, n, "Fake GPU"); return 0; }

CUresult cuDeviceGetAttribute(int *v, int attr, int d) {
    switch (attr) {
    case 75: *v = 9; return 0;   // compute capability 9.0
    case 76: *v = 0; return 0;
    case 16: *v = 132; return 0; // SMs
    }
    return 1;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int d) { *bytes = (size_t)80 << 30; return 0; }
CUresult cuDevicePrimaryCtxRetain(void **ctx, int d) { ctx_refs++; *ctx = &ctx_token; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int d) { return ctx_refs-- > 0 ? 0 : 201; }
CUresult cuCtxSetCurrent(void *ctx) { current = ctx; return 0; }
CUresult cuCtxSynchronize(void) { NEED_CTX; return sticky; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    NEED_CTX;
    if (n == 0) return 1;
    void *m = malloc(n);
    if (!m) return 2;
    memset(m, 0xab, n); // not zero: Alloc must clear it
    live_allocs++;
    *p = (CUdeviceptr)(uintptr_t)m;
    return 0;
}

CUresult cuMemFree_v2(CUdeviceptr p) { NEED_CTX; free((void *)(uintptr_t)p); live_allocs--; return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) { NEED_CTX; memset((void *)(uintptr_t)p, v, n); return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { NEED_CTX; memcpy((void *)(uintptr_t)dst, src, n); return sticky; }
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { NEED_CTX; memcpy(dst, (void *)(uintptr_t)src, n); return sticky; }

CUresult cuModuleLoadData(void **m, const void *image) {
    NEED_CTX;
    if (memcmp(image, "FAKECUBIN", 9) != 0) return 1; // what the fake nvcc writes
    *m = malloc(1);
    live_modules++;
    return 0;
}

CUresult cuModuleUnload(void *m) { NEED_CTX; free(m); live_modules--; return 0; }

CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
    NEED_CTX;
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (strcmp(kernels[i].name, name) == 0) { *f = &kernels[i]; return 0; }
    return 500;
}

CUresult cuFuncGetAttribute(int *v, int attr, void *f) {
    if (attr != 0) return 1;
    *v = ((kernel_t *)f)->max_threads;
    return 0;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **params, void **extra) {
    NEED_CTX;
    if (sticky) return sticky;
    if (gx == 0 || gy == 0 || gz == 0 || bx * by * bz > (unsigned)((kernel_t *)f)->max_threads || shared != 0 || stream || extra) return 1;
    unsigned g[3] = {gx, gy, gz}, b[3] = {bx, by, bz};
    ((kernel_t *)f)->fn(params, g, b);
    clock_ms += 0.01 * gx * gy * gz;
    return 0;
}

CUresult cuEventCreate(void **e, unsigned flags) { NEED_CTX; *e = calloc(1, sizeof(double)); live_events++; return 0; }
CUresult cuEventRecord(void *e, void *stream) { NEED_CTX; *(double *)e = clock_ms; return 0; }
CUresult cuEventElapsedTime(float *ms, void *start, void *end) { *ms = (float)(*(double *)end - *(double *)start); return 0; }
CUresult cuEventDestroy_v2(void *e) { NEED_CTX; free(e); live_events--; return 0; }

// Test hooks.
void fake_state(int *allocs, int *modules, int *events, int *refs) {
    *allocs = live_allocs, *modules = live_modules, *events = live_events, *refs = ctx_refs;
}
void fake_reset(void) { sticky = 0; }
