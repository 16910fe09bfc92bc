// csrc/cpu/softmax.cpp — softmax and log-softmax over the last axis, float32 and float64.
//
// What:   per row r of x viewed as (R, D):  m = max_j x[r, j]
//           softmax:     y = e^(x - m) / sum_j e^(x - m)
//           log_softmax: y = x - (m' + log sum_j e^(x - m')),  m' = m if finite else 0
//         (numpy_ref's formulas, including its NaN / inf behaviour).
// FLOPs:  ~D exps + 3D per row.  Bytes: sizeof(T) * R * D * (2 reads + 1 write) (softmax
//         writes e then rescales it in the output, which stays in cache for moderate D).
// Threads: OpenMP over rows.
// Reference: `softmax`, `log_softmax` in minidl/backend/numpy_ref.py (cpu.py sends other
//         axes there).
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k softmax
#include "kernels.h"

#include <cmath>

namespace minidl {
namespace {

using index_t = std::int64_t;

template <typename T>
inline T row_max(const T* x, index_t D) {
    T m = x[0];
    for (index_t j = 1; j < D; ++j)
        if (x[j] > m || std::isnan(x[j])) m = x[j];  // NaN wins, as in numpy.max
    return m;
}

template <typename T>
void softmax_impl(const T* x, T* y, index_t R, index_t D, bool log) {
#pragma omp parallel for schedule(static) if (R * D >= (1 << 14)) num_threads(num_threads())
    for (index_t r = 0; r < R; ++r) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        T m = row_max(xr, D);
        if (log) {
            if (!std::isfinite(m)) m = 0;
            T s = 0;
            for (index_t j = 0; j < D; ++j) s += std::exp(xr[j] - m);
            const T lse = m + std::log(s);
            for (index_t j = 0; j < D; ++j) yr[j] = xr[j] - lse;
        } else {
            T s = 0;
            for (index_t j = 0; j < D; ++j) { const T e = std::exp(xr[j] - m); yr[j] = e; s += e; }
            for (index_t j = 0; j < D; ++j) yr[j] = yr[j] / s;
        }
    }
}

}  // namespace

void softmax(const float* x, float* y, std::int64_t R, std::int64_t D, bool log) { softmax_impl(x, y, R, D, log); }
void softmax(const double* x, double* y, std::int64_t R, std::int64_t D, bool log) { softmax_impl(x, y, R, D, log); }

}  // namespace minidl
