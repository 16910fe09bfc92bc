// csrc/cpu/softmax.cpp — softmax, log-softmax and cross-entropy over the last axis,
// float32 and float64, with an exp that the compiler vectorises.
//
// What:   per row r of x viewed as (R, D):  m = max_j x[r, j]
//           softmax:       y = e^(x - m) / sum_j e^(x - m)
//           log_softmax:   y = x - lse,  lse = m' + log sum_j e^(x - m'),  m' = m if finite else 0
//           cross_entropy: loss[r] = lse[r] - x[r, t[r]]                  (t: the target class)
//                          and its gradient dlogits[r, j] = softmax(x[r])_j - [j == t[r]]
//                          (the op's backward only scales it by dL/dloss[r])
//         (numpy_ref's formulas, including their NaN / inf behaviour).
// FLOPs:  ~D exps (~12 FLOPs each) + 4D per row.
// Bytes:  sizeof(T) * R * D * (2 reads + 1 write); the row stays in L1 between passes.
// Threads: OpenMP over rows, for R * D >= 32K (below that, waking a thread costs more).
// Reference: `softmax`, `log_softmax`, `cross_entropy` in
//         minidl/backend/numpy_ref.py (cpu.py sends other axes there).
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "softmax or cross_entropy"
// Bench:  .venv/bin/python -m benchmarks.bench_ops
//
// Why our own exp: std::exp is a scalar libm call per element; numpy has a hand-vectorised
// AVX-512 exp, so with std::exp this file ran 1.2-1.8x *slower* than numpy.  exp_poly
// (exp_poly.h) is plain arithmetic, which GCC vectorises like any other loop.
//
// Measured (1 thread, float32, vs numpy_ref on the same machine, a busy shared VM: +-30%):
//   softmax (256, 1000) 3.3-4.3x faster, (4096, 512) ~4x; log_softmax 1.2-2.7x;
//   cross_entropy (loss and gradient, against numpy_ref's) 1.6-2x; rows of 2 classes
//   (the tabular model's logits) ~1-1.3x at batch 1024 and ~2.5x at batch 64, where
//   numpy's ~10 ufunc calls cost more than the work.  (With std::exp: 0.5-0.8x.)
//
// The row functions are compiled for AVX-512, AVX2 and baseline x86-64 and the best is
// picked at run time (GCC's target_clones, compiler.h); the build stays portable.
#include "kernels.h"
#include "exp_poly.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace minidl {
namespace {

// max_j x[j] (NaNs are ignored here; they reach every output through e^(x - m) anyway).
template <typename T>
inline T row_max(const T* x, index_t D) {
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (index_t j = 0; j < D; ++j) m = x[j] > m ? x[j] : m;
    return m;
}

// y[j] = e^(x[j] - shift); returns sum_j y[j].
template <typename T>
inline T exp_shifted(const T* x, T shift, T* y, index_t D) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (index_t j = 0; j < D; ++j) {
        const T e = exp_poly(x[j] - shift);
        y[j] = e;
        s += e;
    }
    return s;
}

// sum_j e^(x[j] - shift), nothing stored.
template <typename T>
inline T sum_exp(const T* x, T shift, index_t D) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (index_t j = 0; j < D; ++j) s += exp_poly(x[j] - shift);
    return s;
}

// log sum_j e^x[j], with log_softmax's shift m' (the max if finite, else 0).
template <typename T>
inline T row_logsumexp(const T* x, index_t D) {
    T m = row_max(x, D);
    if (!std::isfinite(m)) m = 0;
    return m + std::log(sum_exp(x, m, D));  // a NaN in the row makes the sum NaN, as in numpy
}

template <typename T>
inline void softmax_row(const T* x, T* y, index_t D) {
    T m = row_max(x, D);
    const T inv = T(1) / exp_shifted(x, m, y, D);
#pragma omp simd
    for (index_t j = 0; j < D; ++j) y[j] *= inv;
}

template <typename T>
inline void log_softmax_row(const T* x, T* y, index_t D) {
    const T lse = row_logsumexp(x, D);
#pragma omp simd
    for (index_t j = 0; j < D; ++j) y[j] = x[j] - lse;
}

// One function per (dtype, job) so that target_clones can pick its instruction set.
MINIDL_CLONES void softmax_rows_f32(const float* x, float* y, index_t r0, index_t r1, index_t D, bool log) {
    for (index_t r = r0; r < r1; ++r)
        log ? log_softmax_row(x + r * D, y + r * D, D) : softmax_row(x + r * D, y + r * D, D);
}
MINIDL_CLONES void softmax_rows_f64(const double* x, double* y, index_t r0, index_t r1, index_t D, bool log) {
    for (index_t r = r0; r < r1; ++r)
        log ? log_softmax_row(x + r * D, y + r * D, D) : softmax_row(x + r * D, y + r * D, D);
}
void softmax_rows(const float* x, float* y, index_t r0, index_t r1, index_t D, bool log) {
    softmax_rows_f32(x, y, r0, r1, D, log);
}
void softmax_rows(const double* x, double* y, index_t r0, index_t r1, index_t D, bool log) {
    softmax_rows_f64(x, y, r0, r1, D, log);
}

template <typename T>
inline void cross_entropy_rows(const T* x, const std::int64_t* t, T* loss, T* dlogits, index_t r0, index_t r1,
                               index_t D) {
    for (index_t r = r0; r < r1; ++r) {
        const T *xr = x + r * D;
        T* dr = dlogits + r * D;
        T m = row_max(xr, D);
        if (!std::isfinite(m)) m = 0;                  // log_softmax's shift
        const T s = exp_shifted(xr, m, dr, D);         // dr = e^(x - m)
        loss[r] = m + std::log(s) - xr[t[r]];
        const T inv = T(1) / s;
#pragma omp simd
        for (index_t j = 0; j < D; ++j) dr[j] *= inv;  // softmax
        dr[t[r]] -= T(1);
    }
}
MINIDL_CLONES void ce_rows_f32(const float* x, const std::int64_t* t, float* loss, float* dlogits, index_t r0,
                               index_t r1, index_t D) {
    cross_entropy_rows(x, t, loss, dlogits, r0, r1, D);
}
MINIDL_CLONES void ce_rows_f64(const double* x, const std::int64_t* t, double* loss, double* dlogits, index_t r0,
                               index_t r1, index_t D) {
    cross_entropy_rows(x, t, loss, dlogits, r0, r1, D);
}
void ce_rows(const float* x, const std::int64_t* t, float* l, float* d, index_t r0, index_t r1, index_t D) {
    ce_rows_f32(x, t, l, d, r0, r1, D);
}
void ce_rows(const double* x, const std::int64_t* t, double* l, double* d, index_t r0, index_t r1, index_t D) {
    ce_rows_f64(x, t, l, d, r0, r1, D);
}

// Run body(r0, r1) over [0, R) in one block of rows per thread (rows cost the same).
template <typename Body>
void over_rows(index_t R, index_t D, Body body) {
    const int threads = R * D >= (1 << 15) && R > 1 ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int i = 0; i < threads; ++i) body(R * i / threads, R * (i + 1) / threads);
}

}  // namespace

// Over the rows of x viewed as (R, D): softmax (log = false) or log-softmax (log = true).
template <typename T>
void softmax(const T* x, T* y, index_t R, index_t D, bool log) {
    if (D) over_rows(R, D, [&](index_t r0, index_t r1) { softmax_rows(x, y, r0, r1, D, log); });
}
MINIDL_FLOAT_KERNEL(softmax)

// loss[r] and dlogits[r, :] against one target class t[r] per row; std::out_of_range (Python's
// IndexError) for a target outside [0, D), checked before anything is written: the kernel
// indexes with the targets, which minidl.backend.cpu does not look at.
template <typename T>
void cross_entropy(const T* x, const index_t* t, T* loss, T* dlogits, index_t R, index_t D) {
    for (index_t r = 0; r < R; ++r)
        if (t[r] < 0 || t[r] >= D)
            throw std::out_of_range("cross_entropy: target " + std::to_string(t[r]) + " is not a class index in [0, " +
                                    std::to_string(D - 1) + "]");
    over_rows(R, D, [&](index_t r0, index_t r1) { ce_rows(x, t, loss, dlogits, r0, r1, D); });
}
MINIDL_FLOAT_KERNEL(cross_entropy)

}  // namespace minidl
