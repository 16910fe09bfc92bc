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
// Why our own exp: std::exp is a scalar libm call per element, and GCC only swaps in its
// vector math library (libmvec) under -ffast-math, which would also break the NaN and inf
// semantics every other kernel keeps.  numpy has a hand-vectorised AVX-512 exp, so with
// std::exp this file ran 1.2-1.8x *slower* than numpy.  exp_poly below is plain
// arithmetic (no calls, no branches), which GCC vectorises like any other loop:
//
//   e^x = 2^n * e^r     n = round(x / ln 2),  r = x - n ln 2  in [-ln2/2, ln2/2]
//   e^r ~ the Taylor polynomial of degree 7 (float) or 13 (double), whose truncation
//         error r^(d+1)/(d+1)! at |r| = 0.347 is 5e-9 (float) / 4e-18 (double): below
//         half an ulp, so the result is within ~2 ulp of the exact e^x.
//   2^n  is built by writing n + bias into the exponent bits of a float.
//   round(x / ln 2) with the "shifter" trick: adding 1.5 * 2^23 (float) rounds to an
//         integer, and that integer is then the low bits of the sum's mantissa.
//   ln 2 is split into a short high part (n * ln2_hi is exact) and a low correction
//         (Cody and Waite's trick), so r loses no precision for large |x|.
// Results below the smallest normal float (x < -87.3; -708.3 for double) are flushed to 0
// (libm returns denormals there; softmax's outputs differ by < 1e-38 absolute).
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

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace minidl {
namespace {

template <typename T> struct ExpConsts;
template <> struct ExpConsts<float> {
    using Bits = std::int32_t;
    static constexpr int mantissa_bits = 23, bias = 127, degree = 7;
    static constexpr float shifter = 12582912.0f;                  // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    static constexpr float lo = -87.3f, hi = 88.0f;                // 2^n stays a normal float
};
template <> struct ExpConsts<double> {
    using Bits = std::int64_t;
    static constexpr int mantissa_bits = 52, bias = 1023, degree = 13;
    static constexpr double shifter = 6755399441055744.0;          // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static constexpr double lo = -708.3, hi = 709.0;
};

// The Taylor coefficients 1/k!, k = 0..D, computed at compile time.
template <typename T, int D>
struct InvFactorials {
    T c[D + 1];
    constexpr InvFactorials() : c() {
        c[0] = T(1);
        for (int k = 1; k <= D; ++k) c[k] = c[k - 1] / T(k);
    }
};

// e^x without a library call (see the header).  NaN in, NaN out; +inf and x > hi give inf.
template <typename T>
inline T exp_poly(T x) {
    using E = ExpConsts<T>;
    using Bits = typename E::Bits;
    const T xc = x < E::lo ? E::lo : (x > E::hi ? E::hi : x);      // NaN passes through
    const T t = xc * T(1.4426950408889634) + E::shifter;           // log2(e)
    const T n = t - E::shifter;                                    // round(x / ln 2)
    const T r = (xc - n * E::ln2_hi) - n * E::ln2_lo;
    static constexpr InvFactorials<T, E::degree> taylor{};
    T p = taylor.c[E::degree];                                     // Horner: sum_k r^k / k!
#pragma GCC unroll 16
    for (int k = E::degree - 1; k >= 0; --k) p = p * r + taylor.c[k];
    Bits tb, sb;
    std::memcpy(&tb, &t, sizeof t);
    const T shifter = E::shifter;
    std::memcpy(&sb, &shifter, sizeof sb);
    const Bits scale_bits = (tb - sb + E::bias) << E::mantissa_bits;  // the bits of 2^n
    T scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    const T y = p * scale;
    return x < E::lo ? T(0) : (x > E::hi ? std::numeric_limits<T>::infinity() : y);
}

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
