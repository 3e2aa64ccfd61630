// Runs the kernels.cu prelude's warp helpers on the host: 32 threads play
// one warp's lanes, and each __shfl_*_sync is an exchange between two
// barriers. Checks the collectives and the 8×8 tile ops against plain
// loops; prints what is wrong and exits 1, or exits 0.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#define __device__
#define __forceinline__ inline

struct dim { unsigned x, y, z; };
thread_local dim threadIdx;
const dim blockDim = {32, 1, 1};

static std::barrier<> warp(32);

// exchange publishes v, then reads lane src's value (or keeps v if src is
// outside the warp).
template <class T> T exchange(T v, int src) {
    static T slot[32];
    slot[threadIdx.x] = v;
    warp.arrive_and_wait();
    T r = src >= 0 && src < 32 ? slot[src] : v;
    warp.arrive_and_wait();
    return r;
}
template <class T> T __shfl_sync(unsigned, T v, int l) { return exchange(v, l & 31); }
template <class T> T __shfl_up_sync(unsigned, T v, unsigned d) { return exchange(v, int(threadIdx.x) - int(d)); }
template <class T> T __shfl_down_sync(unsigned, T v, unsigned d) { return exchange(v, int(threadIdx.x + d)); }
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { return exchange(v, int(threadIdx.x) ^ m); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }

#include "prelude.cuh"

static int failures;
#define CHECK(cond, ...)                      \
    if (!(cond)) {                            \
        std::printf(__VA_ARGS__);             \
        std::printf("\n");                    \
        __atomic_add_fetch(&failures, 1, 0); \
    }

static float A[8 * 9], B[8 * 9], C[8 * 9], D[8 * 9], Dt[8 * 9];

static void lane(int l) {
    threadIdx = {unsigned(l), 0, 0};
    const int v = (l * 7) % 32 - 11; // distinct values
    int sum = 0, mx = -1000, mn = 1000, pre = 0;
    for (int i = 0; i < 32; i++) {
        const int w = (i * 7) % 32 - 11;
        sum += w, mx = std::max(mx, w), mn = std::min(mn, w);
        if (i < l) pre += w;
    }
    // Every lane runs every collective (a lane skipping one would hang the others).
    const int s = magc_simd_sum(v), x = magc_simd_max(v), n = magc_simd_min(v), p = magc_simd_prefix_sum(v);
    const float fs = magc_simd_sum(float(v)), fx = magc_simd_max(float(v)), fn = magc_simd_min(float(v));
    const int down = magc_simd_shuffle_down(v, 5), xr = magc_simd_shuffle_xor(v, 6);
    const float bc = magc_simd_broadcast(float(v), 9);
    CHECK(s == sum && fs == float(sum), "lane %d: sum %d %g, want %d", l, s, fs, sum);
    CHECK(x == mx && n == mn && fx == float(mx) && fn == float(mn), "lane %d: max/min", l);
    CHECK(p == pre, "lane %d: prefix sum %d, want %d", l, p, pre);
    CHECK(down == (l + 5 < 32 ? ((l + 5) * 7) % 32 - 11 : v), "lane %d: shuffle down %d", l, down);
    CHECK(xr == ((l ^ 6) * 7) % 32 - 11, "lane %d: shuffle xor %d", l, xr);
    CHECK(bc == float((9 * 7) % 32 - 11), "lane %d: broadcast %g", l, bc);
    CHECK(magc_linear() == l && magc_lane() == l && magc_simdgroup() == 0, "lane %d: position", l);

    // D = A·B + C with stride 9, and again with B loaded transposed from Bᵀ.
    magc_tile a = {}, b = {}, c = {}, bt = {};
    magc_tile_load(a, A, 9);
    magc_tile_load(b, B, 9);
    magc_tile_load(c, C, 9);
    float Bt[8 * 9];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) Bt[j * 9 + i] = B[i * 9 + j];
    magc_tile_load_t(bt, Bt, 9);
    magc_tile_mma(c, a, b, c); // d aliasing c, as the kernels do
    magc_tile_store(c, D, 9);
    magc_tile_mma(bt, a, bt, {});
    magc_tile_store(bt, Dt, 9);
}

int main() {
    for (int i = 0; i < 8 * 9; i++) {
        A[i] = std::sin(float(i)) * 3, B[i] = std::cos(float(i)) * 2, C[i] = float(i % 5) / 4;
    }
    std::vector<std::thread> lanes;
    for (int l = 0; l < 32; l++) lanes.emplace_back(lane, l);
    for (auto& t : lanes) t.join();
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            float d = C[i * 9 + j], dt = 0;
            for (int k = 0; k < 8; k++) {
                d = std::fma(A[i * 9 + k], B[k * 9 + j], d);
                dt = std::fma(A[i * 9 + k], B[k * 9 + j], dt);
            }
            CHECK(D[i * 9 + j] == d, "mma (%d,%d): %g, want %g", i, j, D[i * 9 + j], d);
            CHECK(Dt[i * 9 + j] == dt, "mma transposed (%d,%d): %g, want %g", i, j, Dt[i * 9 + j], dt);
        }
    return failures ? 1 : 0;
}
