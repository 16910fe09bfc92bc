// csrc/cpu/matmul.cpp — batched matrix multiply on the CPU, float32 and float64.
//
// What:   c[b] = a[b] @ b[b]   with a (B, M, K), b (B, K, N), c (B, M, N), one dtype.
//         c[b, i, j] = sum_p a[b, i, p] * b[b, p, j].  c is C-contiguous; a and b may have
//         any strides (in elements): a transposed view (x.T) is read in place, not copied,
//         because packing (below) copies every operand into its own layout anyway.
// FLOPs:  2 * B * M * N * K            (one multiply and one add per term)
// Bytes:  at least sizeof(T) * B * (M*K + K*N + M*N)
// Threads: OpenMP; set with _C.set_num_threads(n).  The threads first pack B together,
//         then take (batch, row block, column block) tasks of C one at a time.
// Reference: `matmul` in minidl/backend/numpy_ref.py (numpy.matmul)
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_matmul.py
// Bench:  make bench        (= .venv/bin/python -m benchmarks.bench_matmul)
//
// How — the GotoBLAS / BLIS recipe in plain C++ (plus GCC/Clang vector types):
//
//   pack all of B (KC-deep blocks of NR-wide slivers)     shared by all threads
//   for each task (MC rows x NC columns of C), on any thread:
//     for pc (KC deep):     pack the task's MC x KC block of A    -> L2, per thread
//       for jr (NR columns):  B sliver KC x NR                    -> L1
//         for ir (MR rows):     micro-kernel: MR x NR tile of C in registers
//
//   1. Pack B: each block of KC rows is copied into "slivers" of NR columns, each
//      stored row after row: sliver[p][0..NR).  The micro-kernel reads B with unit stride.
//   2. Pack A: an MC x KC block is copied into micro-panels of MR rows stored column
//      after column: panel[p][0..MR).
//   3. Micro-kernel: an MR x NR tile of C lives in registers while p runs over the
//      KC block; per step, MR broadcasts of A times one NR-wide row of B.
//   Zero padding in the packed buffers lets the micro-kernel always compute a full
//   MR x NR tile; only the write-back knows about the ragged edges of C.
//   When N <= NC (4096) every element of A and of B is packed exactly once.
//
// Why the tile is 14 x 32 on AVX-512 but 6 x 16 on AVX2: an FMA has a latency of
// 4 cycles and a core starts 2 per cycle, so at least 8 independent accumulators must
// be in flight or the FMA units idle.  AVX-512 has 32 vector registers: 14 x 2 = 28
// accumulators, 2 for the row of B, 1 for a broadcast A value.  (A 6 x 16 tile keeps
// only 6 zmm accumulators: ~60% of numpy.)  AVX2 has 16 registers: 6 x 2 = 12 ymm
// accumulators, the classic 6 x 16.
//
// Why the scratch buffers are kept from call to call: fresh memory costs a page fault
// per 4 KiB on first touch — ~10% at n = 512.
//
// Portability: the build uses no -march flag (a wheel must run on any x86-64), so the
// hot functions are compiled for several targets — AVX-512 (GCC's `target`), AVX2+FMA
// and plain x86-64 (`target_clones`) — and the best one the CPU has is picked at run
// time.  MINIDL_NATIVE=1 pip install -e . builds everything with -march=native instead.
//
// Measured (make bench; Xeon with AVX-512, 2 cores of a shared VM, float32 n x n,
// GFLOP/s, median of 3 runs in separate processes; the VM is noisy: +-15%):
//                  1 thread                       2 threads
//      n   before  now  numpy  torch      before  now  numpy  torch
//    128      42    45    83     96          46    55    92    110
//    256      65    74    97    129         104   125   167    189
//    512      61    93   100    127          93   167   190    200
//   1024      64    84    99    127         125   178   198    219
//   2048      65    92   107    125         134   208   186    244
// ("before": a 6 x 16 tile on AVX-512, new[] buffers per call.)  The micro-kernel
// alone runs at ~145 GFLOP/s (~the peak: 2 FMAs x 16 floats x 2 flops x ~2.3 GHz);
// at n <= 256 packing (~15%) and the Python wrapper (cpu.matmul) are the gap.
#include "kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(MINIDL_NO_MULTIVERSION)
#define MINIDL_X86_DISPATCH 1
#define MINIDL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#define MINIDL_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define MINIDL_X86_DISPATCH 0
#define MINIDL_MULTIVERSION
#endif

// GCC and Clang only (vector types, always_inline); both are what pip uses on Linux/macOS.
#define MINIDL_INLINE inline __attribute__((always_inline))
#define MINIDL_RESTRICT __restrict__

namespace minidl {
namespace {

using index_t = std::int64_t;

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// A row of the register tile is NV `Vec<T>`s: GCC/Clang vectors of 64 bytes
// (16 floats or 8 doubles).  `acc += a_ip * b_vec` is one AVX-512 FMA, two AVX2 FMAs
// or four SSE multiply+adds, whichever the target has.
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };
template <typename T>
using Vec = typename VecOf<T>::type;

// The blocking.  MR x NR is the register tile; KC * NR * sizeof(T) (a B sliver)
// should fit in L1 (48 KiB here) next to the A panel streaming through it,
// MC * KC * sizeof(T) (an A block) in L2 (2 MiB), KC * NC * sizeof(T) in L3.
template <typename T, int MR_, int NV_, index_t KC_, index_t MC_>
struct Blocking {
    static constexpr int MR = MR_;                           // rows of the register tile
    static constexpr int NV = NV_;                           // 64-byte vectors per tile row
    static constexpr int NR = NV_ * int(64 / sizeof(T));     // columns of the register tile
    static constexpr index_t KC = KC_;                       // depth of a packed block
    static constexpr index_t MC = MC_;                       // rows of an A block (multiple of MR)
    static constexpr index_t NC = 4096;                      // columns of a B block
};
#ifndef MINIDL_AVX512_KC  // (a -D flag for tuning experiments)
#define MINIDL_AVX512_KC 256
#endif
#ifndef MINIDL_AVX512_MC
#define MINIDL_AVX512_MC (14 * 24)
#endif
template <typename T> using Avx512Blocking = Blocking<T, 14, 2, MINIDL_AVX512_KC, MINIDL_AVX512_MC>;
template <typename T> using Avx2Blocking = Blocking<T, 6, 1, 256, 6 * 16>;

// Scratch buffers that live as long as the thread (OpenMP's pool threads are reused
// from call to call): a fresh new[] per call costs a page fault per 4 KiB touched.
// Two per thread: 0 for an A block, 1 for the packed B.
struct Scratch {
    void* p = nullptr;
    std::size_t bytes = 0;
    ~Scratch() { std::free(p); }
};
thread_local Scratch scratch_bufs[2];

template <typename T>
T* scratch(index_t n, int which) {
    Scratch& buf = scratch_bufs[which];
    const std::size_t bytes = round_up(n * index_t(sizeof(T)), 64);
    if (buf.bytes < bytes) {
        std::free(buf.p);
        buf.p = std::aligned_alloc(64, bytes);  // 64-byte aligned: whole cache lines
        buf.bytes = buf.p ? bytes : 0;
        if (!buf.p) throw std::bad_alloc();
    }
    return static_cast<T*>(buf.p);
}
void release_scratch(int which) {
    Scratch& buf = scratch_bufs[which];
    std::free(buf.p);
    buf = Scratch{};
}

// Copy slivers [s0, s1) of rows [k0, k0+kc) of B (element (p, j) at b[p*rs + j*cs]),
// each NR columns wide, zero-padding the last sliver: out[s][p][j] = B[k0 + p][s*NR + j].
template <typename Blk, typename T>
void pack_b(const T* b, index_t rs, index_t cs, index_t N, index_t k0, index_t kc, index_t s0, index_t s1,
            T* out) {
    constexpr int NR = Blk::NR;
    for (index_t s = s0; s < s1; ++s) {
        const index_t cols = std::min<index_t>(NR, N - s * NR);
        T* dst = out + s * kc * NR;
        const T* src = b + k0 * rs + s * NR * cs;
        if (cols == NR && cs == 1) {               // rows of B are contiguous: copy them whole
            for (index_t p = 0; p < kc; ++p) std::memcpy(dst + p * NR, src + p * rs, sizeof(T) * NR);
        } else {                                   // e.g. B = W^T: walk down B's columns,
            for (index_t j = 0; j < cols; ++j)     // which are W's contiguous rows
                for (index_t p = 0; p < kc; ++p) dst[p * NR + j] = src[p * rs + j * cs];
            for (index_t p = 0; p < kc; ++p)
                for (index_t j = cols; j < NR; ++j) dst[p * NR + j] = T(0);
        }
    }
}

// Copy the mc x kc block at (i0, k0) of A (element (i, p) at a[i*rs + p*cs]) into MR-row
// micro-panels stored column after column, zero-padding the last:
// out[r][p][i] = A[i0 + r*MR + i][k0 + p].
template <typename Blk, typename T>
void pack_a(const T* a, index_t rs, index_t cs, index_t i0, index_t k0, index_t mc, index_t kc, T* out) {
    constexpr int MR = Blk::MR;
    for (index_t r = 0; r < ceil_div(mc, MR); ++r) {
        const index_t rows = std::min<index_t>(MR, mc - r * MR);
        T* dst = out + r * kc * MR;
        const T* src = a + (i0 + r * MR) * rs + k0 * cs;
        for (index_t p = 0; p < kc; ++p) {
            for (index_t i = 0; i < rows; ++i) dst[p * MR + i] = src[i * rs + p * cs];
            for (index_t i = rows; i < MR; ++i) dst[p * MR + i] = T(0);
        }
    }
}

// The micro-kernel: acc = (MR x kc panel of A) @ (kc x NR sliver of B), kept in
// registers, then c += acc (or c = acc on the first K block) for the rows x cols
// that lie inside C.
template <typename Blk, typename T>
MINIDL_INLINE void micro_kernel(index_t kc, const T* MINIDL_RESTRICT a, const T* MINIDL_RESTRICT b,
                                T* MINIDL_RESTRICT c, index_t ldc, index_t rows, index_t cols,
                                bool accumulate) {
    constexpr int MR = Blk::MR, NV = Blk::NV, NR = Blk::NR, W = 64 / sizeof(T);
    // Ask for the C tile now (all NV cache lines of each row): it is needed only at the
    // end, and from L3 or memory it would take longer to arrive than the FMAs take.
    for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v)
            __builtin_prefetch(c + std::min<index_t>(i, rows - 1) * ldc + v * W, 1);
    Vec<T> acc[MR][NV] = {};
    for (index_t p = 0; p < kc; ++p) {
        Vec<T> bv[NV];
        for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + p * NR + v * W, sizeof(Vec<T>));
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const T ai = a[p * MR + i];          // broadcast from memory
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];
        }
    }
    for (index_t i = 0; i < rows; ++i) {
        T* c_row = c + i * ldc;
        if (cols == NR) {                          // full rows: vector load, add, store
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                Vec<T> out = acc[i][v];
                if (accumulate) {
                    Vec<T> old;
                    std::memcpy(&old, c_row + v * W, sizeof old);
                    out += old;
                }
                std::memcpy(c_row + v * W, &out, sizeof out);
            }
        } else {                                   // the ragged right edge of C
            for (index_t j = 0; j < cols; ++j) {
                const T x = acc[i][j / W][j % W];
                c_row[j] = accumulate ? c_row[j] + x : x;
            }
        }
    }
}

// C[0:mc, 0:nc] (+)= packed A block @ packed B slivers [s0, s1); c points at C[i0, j0].
template <typename Blk, typename T>
MINIDL_INLINE void macro_kernel(index_t mc, index_t nc, index_t kc, index_t s0, index_t s1,
                                const T* a, const T* b, T* c, index_t ldc, bool accumulate) {
    constexpr int MR = Blk::MR, NR = Blk::NR;
    for (index_t s = s0; s < s1; ++s)                     // B sliver: loaded to L1 once,
        for (index_t r = 0; r < ceil_div(mc, MR); ++r)    // ... reused by every A panel
            micro_kernel<Blk, T>(kc, a + r * kc * MR, b + s * kc * NR, c + r * MR * ldc + s * NR, ldc,
                                 std::min<index_t>(MR, mc - r * MR),
                                 std::min<index_t>(NR, nc - s * NR), accumulate);
}

// The entry points compiled per target (see "Portability" above).  target_clones
// applies to plain functions, not templates, hence one per dtype.
#define MINIDL_MACRO_ARGS(T) index_t mc, index_t nc, index_t kc, index_t s0, index_t s1, \
                             const T *a, const T *b, T *c, index_t ldc, bool acc
#define MINIDL_MACRO_CALL mc, nc, kc, s0, s1, a, b, c, ldc, acc
MINIDL_MULTIVERSION void macro_avx2_f32(MINIDL_MACRO_ARGS(float)) {
    macro_kernel<Avx2Blocking<float>>(MINIDL_MACRO_CALL);
}
MINIDL_MULTIVERSION void macro_avx2_f64(MINIDL_MACRO_ARGS(double)) {
    macro_kernel<Avx2Blocking<double>>(MINIDL_MACRO_CALL);
}
void run_macro(Avx2Blocking<float>, MINIDL_MACRO_ARGS(float)) { macro_avx2_f32(MINIDL_MACRO_CALL); }
void run_macro(Avx2Blocking<double>, MINIDL_MACRO_ARGS(double)) { macro_avx2_f64(MINIDL_MACRO_CALL); }
#if MINIDL_X86_DISPATCH
MINIDL_TARGET_AVX512 void macro_avx512_f32(MINIDL_MACRO_ARGS(float)) {
    macro_kernel<Avx512Blocking<float>>(MINIDL_MACRO_CALL);
}
MINIDL_TARGET_AVX512 void macro_avx512_f64(MINIDL_MACRO_ARGS(double)) {
    macro_kernel<Avx512Blocking<double>>(MINIDL_MACRO_CALL);
}
void run_macro(Avx512Blocking<float>, MINIDL_MACRO_ARGS(float)) { macro_avx512_f32(MINIDL_MACRO_CALL); }
void run_macro(Avx512Blocking<double>, MINIDL_MACRO_ARGS(double)) { macro_avx512_f64(MINIDL_MACRO_CALL); }
#endif

template <typename Blk, typename T>
void matmul_impl(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, index_t batch, index_t M,
                 index_t N, index_t K) {
    constexpr int MR = Blk::MR, NR = Blk::NR;
    if (batch == 0 || M == 0 || N == 0) return;
    if (K == 0) { std::fill(c, c + batch * M * N, T(0)); return; }

    // Small products are not worth waking the thread pool for.
    const int threads = 2.0 * batch * M * N * K >= 4e6 ? num_threads() : 1;

    // 1. Pack every B once, shared by all threads: per batch, K rows x (N rounded up
    //    to NR), in KC-deep blocks.  In the block at k0 of batch bi, sliver s (columns
    //    s*NR...) starts at bi*K*n_pad + k0*n_pad + s*kc*NR.  The threads share the work
    //    in pieces of 4 slivers.
    const index_t n_pad = round_up(N, NR), slivers = n_pad / NR, chunks = ceil_div(slivers, 4);
    const index_t k_blocks = ceil_div(K, Blk::KC);
    const index_t b_size = batch * K * n_pad;
    T* packed_b = scratch<T>(b_size, 1);

    // 2. Tasks: (batch, row block, NC-column block) tiles of C.  Each thread packs the A
    //    block of its task itself.  Rows per task: MC, or fewer so that each thread gets
    //    at least two tasks — and a thread that the OS has paused (the cores are
    //    shared) leaves fewer rows for the other to pick up.
    index_t mc = Blk::MC;
    if (threads > 1 && batch < 2 * threads)
        mc = std::min(mc, round_up(ceil_div(M, 2 * threads / batch + (2 * threads % batch != 0)), MR));
    const index_t m_blocks = ceil_div(M, mc), n_blocks = ceil_div(N, Blk::NC);
    const index_t tasks = batch * m_blocks * n_blocks;

    // Two work-sharing loops, both `dynamic`: whichever thread is running takes the next
    // piece, so no thread sits in a barrier waiting for one that is not running.
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(dynamic) collapse(3)
        for (index_t bi = 0; bi < batch; ++bi)
            for (index_t kb = 0; kb < k_blocks; ++kb)
                for (index_t chunk = 0; chunk < chunks; ++chunk) {  // 4 slivers at a time
                    const index_t k0 = kb * Blk::KC, kc = std::min(Blk::KC, K - k0);
                    pack_b<Blk>(b + bi * bs.batch, bs.row, bs.col, N, k0, kc, chunk * 4,
                                std::min(slivers, chunk * 4 + 4), packed_b + bi * K * n_pad + k0 * n_pad);
                }
        // (the implicit barrier here: B is packed before anyone multiplies)

        T* packed_a = scratch<T>(mc * Blk::KC, 0);  // one per thread
#pragma omp for schedule(dynamic) nowait
        for (index_t t = 0; t < tasks; ++t) {
            const index_t bi = t / (m_blocks * n_blocks);
            const index_t i0 = (t / n_blocks) % m_blocks * mc, rows = std::min(mc, M - i0);
            const index_t j0 = t % n_blocks * Blk::NC, nc = std::min(Blk::NC, N - j0);
            for (index_t k0 = 0; k0 < K; k0 += Blk::KC) {
                const index_t kc = std::min(Blk::KC, K - k0);
                // 3. Pack this task's A block, 4. run the micro-kernels over it.
                pack_a<Blk>(a + bi * as.batch, as.row, as.col, i0, k0, rows, kc, packed_a);
                const T* b_block = packed_b + bi * K * n_pad + k0 * n_pad + j0 * kc;
                run_macro(Blk{}, rows, nc, kc, 0, ceil_div(nc, NR), packed_a, b_block,
                          c + bi * M * N + i0 * N + j0, N, /*accumulate=*/k0 > 0);
            }
        }
    }
    // Keep a buffer for the next call, unless it is huge.
    if (b_size * index_t(sizeof(T)) > (index_t(64) << 20)) release_scratch(1);
}

template <typename T>
void matmul_dispatch(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, index_t batch, index_t M,
                     index_t N, index_t K) {
#if MINIDL_X86_DISPATCH
    static const bool avx512 = __builtin_cpu_supports("x86-64-v4");
    if (avx512) return matmul_impl<Avx512Blocking<T>>(a, as, b, bs, c, batch, M, N, K);
#endif
    matmul_impl<Avx2Blocking<T>>(a, as, b, bs, c, batch, M, N, K);
}

}  // namespace

#define MINIDL_MATMUL_DEFINE(T)                                                                           \
    void matmul(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, std::int64_t batch,   \
                std::int64_t M, std::int64_t N, std::int64_t K) {                                        \
        matmul_dispatch(a, as, b, bs, c, batch, M, N, K);                                                \
    }                                                                                                     \
    void matmul(const T* a, const T* b, T* c, std::int64_t batch, std::int64_t M, std::int64_t N,         \
                std::int64_t K) {                                                                         \
        matmul_dispatch(a, Strides{M * K, K, 1}, b, Strides{K * N, N, 1}, c, batch, M, N, K);             \
    }
MINIDL_MATMUL_DEFINE(float)
MINIDL_MATMUL_DEFINE(double)
#undef MINIDL_MATMUL_DEFINE

}  // namespace minidl
