// csrc/cpu/matmul.cpp — batched matrix multiply on the CPU, float32 and float64.
//
// What:   c[b] = a[b] @ b[b]   with a (B, M, K), b (B, K, N), c (B, M, N), one dtype;
//         or c[b] += a[b] @ b[b] (accumulate).
//         c[b, i, j] = sum_p a[b, i, p] * b[b, p, j].  a and b may have any strides (in
//         elements): a transposed view (x.T) is read in place, not copied, because packing
//         (below) copies every operand into its own layout anyway.  c's rows are contiguous
//         but may lie any distance apart (conv.cpp writes a block of an image's columns).
// FLOPs:  2 * B * M * N * K            (one multiply and one add per term)
// Bytes:  at least sizeof(T) * B * (M*K + K*N + M*N)
// Threads: OpenMP; set with _C.set_num_threads(n).  A batch of at least 2 matrices per
//         thread: each thread multiplies whole matrices.  Otherwise the threads share each
//         product: they pack a slice of B together, then take row blocks of C.
// Reference: `matmul` in minidl/backend/numpy_ref.py (numpy.matmul)
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_matmul.py
// Bench:  make bench        (= .venv/bin/python -m benchmarks.bench_matmul)
//
// How — the GotoBLAS / BLIS recipe in plain C++ (plus GCC/Clang vector types):
//
//   for jc (NC columns):
//     for pc (KC deep):       pack the KC x NC slice of B              -> L2/L3, shared
//       for ic (MC rows), one row block per task, on any thread:
//         pack the MC x KC block of A                                  -> L2, per thread
//         for jr (NR columns):  B sliver KC x NR                       -> L1
//           for ir (MR rows):     micro-kernel: MR x NR tile of C in registers
//
//   1. Pack B: each block of KC rows is copied into "slivers" of NR columns, each
//      stored row after row: sliver[p][0..NR).  The micro-kernel reads B with unit stride.
//   2. Pack A: an MC x KC block is copied into micro-panels of MR rows stored column
//      after column: panel[p][0..MR).
//   3. Micro-kernel: an MR x NR tile of C lives in registers while p runs over the
//      KC block; per step, MR broadcasts of A times one NR-wide row of B.
//   Zero padding in the packed buffers lets the micro-kernel always compute a full
//   MR x NR tile; only the write-back knows about the ragged edges of C.
//   When N <= NC (4096) every element of A and of B is packed exactly once, and each
//   slice of B is used right after it is packed, while it is still in cache.
//
// Why the tile is 6 x 64 on AVX-512 but 6 x 16 on AVX2: an FMA has a latency of
// 4 cycles and a core starts 2 per cycle, so at least 8 independent accumulators must
// be in flight or the FMA units idle.  AVX-512 has 32 vector registers: 6 x 4 = 24
// accumulators, 4 for the row of B, 1 for a broadcast A value.  (A 6 x 16 tile keeps
// only 6 zmm accumulators: ~60% of numpy.  14 x 32, 28 accumulators, was the tile
// until 2026-11-24: 6 x 64 measured 1-9% faster on ResNet18's convolutions, interleaved
// A/B, mostly because 6 rows waste less than 14 on a conv's 64 or 576 rows.)  AVX2 has
// 16 registers: 6 x 2 = 12 ymm accumulators, the classic 6 x 16, written with 32-byte
// vectors: with the 64-byte vectors of the AVX-512 tile (one per row, each two ymm halves),
// GCC kept the accumulators on the stack and the AVX2 build ran at 7 GFLOP/s a thread
// instead of 80-85 (an AMD EPYC with AVX2, 2026-12-06).
//
// Why the scratch buffers are kept from call to call: fresh memory costs a page fault
// per 4 KiB on first touch — ~10% at n = 512.
//
// B packed once (PackedMatrix, kernels.h; at the end of this file): a product repeated with the
// same B — the LSTM's h W_hh^T at every step of a sequence (lstm.cpp) — packs B once, not at
// every call (with 32 rows in A, packing 4H x H weights was a quarter of each product), and its
// threads split B's columns: a few rows of A (6 panels for a batch of 32) split unevenly.
//
// Portability: the build uses no -march flag (a wheel must run on any x86-64), so the
// hot functions (the macro-kernel and B's packing, each with everything it inlines) are
// compiled for several targets — AVX-512 (GCC's `target`), AVX2+FMA and plain x86-64
// (`target_clones`) — and the best one the CPU has is picked at run time.  A template
// called from them but not inlined would be compiled for plain x86-64 only, hence the
// always_inline.  MINIDL_NATIVE=1 pip install -e . builds everything with -march=native.
//
// Measured: benchmarks/RESULTS.md (make bench).  On this VM (a Xeon with AVX-512, 2
// cores shared with other tenants) the micro-kernel alone runs at up to ~170 GFLOP/s
// (2 FMAs x 16 floats x 2 flops x ~2.7 GHz) and whole products at 100-140 per thread:
// packing B costs most of the rest when M is small (each element of B then serves only
// M rows).  History: a 6 x 16 AVX-512 tile with new[] buffers per call ran at 42-65;
// packing all of B up front instead of slice by slice, and packing it sliver by sliver
// instead of row by row, cost 5-20% on the shapes of conv layers; transposing W^T element
// by element, up to 30% on products with few rows.
#include "kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

// The targets (see "Portability" above and compiler.h): target_clones for AVX2+FMA and plain
// x86-64; AVX-512 separately (its own blocking, chosen once by matmul_dispatch below).
#if MINIDL_X86_DISPATCH
#define MINIDL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#define MINIDL_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define MINIDL_MULTIVERSION
#endif

namespace minidl {
namespace {

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// Vec<T>: GCC/Clang vectors of 64 bytes (16 floats or 8 doubles), what B's packing shuffles.
// A row of the register tile is NV vectors of the blocking's own width (Blocking::V: 64 bytes
// on AVX-512, 32 on AVX2), so that `acc += a_ip * b_vec` is one FMA of the target.
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };
template <typename T>
using Vec = typename VecOf<T>::type;

// The blocking.  MR x NR is the register tile; KC * NR * sizeof(T) (a B sliver)
// should fit in L1 (48 KiB here) next to the A panel streaming through it,
// MC * KC * sizeof(T) (an A block) in L2 (2 MiB), KC * NC * sizeof(T) in L3.
// (The 6 x 64 AVX-512 tile's sliver is 64 KiB at KC = 256, more than L1; KC = 128 measured
// no faster: the sliver's rows are read in order, which the hardware prefetcher follows.)
#ifndef MINIDL_NC  // (-D flags for tuning experiments)
#define MINIDL_NC 4096
#endif
template <typename T, int MR_, int NV_, index_t KC_, index_t MC_, int VB_ = 64>
struct Blocking {
    static constexpr int VB = VB_;                           // bytes of one vector of the tile
    typedef T V __attribute__((vector_size(VB_)));           // that vector: VB / sizeof(T) lanes
    static constexpr int MR = MR_;                           // rows of the register tile
    static constexpr int NV = NV_;                           // vectors per tile row
    static constexpr int NR = NV_ * int(VB_ / sizeof(T));    // columns of the register tile
    static constexpr index_t KC = KC_;                       // depth of a packed block
    static constexpr index_t MC = MC_;                       // rows of an A block (multiple of MR)
    static constexpr index_t NC = MINIDL_NC;                 // columns of a B block
};
#ifndef MINIDL_AVX512_KC
#define MINIDL_AVX512_KC 256
#endif
#ifndef MINIDL_AVX512_MC
#define MINIDL_AVX512_MC (6 * 56)
#endif
template <typename T> using Avx512Blocking = Blocking<T, 6, 4, MINIDL_AVX512_KC, MINIDL_AVX512_MC>;
template <typename T> using Avx2Blocking = Blocking<T, 6, 2, 256, 6 * 16, 32>;  // 32-byte vectors: see above

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

// A W x W block of T in W vectors of W (W = 16 floats or 8 doubles, 64 bytes a row),
// transposed in registers: log2(W) rounds of "butterflies".  In the round for distance D,
// rows i and i + D (i & D == 0) swap their D-wide groups of lanes crosswise:
//   row i     takes lanes l of row i where l & D == 0, lanes l - D of row i + D elsewhere,
//   row i + D takes lanes l + D of row i where l & D == 0, lanes l of row i + D elsewhere.
// After the rounds for D = W/2 ... 1, row i holds what was column i.  Each swap is one
// two-source shuffle (AVX-512's vpermt2ps): 64 instructions for 256 floats, where copying
// element by element costs a load and a store each.
template <typename T> struct IndexVecOf;
template <> struct IndexVecOf<float> { typedef std::int32_t type __attribute__((vector_size(64))); };
template <> struct IndexVecOf<double> { typedef std::int64_t type __attribute__((vector_size(64))); };

template <typename T, int D>
MINIDL_INLINE void transpose_rounds(Vec<T>* r) {
    if constexpr (D >= 1) {
        constexpr int W = 64 / sizeof(T);
        typename IndexVecOf<T>::type lo, hi;  // lanes 0..W-1: row i's, W..2W-1: row i + D's
        for (int l = 0; l < W; ++l) {
            lo[l] = (l & D) == 0 ? l : W + l - D;
            hi[l] = (l & D) == 0 ? l + D : W + l;
        }
#pragma GCC unroll 16
        for (int i = 0; i < W; ++i)
            if ((i & D) == 0) {
                const Vec<T> a = r[i], b = r[i + D];
                r[i] = __builtin_shuffle(a, b, lo);
                r[i + D] = __builtin_shuffle(a, b, hi);
            }
        transpose_rounds<T, D / 2>(r);
    }
}

// Copy rows [p0, p1) of the kc x N slice of B that starts at row k0 (element (p, j) at
// b[p*rs + j*cs]) into slivers NR columns wide, zero-padding the last sliver:
// out[s][p][j] = B[k0 + p][s*NR + j], each sliver kc x NR.  Three cases:
//  - B's rows are contiguous (cs == 1): row by row, each row read front to back once
//    (going sliver by sliver instead reads 128 bytes from each of kc rows kilobytes apart:
//    a cache miss each, which cost 10-20% of a conv layer's GEMM);
//  - B's columns are contiguous (rs == 1, e.g. B = W^T in a Linear layer, or the im2col
//    columns read transposed for a conv's weight gradient): W x W blocks, W columns
//    loaded as vectors and transposed in registers (transpose_rounds): 2-3x faster than
//    element by element, which was most of the time of a weight gradient's GEMM when the
//    other operand has few rows (64 output channels: 4 FMAs per packed element);
//  - anything else, and the ragged edges: element by element.
template <typename Blk, typename T>
MINIDL_INLINE void pack_b(const T* b, index_t rs, index_t cs, index_t N, index_t k0, index_t kc, index_t p0,
                          index_t p1, T* out) {
    constexpr int NR = Blk::NR, W = 64 / sizeof(T);
    const index_t slivers = ceil_div(N, NR), full = N / NR;
    if (cs == 1) {
        for (index_t p = p0; p < p1; ++p) {
            const T* src = b + (k0 + p) * rs;
            for (index_t s = 0; s < full; ++s) std::memcpy(out + (s * kc + p) * NR, src + s * NR, sizeof(T) * NR);
            if (full < slivers) {
                T* dst = out + (full * kc + p) * NR;
                const index_t cols = N - full * NR;
                std::memcpy(dst, src + full * NR, sizeof(T) * cols);
                std::fill(dst + cols, dst + NR, T(0));
            }
        }
        return;
    }
    for (index_t s = 0; s < slivers; ++s) {
        const index_t cols = std::min<index_t>(NR, N - s * NR);
        T* dst = out + s * kc * NR;
        const T* src = b + k0 * rs + s * NR * cs;
        index_t p = p0;
        if (rs == 1 && cols == NR)
            for (; p + W <= p1; p += W)
                for (int h = 0; h < NR / W; ++h) {  // the W x W block at (p, h*W)
                    Vec<T> r[W];
                    for (int j = 0; j < W; ++j) std::memcpy(&r[j], src + p + (h * W + j) * cs, sizeof(Vec<T>));
                    transpose_rounds<T, W / 2>(r);
                    for (int i = 0; i < W; ++i) std::memcpy(dst + (p + i) * NR + h * W, &r[i], sizeof(Vec<T>));
                }
        for (index_t j = 0; j < cols; ++j)
            for (index_t q = p; q < p1; ++q) dst[q * NR + j] = src[q * rs + j * cs];
        for (index_t q = p; q < p1; ++q)
            for (index_t j = cols; j < NR; ++j) dst[q * NR + j] = T(0);
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
    constexpr int MR = Blk::MR, NV = Blk::NV, NR = Blk::NR, W = Blk::VB / sizeof(T);
    using V = typename Blk::V;
    // Ask for the C tile now (all NV cache lines of each row): it is needed only at the
    // end, and from L3 or memory it would take longer to arrive than the FMAs take.
    for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v)
            __builtin_prefetch(c + std::min<index_t>(i, rows - 1) * ldc + v * W, 1);
    V acc[MR][NV] = {};
    // Unrolled 4 deep: the loop's own instructions (pointer bumps, compare, branch) then
    // come once per 4 x MR x NV FMAs.  Measured: 3-10% more GFLOP/s on 1 and 2 threads.
#pragma GCC unroll 4
    for (index_t p = 0; p < kc; ++p) {
        V bv[NV];
        for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + p * NR + v * W, sizeof(V));
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
                V out = acc[i][v];
                if (accumulate) {
                    V old;
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
// pack_b too: its transposing shuffles need the target's vector instructions.
#define MINIDL_PACK_ARGS(T) const T *b, index_t rs, index_t cs, index_t N, index_t k0, index_t kc, index_t p0, \
                            index_t p1, T *out
#define MINIDL_PACK_CALL b, rs, cs, N, k0, kc, p0, p1, out
MINIDL_MULTIVERSION void pack_b_avx2_f32(MINIDL_PACK_ARGS(float)) { pack_b<Avx2Blocking<float>>(MINIDL_PACK_CALL); }
MINIDL_MULTIVERSION void pack_b_avx2_f64(MINIDL_PACK_ARGS(double)) { pack_b<Avx2Blocking<double>>(MINIDL_PACK_CALL); }
void run_pack_b(Avx2Blocking<float>, MINIDL_PACK_ARGS(float)) { pack_b_avx2_f32(MINIDL_PACK_CALL); }
void run_pack_b(Avx2Blocking<double>, MINIDL_PACK_ARGS(double)) { pack_b_avx2_f64(MINIDL_PACK_CALL); }
#if MINIDL_X86_DISPATCH
MINIDL_TARGET_AVX512 void pack_b_avx512_f32(MINIDL_PACK_ARGS(float)) { pack_b<Avx512Blocking<float>>(MINIDL_PACK_CALL); }
MINIDL_TARGET_AVX512 void pack_b_avx512_f64(MINIDL_PACK_ARGS(double)) { pack_b<Avx512Blocking<double>>(MINIDL_PACK_CALL); }
void run_pack_b(Avx512Blocking<float>, MINIDL_PACK_ARGS(float)) { pack_b_avx512_f32(MINIDL_PACK_CALL); }
void run_pack_b(Avx512Blocking<double>, MINIDL_PACK_ARGS(double)) { pack_b_avx512_f64(MINIDL_PACK_CALL); }
#endif

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

// One product c (+)= a @ b on `threads` threads, in BLIS's loop order: for each block of
// NC columns and each KC-deep slice, the threads first pack that slice of B together
// (shared), then take the MC-row blocks of A one at a time, each packing its own A block
// and running the micro-kernels over the whole packed B slice.  The B slice (kc x nc) is
// used while it is still in cache; a barrier separates the slices.
template <typename Blk, typename T>
void gemm(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, index_t ldc, index_t M, index_t N,
          index_t K, bool accumulate, int threads) {
    constexpr int MR = Blk::MR, NR = Blk::NR;
    // Slices of equal depth (K = 1152: 5 x 231, not 4 x 256 + 128) and, with threads,
    // row blocks small enough that every thread gets two or more (a thread that the OS
    // pauses on these shared cores then leaves less for the other to wait for).
    const index_t k_slices = ceil_div(K, Blk::KC), kc_max = ceil_div(K, k_slices);
    index_t mc = Blk::MC;
    if (threads > 1) mc = std::min(mc, round_up(ceil_div(M, 2 * threads), MR));
    const index_t m_blocks = ceil_div(M, mc), nc_max = std::min(Blk::NC, round_up(N, NR));
    T* packed_b = scratch<T>(kc_max * nc_max, 1);  // shared: the calling thread's

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        T* packed_a = scratch<T>(mc * kc_max, 0);  // one per thread
        for (index_t j0 = 0; j0 < N; j0 += Blk::NC) {
            const index_t nc = std::min(Blk::NC, N - j0), slivers = ceil_div(nc, NR);
            for (index_t k0 = 0; k0 < K; k0 += kc_max) {
                const index_t kc = std::min(kc_max, K - k0);
#pragma omp for schedule(dynamic)
                for (index_t p0 = 0; p0 < kc; p0 += 16)  // 16 rows at a time
                    run_pack_b(Blk{}, b + j0 * bs.col, bs.row, bs.col, nc, k0, kc, p0, std::min(kc, p0 + 16), packed_b);
                // (implicit barrier: the slice is packed before anyone multiplies)
#pragma omp for schedule(dynamic)
                for (index_t t = 0; t < m_blocks; ++t) {
                    const index_t i0 = t * mc, rows = std::min(mc, M - i0);
                    pack_a<Blk>(a, as.row, as.col, i0, k0, rows, kc, packed_a);
                    run_macro(Blk{}, rows, nc, kc, 0, slivers, packed_a, packed_b, c + i0 * ldc + j0, ldc,
                              /*accumulate=*/accumulate || k0 > 0);
                }
                // (implicit barrier: nobody still reads the slice the next one overwrites)
            }
        }
    }
}

template <typename Blk, typename T>
void matmul_impl(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, const Strides& cs,
                 index_t batch, index_t M, index_t N, index_t K, bool accumulate) {
    if (batch == 0 || M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (index_t bi = 0; bi < batch; ++bi)
                for (index_t i = 0; i < M; ++i) std::fill_n(c + bi * cs.batch + i * cs.row, N, T(0));
        return;
    }
    // Small products are not worth waking the thread pool for.
    const int threads = 2.0 * batch * M * N * K >= 4e6 ? num_threads() : 1;
    if (threads > 1 && batch >= 2 * threads) {
        // Enough matrices to share: each thread multiplies whole ones, with no barriers.
#pragma omp parallel for schedule(dynamic) num_threads(threads)
        for (index_t bi = 0; bi < batch; ++bi)
            gemm<Blk>(a + bi * as.batch, as, b + bi * bs.batch, bs, c + bi * cs.batch, cs.row, M, N, K,
                      accumulate, 1);
        return;
    }
    for (index_t bi = 0; bi < batch; ++bi)
        gemm<Blk>(a + bi * as.batch, as, b + bi * bs.batch, bs, c + bi * cs.batch, cs.row, M, N, K, accumulate,
                  threads);
}

template <typename T>
void matmul_dispatch(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, const Strides& cs,
                     index_t batch, index_t M, index_t N, index_t K, bool accumulate) {
#if MINIDL_X86_DISPATCH
    static const bool avx512 = __builtin_cpu_supports("x86-64-v4");
    if (avx512) return matmul_impl<Avx512Blocking<T>>(a, as, b, bs, c, cs, batch, M, N, K, accumulate);
#endif
    matmul_impl<Avx2Blocking<T>>(a, as, b, bs, c, cs, batch, M, N, K, accumulate);
}

// B packed once for many products (lstm.cpp: W_hh at every step of a sequence).  The layout is
// gemm's, kept whole: the KC-deep slice k of NC-column block j, packed by pack_b into slivers, at
// slot (j * k_slices + k) of kc_max * nc_max elements.
template <typename Blk>
struct PackedLayout {
    index_t k_slices, kc_max, nc_max;
    PackedLayout(index_t K, index_t N)
        : k_slices(std::max<index_t>(1, ceil_div(K, Blk::KC))), kc_max(ceil_div(K, k_slices)),
          nc_max(std::min(Blk::NC, round_up(N, Blk::NR))) {}
    index_t slot(index_t j_block, index_t k_slice) const { return (j_block * k_slices + k_slice) * kc_max * nc_max; }
    index_t size(index_t N) const { return slot(ceil_div(N, Blk::NC), 0); }
};

template <typename Blk, typename T>
void pack_whole_b(const T* b, const Strides& bs, index_t K, index_t N, T* packed) {
    const PackedLayout<Blk> layout(K, N);
    for (index_t j0 = 0; j0 < N; j0 += Blk::NC)
        for (index_t k0 = 0; k0 < K; k0 += layout.kc_max) {
            const index_t nc = std::min(Blk::NC, N - j0), kc = std::min(layout.kc_max, K - k0);
            T* slice = packed + layout.slot(j0 / Blk::NC, k0 / layout.kc_max);
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (kc * nc >= (1 << 16))
            for (index_t p0 = 0; p0 < kc; p0 += 16)
                run_pack_b(Blk{}, b + j0 * bs.col, bs.row, bs.col, nc, k0, kc, p0, std::min(kc, p0 + 16), slice);
        }
}

// c (+)= a @ B with B packed by pack_whole_b.  No B to pack, so the threads need not meet: each
// takes a share of B's slivers (columns) for all of a's rows, which keeps them evenly busy even
// when a has few rows (a batch of 32 is 6 row panels: 2 threads would split them 4 + 2).
template <typename Blk, typename T>
void gemm_packed(const T* a, const Strides& as, const T* packed, T* c, index_t ldc, index_t M, index_t N, index_t K,
                 bool accumulate) {
    const PackedLayout<Blk> layout(K, N);
    const int threads = 2.0 * M * N * K >= 4e6 ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int part = 0; part < threads; ++part) {
        T* packed_a = scratch<T>(Blk::MC * layout.kc_max, 0);
        for (index_t j0 = 0; j0 < N; j0 += Blk::NC) {
            const index_t nc = std::min(Blk::NC, N - j0), slivers = ceil_div(nc, Blk::NR);
            const index_t s0 = slivers * part / threads, s1 = slivers * (part + 1) / threads;
            for (index_t k0 = 0; k0 < K && s0 < s1; k0 += layout.kc_max) {
                const index_t kc = std::min(layout.kc_max, K - k0);
                const T* slice = packed + layout.slot(j0 / Blk::NC, k0 / layout.kc_max);
                for (index_t i0 = 0; i0 < M; i0 += Blk::MC) {
                    const index_t rows = std::min(Blk::MC, M - i0);
                    pack_a<Blk>(a, as.row, as.col, i0, k0, rows, kc, packed_a);
                    run_macro(Blk{}, rows, nc, kc, s0, s1, packed_a, slice, c + i0 * ldc + j0, ldc,
                              /*accumulate=*/accumulate || k0 > 0);
                }
            }
        }
    }
}

#if MINIDL_X86_DISPATCH
bool has_avx512() {
    static const bool avx512 = __builtin_cpu_supports("x86-64-v4");
    return avx512;
}
#endif

}  // namespace

template <typename T>
void matmul(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, const Strides& cs, index_t batch,
            index_t M, index_t N, index_t K, bool accumulate) {
    matmul_dispatch(a, as, b, bs, c, cs, batch, M, N, K, accumulate);
}
template void matmul<float>(const float*, const Strides&, const float*, const Strides&, float*, const Strides&,
                            index_t, index_t, index_t, index_t, bool);
template void matmul<double>(const double*, const Strides&, const double*, const Strides&, double*, const Strides&,
                             index_t, index_t, index_t, index_t, bool);

// minidl._C.matmul (its line in bindings.cpp): out (batch, M, N), C-contiguous, = a @ b, with a
// (batch, M, K) and b (batch, K, N) read through their strides (minidl.backend.cpu.matmul
// checks the shapes, broadcasts batch dims and allocates out).
template <typename T>
void matmul(Matrix<const T> a, Matrix<const T> b, T* out) {
    matmul(a.data, a.strides, b.data, b.strides, out, Strides{a.rows * b.cols, b.cols, 1}, a.batch, a.rows, b.cols,
           a.cols);
}
template void matmul<float>(Matrix<const float>, Matrix<const float>, float*);
template void matmul<double>(Matrix<const double>, Matrix<const double>, double*);

template <typename T>
PackedMatrix<T>::PackedMatrix(const T* b, const Strides& bs, index_t K, index_t N) : rows(K), cols(N) {
#if MINIDL_X86_DISPATCH
    if (has_avx512()) {
        data.reset(new T[PackedLayout<Avx512Blocking<T>>(K, N).size(N)]);
        pack_whole_b<Avx512Blocking<T>>(b, bs, K, N, data.get());
        return;
    }
#endif
    data.reset(new T[PackedLayout<Avx2Blocking<T>>(K, N).size(N)]);
    pack_whole_b<Avx2Blocking<T>>(b, bs, K, N, data.get());
}

template <typename T>
void matmul(const T* a, const Strides& as, const PackedMatrix<T>& b, T* c, index_t ldc, index_t M, bool accumulate) {
    const index_t K = b.rows, N = b.cols;
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (index_t i = 0; i < M; ++i) std::fill_n(c + i * ldc, N, T(0));
        return;
    }
#if MINIDL_X86_DISPATCH
    if (has_avx512()) return gemm_packed<Avx512Blocking<T>>(a, as, b.data.get(), c, ldc, M, N, K, accumulate);
#endif
    gemm_packed<Avx2Blocking<T>>(a, as, b.data.get(), c, ldc, M, N, K, accumulate);
}
template struct PackedMatrix<float>;
template struct PackedMatrix<double>;
template void matmul<float>(const float*, const Strides&, const PackedMatrix<float>&, float*, index_t, index_t, bool);
template void matmul<double>(const double*, const Strides&, const PackedMatrix<double>&, double*, index_t, index_t,
                             bool);

}  // namespace minidl
