// csrc/cpu/matmul.cpp — batched matrix multiply on the CPU, float32 and float64.
//
// What:   c[b] = a[b] @ b[b]   with a (B, M, K), b (B, K, N), c (B, M, N),
//         all C-contiguous, one dtype.  c[b, i, j] = sum_p a[b, i, p] * b[b, p, j]
// FLOPs:  2 * B * M * N * K            (one multiply and one add per term)
// Bytes:  at least sizeof(T) * B * (M*K + K*N + M*N)
// Threads: OpenMP over (batch, M-block, N-block) tasks; set with _C.set_num_threads(n)
// Reference: `matmul` in minidl/backend/numpy_ref.py (numpy.matmul)
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_matmul.py
// Bench:  make bench        (= .venv/bin/python -m benchmarks.bench_matmul)
//
// How — the GotoBLAS / BLIS recipe in plain C++ (plus GCC/Clang vector types):
//
//   1. Pack B.  For each block of KC rows of B, copy it into "slivers" of NR
//      columns, each stored row after row: sliver[p][0..NR).  The inner loop then
//      reads B with unit stride, and a KC x NR sliver (16 KiB) stays in L1.
//   2. Split C into tasks of MC rows x NC columns; OpenMP hands tasks to threads.
//   3. For each task and each KC block: pack an MC x KC block of A (it stays in L2)
//      into micro-panels of MR rows stored column after column: panel[p][0..MR).
//   4. Micro-kernel: an MR x NR tile of C lives in registers (6 x 16 floats =
//      6 AVX-512 or 12 AVX2 registers) while p runs over the KC block: per step,
//      MR broadcasts of A times one NR-wide row of B — MR*NR multiply-adds for
//      MR+1 loads.
//
//   Zero padding in the packed buffers lets the micro-kernel always compute a full
//   MR x NR tile; only the write-back knows about the ragged edges of C.
//
// Portability: the build uses no -march flag (a wheel must run on any x86-64), so
// the hot function is compiled several times with GCC's target_clones — for
// AVX-512, for AVX2+FMA and for plain x86-64 — and the loader picks the best one
// the CPU has when the module is imported.  MINIDL_NATIVE=1 pip install -e .
// builds everything with -march=native instead.
#include "kernels.h"

#include <algorithm>
#include <cstring>
#include <memory>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(MINIDL_NO_MULTIVERSION)
#define MINIDL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MINIDL_MULTIVERSION
#endif

// GCC and Clang only (vector types, always_inline); both are what pip uses on Linux/macOS.
#define MINIDL_INLINE inline __attribute__((always_inline))
#define MINIDL_RESTRICT __restrict__

namespace minidl {
namespace {

using index_t = std::int64_t;

// The blocking, per element type.  NR is one 64-byte cache line of C: 16 floats
// or 8 doubles.  KC * NR * sizeof(T) = 16 KiB (a B sliver, L1); MC * KC * sizeof(T)
// = 72-144 KiB (an A block, L2).
template <typename T>
struct Blocking {
    static constexpr int MR = 6;                   // rows of the register tile
    static constexpr int NR = 64 / sizeof(T);      // columns of the register tile
    static constexpr index_t KC = 256;             // depth of a packed block
    static constexpr index_t MC = 12 * MR;         // rows of C per task
    static constexpr index_t NC = 32 * NR;         // columns of C per task
};

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// Copy rows [k0, k0+kc) of one B (K x N, row stride N) into NR-wide slivers,
// zero-padding the last sliver: out[s][p][j] = B[k0 + p][s*NR + j].
template <typename T>
void pack_b(const T* b, index_t N, index_t k0, index_t kc, T* out) {
    constexpr int NR = Blocking<T>::NR;
    for (index_t s = 0; s < ceil_div(N, NR); ++s) {
        const index_t j0 = s * NR, cols = std::min<index_t>(NR, N - j0);
        for (index_t p = 0; p < kc; ++p) {
            const T* row = b + (k0 + p) * N + j0;
            T* dst = out + (s * kc + p) * NR;
            for (index_t j = 0; j < cols; ++j) dst[j] = row[j];
            for (index_t j = cols; j < NR; ++j) dst[j] = T(0);
        }
    }
}

// Copy the mc x kc block of one A (row stride K) at (i0, k0) into MR-row micro-panels
// stored column after column, zero-padding the last panel:
// out[r][p][i] = A[i0 + r*MR + i][k0 + p].
template <typename T>
void pack_a(const T* a, index_t K, index_t i0, index_t k0, index_t mc, index_t kc, T* out) {
    constexpr int MR = Blocking<T>::MR;
    for (index_t r = 0; r < ceil_div(mc, MR); ++r) {
        const index_t rows = std::min<index_t>(MR, mc - r * MR);
        T* dst = out + r * kc * MR;
        for (index_t i = 0; i < MR; ++i) {
            const T* row = a + (i0 + r * MR + i) * K + k0;
            for (index_t p = 0; p < kc; ++p) dst[p * MR + i] = i < rows ? row[p] : T(0);
        }
    }
}

// The micro-kernel: acc = (MR x kc panel of A) @ (kc x NR sliver of B), kept in
// registers, then c += acc (or c = acc on the first K block) for the rows x cols
// that lie inside C.  A row of the tile is one `Row<T>`, a GCC/Clang vector of NR
// elements: `acc[i] += a_ip * b_row` is NR multiply-adds, which the compiler turns
// into one AVX-512 FMA, two AVX2 FMAs or four SSE multiply+adds, whichever the
// target has, and MR rows of accumulators stay in registers for the whole p-loop.
template <typename T> struct RowOf;
template <> struct RowOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct RowOf<double> { typedef double type __attribute__((vector_size(64))); };
template <typename T>
using Row = typename RowOf<T>::type;  // NR = 64 / sizeof(T) elements

template <typename T>
MINIDL_INLINE void micro_kernel(index_t kc, const T* MINIDL_RESTRICT a, const T* MINIDL_RESTRICT b,
                                T* MINIDL_RESTRICT c, index_t ldc, index_t rows, index_t cols,
                                bool accumulate) {
    constexpr int MR = Blocking<T>::MR, NR = Blocking<T>::NR;
    Row<T> acc[MR] = {};
    for (index_t p = 0; p < kc; ++p) {
        Row<T> b_row;
        std::memcpy(&b_row, b + p * NR, sizeof b_row);  // an unaligned vector load
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i] += a[p * MR + i] * b_row;
    }
    for (index_t i = 0; i < rows; ++i) {
        T* c_row = c + i * ldc;
        if (cols == NR && accumulate) {       // full rows: vector load, add, store
            Row<T> old;
            std::memcpy(&old, c_row, sizeof old);
            old += acc[i];
            std::memcpy(c_row, &old, sizeof old);
        } else if (cols == NR) {
            std::memcpy(c_row, &acc[i], sizeof acc[i]);
        } else {                              // the ragged right edge of C
            for (index_t j = 0; j < cols; ++j) c_row[j] = accumulate ? c_row[j] + acc[i][j] : acc[i][j];
        }
    }
}

// One task's work for one K block: C[i0:i0+mc, j0:j0+nc] (+)= packed A @ packed B.
// `b` points at the first sliver of the task's columns; c at C[i0, j0].
template <typename T>
MINIDL_INLINE void macro_kernel(index_t mc, index_t nc, index_t kc, const T* a, const T* b,
                                T* c, index_t ldc, bool accumulate) {
    constexpr int MR = Blocking<T>::MR, NR = Blocking<T>::NR;
    for (index_t s = 0; s < ceil_div(nc, NR); ++s)        // B sliver: loaded to L1 once,
        for (index_t r = 0; r < ceil_div(mc, MR); ++r)    // ... reused by every A panel
            micro_kernel<T>(kc, a + r * kc * MR, b + s * kc * NR, c + r * MR * ldc + s * NR, ldc,
                            std::min<index_t>(MR, mc - r * MR), std::min<index_t>(NR, nc - s * NR),
                            accumulate);
}

// The multiversioned entry points (see "Portability" above): one per dtype, since
// target_clones applies to plain functions, not templates.
MINIDL_MULTIVERSION void macro_kernel_f32(index_t mc, index_t nc, index_t kc, const float* a,
                                          const float* b, float* c, index_t ldc, bool accumulate) {
    macro_kernel<float>(mc, nc, kc, a, b, c, ldc, accumulate);
}
MINIDL_MULTIVERSION void macro_kernel_f64(index_t mc, index_t nc, index_t kc, const double* a,
                                          const double* b, double* c, index_t ldc, bool accumulate) {
    macro_kernel<double>(mc, nc, kc, a, b, c, ldc, accumulate);
}
void run_macro_kernel(index_t mc, index_t nc, index_t kc, const float* a, const float* b, float* c,
                      index_t ldc, bool acc) {
    macro_kernel_f32(mc, nc, kc, a, b, c, ldc, acc);
}
void run_macro_kernel(index_t mc, index_t nc, index_t kc, const double* a, const double* b,
                      double* c, index_t ldc, bool acc) {
    macro_kernel_f64(mc, nc, kc, a, b, c, ldc, acc);
}

template <typename T>
void matmul_impl(const T* a, const T* b, T* c, index_t batch, index_t M, index_t N, index_t K) {
    using Blk = Blocking<T>;
    if (batch == 0 || M == 0 || N == 0) return;
    if (K == 0) { std::fill(c, c + batch * M * N, T(0)); return; }

    // Small products are not worth waking the thread pool for.
    const bool parallel = 2.0 * batch * M * N * K >= 4e6;

    // 1. Pack every B once, shared by all tasks: per batch, K rows x (N rounded up to NR).
    //    Block k0 of batch bi starts at bi*K*n_pad + k0*n_pad; sliver s inside it at s*kc*NR.
    const index_t n_pad = ceil_div(N, Blk::NR) * Blk::NR;
    const index_t k_blocks = ceil_div(K, Blk::KC);
    std::unique_ptr<T[]> packed_b(new T[batch * K * n_pad]);
#pragma omp parallel for collapse(2) schedule(static) if (parallel) num_threads(num_threads())
    for (index_t bi = 0; bi < batch; ++bi)
        for (index_t kb = 0; kb < k_blocks; ++kb) {
            const index_t k0 = kb * Blk::KC, kc = std::min(Blk::KC, K - k0);
            pack_b(b + bi * K * N, N, k0, kc, packed_b.get() + bi * K * n_pad + k0 * n_pad);
        }

    // 2. Tasks: (batch, MC-row block, NC-column block) tiles of C.
    const index_t m_blocks = ceil_div(M, Blk::MC), n_blocks = ceil_div(N, Blk::NC);
    const index_t tasks = batch * m_blocks * n_blocks;
#pragma omp parallel if (parallel && tasks > 1) num_threads(num_threads())
    {
        std::unique_ptr<T[]> packed_a(new T[Blk::MC * Blk::KC]);  // one per thread
#pragma omp for schedule(dynamic)
        for (index_t t = 0; t < tasks; ++t) {
            const index_t bi = t / (m_blocks * n_blocks);
            const index_t i0 = (t / n_blocks) % m_blocks * Blk::MC, mc = std::min(Blk::MC, M - i0);
            const index_t j0 = t % n_blocks * Blk::NC, nc = std::min(Blk::NC, N - j0);
            for (index_t k0 = 0; k0 < K; k0 += Blk::KC) {
                const index_t kc = std::min(Blk::KC, K - k0);
                // 3. Pack this task's A block, 4. run the micro-kernels over it.
                pack_a(a + bi * M * K, K, i0, k0, mc, kc, packed_a.get());
                const T* b_block = packed_b.get() + bi * K * n_pad + k0 * n_pad + j0 * kc;
                run_macro_kernel(mc, nc, kc, packed_a.get(), b_block, c + bi * M * N + i0 * N + j0,
                                 N, /*accumulate=*/k0 > 0);
            }
        }
    }
}

}  // namespace

void matmul(const float* a, const float* b, float* c, std::int64_t batch, std::int64_t M,
            std::int64_t N, std::int64_t K) {
    matmul_impl(a, b, c, batch, M, N, K);
}
void matmul(const double* a, const double* b, double* c, std::int64_t batch, std::int64_t M,
            std::int64_t N, std::int64_t K) {
    matmul_impl(a, b, c, batch, M, N, K);
}

}  // namespace minidl
