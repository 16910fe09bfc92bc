// csrc/cpu/matmul_steps.cpp — one matmul, from naive to fast, in five steps a learner reads in order.
//
// What:  C = A @ B, float32, A (M, K), B (K, N), C (M, N), all row-major and contiguous.
//        2*M*N*K FLOPs. Single-threaded, so each step's speed is the idea's, not the threads'.
//        Each step is compiled for the CPU's widest vectors (MINIDL_CLONES, compiler.h), as v4 is.
// Each step is a short function that adds ONE idea to the one before; v4 is the kernel
// minidl runs (matmul.cpp). The numbers each reached: benchmarks/RESULTS.md, "matmul, step by step".
//   v0 naive          i-j-k: the dot product of a row of A and a column of B, one element of C at a time
//   v1 loop order     i-k-j: the inner loop walks rows of B and C, contiguous, so the compiler vectorises it
//   v2 cache blocks   the same loops over blocks of rows of B that stay in cache while every row of A uses them
//   v3 register tile  pack A and B into the order the inner loop reads them; a 6 x 16 tile of C in registers
//   v4 matmul.cpp     v3 for every CPU (AVX-512 / AVX2 / x86-64), cache-sized blocks at every level, threads
// Reference: numpy.matmul. Test: pytest tests/test_cpu_matmul_steps.py.
// Bench: python -m benchmarks.bench_matmul --versions
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace minidl::steps {

// v0: the definition. C[i][j] = sum_p A[i][p] * B[p][j]. The inner loop reads B down a column:
// one float from every row of B, a cache line (16 floats) fetched for each, 15 of them wasted.
MINIDL_CLONES void v0_naive(const float* A, const float* B, float* C, index_t M, index_t N, index_t K) {
    for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < N; ++j) {
            float sum = 0;
            for (index_t p = 0; p < K; ++p) sum += A[i * K + p] * B[p * N + j];
            C[i * N + j] = sum;
        }
}

// v1: swap the two inner loops. For a fixed A[i][p], add A[i][p] * (row p of B) to row i of C:
// both rows are contiguous, every float of a cache line is used, and the loop over j is the
// same operation on neighbouring floats, which the compiler turns into vector instructions.
MINIDL_CLONES void v1_loop_order(const float* A, const float* B, float* C, index_t M, index_t N, index_t K) {
    std::fill(C, C + M * N, 0.0f);
    for (index_t i = 0; i < M; ++i)
        for (index_t p = 0; p < K; ++p) {
            const float a = A[i * K + p];
            const float* MINIDL_RESTRICT b = B + p * N;
            float* MINIDL_RESTRICT c = C + i * N;
            for (index_t j = 0; j < N; ++j) c[j] += a * b[j];
        }
}

// v2: in v1 every row of A streams all of B (K x N floats) through the cache: for N = K = 1024,
// 4 MB per row of A, from L3 or memory each time. Take B a block of KB rows at a time instead
// (KB x N floats: 64 x 1024 = 256 KB, about L2's size) and let every row of A use that block
// while it is in cache; C's row is updated once per block.
MINIDL_CLONES void v2_cache_blocks(const float* A, const float* B, float* C, index_t M, index_t N, index_t K) {
    constexpr index_t KB = 64;
    std::fill(C, C + M * N, 0.0f);
    for (index_t p0 = 0; p0 < K; p0 += KB) {
        const index_t p1 = std::min(p0 + KB, K);
        for (index_t i = 0; i < M; ++i) {
            float* MINIDL_RESTRICT c = C + i * N;
            for (index_t p = p0; p < p1; ++p) {
                const float a = A[i * K + p];
                const float* MINIDL_RESTRICT b = B + p * N;
                for (index_t j = 0; j < N; ++j) c[j] += a * b[j];
            }
        }
    }
}

// v3: v2 still loads and stores each element of C once per p. Keep a tile of C in registers
// instead: MR x NR = 6 x 16 floats, 12 vector registers of 8 floats on AVX2 (the accumulators
// are GCC vectors, so the compiler keeps them in registers), updated K times, stored once. Per step p: 6 numbers of A (broadcast) times one row of 16 of B. For the
// tile's inner loop to read memory in order, first copy (pack) B into slivers of NR columns
// stored row after row, and A into panels of MR rows stored column after column; the copies
// are zero-padded, so the micro-kernel always computes a whole tile and only the store to C
// knows about ragged edges.
constexpr index_t MR = 6, NR = 16;
typedef float f8 __attribute__((vector_size(32)));   // 8 floats: one AVX2 register

MINIDL_INLINE void micro_tile(const float* a_panel, const float* b_sliver, index_t K, float* C, index_t N,
                              index_t rows, index_t cols) {
    f8 acc[MR][2] = {};
    for (index_t p = 0; p < K; ++p) {
        f8 b0, b1;
        std::memcpy(&b0, b_sliver + p * NR, sizeof b0);
        std::memcpy(&b1, b_sliver + p * NR + 8, sizeof b1);
        for (index_t r = 0; r < MR; ++r) {
            const float a = a_panel[p * MR + r];     // broadcast to all 8 lanes
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
    for (index_t r = 0; r < rows; ++r) {
        float row[NR];
        std::memcpy(row, acc[r], sizeof row);
        for (index_t c = 0; c < cols; ++c) C[r * N + c] = row[c];
    }
}

MINIDL_CLONES void v3_register_tile(const float* A, const float* B, float* C, index_t M, index_t N, index_t K) {
    const index_t m_panels = (M + MR - 1) / MR, n_slivers = (N + NR - 1) / NR;
    std::vector<float> a_packed(m_panels * MR * K, 0.0f), b_packed(n_slivers * NR * K, 0.0f);
    for (index_t i = 0; i < M; ++i)                          // A -> panels of MR rows, column after column
        for (index_t p = 0; p < K; ++p) a_packed[(i / MR) * MR * K + p * MR + i % MR] = A[i * K + p];
    for (index_t p = 0; p < K; ++p)                          // B -> slivers of NR columns, row after row
        for (index_t j = 0; j < N; ++j) b_packed[(j / NR) * NR * K + p * NR + j % NR] = B[p * N + j];
    for (index_t s = 0; s < n_slivers; ++s)
        for (index_t t = 0; t < m_panels; ++t)
            micro_tile(&a_packed[t * MR * K], &b_packed[s * NR * K], K, C + t * MR * N + s * NR, N,
                       std::min(MR, M - t * MR), std::min(NR, N - s * NR));
}

// v4: the kernel minidl runs (matmul.cpp): v3's idea with the tile sized for the CPU found at run
// time, blocks of A and B sized for L1/L2/L3, B packed slice by slice while it is in cache, threads.
void v4_minidl(const float* A, const float* B, float* C, index_t M, index_t N, index_t K) {
    const Strides as{M * K, K, 1}, bs{K * N, N, 1}, cs{M * N, N, 1};
    matmul<float>(A, as, B, bs, C, cs, 1, M, N, K);
}

}  // namespace minidl::steps
