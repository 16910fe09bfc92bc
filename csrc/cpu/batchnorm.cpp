// csrc/cpu/batchnorm.cpp — batch normalisation (training statistics) forward and backward.
//
// What:   x viewed as (N, C, S) (S = the product of the spatial dims); per channel c over
//         its M = N*S values:
//           forward:  mean, var (biased), invstd = 1/sqrt(var + eps),
//                     y = (x - mean) * invstd * weight + bias
//           backward: dbias = sum g, dweight = sum g*xhat,
//                     dx = weight*invstd/M * (M*g - dbias - xhat*dweight)
//         Sums are accumulated in double (also for float32), two passes over x for the
//         statistics (mean, then sum (x - mean)^2: no cancellation), one more for y.
// FLOPs:  ~8 per element forward, ~10 backward.
// Bytes:  forward sizeof(T) * (3 reads + 1 write) * N*C*S; backward (2 + 2 reads, 1 write).
// Threads: OpenMP over channels (each channel's sums in one thread: deterministic).
// Reference: `batch_norm`, `batch_norm_backward` in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k batch_norm
#include "kernels.h"

#include <cmath>

namespace minidl {
namespace {

using index_t = std::int64_t;

template <typename T>
void batch_norm_impl(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* var, T* invstd,
                     index_t N, index_t C, index_t S) {
    const double M = double(N * S);
#pragma omp parallel for schedule(dynamic, 1) if (N * C * S >= (1 << 15)) num_threads(num_threads())
    for (index_t c = 0; c < C; ++c) {
        double sum = 0;
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + (n * C + c) * S;
            double s = 0;
            for (index_t i = 0; i < S; ++i) s += p[i];
            sum += s;
        }
        const double mu = sum / M;
        double sq = 0;
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + (n * C + c) * S;
            double s = 0;
            for (index_t i = 0; i < S; ++i) { const double d = p[i] - mu; s += d * d; }
            sq += s;
        }
        const T m = T(mu), v = T(sq / M), is = T(1 / std::sqrt(sq / M + eps));
        mean[c] = m;
        var[c] = v;
        invstd[c] = is;
        const T wc = w[c], bc = b[c];
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + (n * C + c) * S;
            T* q = y + (n * C + c) * S;
            for (index_t i = 0; i < S; ++i) q[i] = (p[i] - m) * is * wc + bc;
        }
    }
}

template <typename T>
void batch_norm_backward_impl(const T* g, const T* x, const T* w, const T* mean, const T* invstd, T* dx, T* dw,
                              T* db, index_t N, index_t C, index_t S) {
    const index_t M = N * S;
#pragma omp parallel for schedule(dynamic, 1) if (N * C * S >= (1 << 15)) num_threads(num_threads())
    for (index_t c = 0; c < C; ++c) {
        const T m = mean[c], is = invstd[c];
        double sg = 0, sgx = 0;
        for (index_t n = 0; n < N; ++n) {
            const T* gp = g + (n * C + c) * S;
            const T* xp = x + (n * C + c) * S;
            double a = 0, bsum = 0;
            for (index_t i = 0; i < S; ++i) { a += gp[i]; bsum += double(gp[i]) * double((xp[i] - m) * is); }
            sg += a;
            sgx += bsum;
        }
        db[c] = T(sg);
        dw[c] = T(sgx);
        const T scale = T(double(w[c]) * double(is) / double(M)), Mt = T(M), dbc = T(sg), dwc = T(sgx);
        for (index_t n = 0; n < N; ++n) {
            const T* gp = g + (n * C + c) * S;
            const T* xp = x + (n * C + c) * S;
            T* q = dx + (n * C + c) * S;
            for (index_t i = 0; i < S; ++i) q[i] = scale * (Mt * gp[i] - dbc - (xp[i] - m) * is * dwc);
        }
    }
}

}  // namespace

void batch_norm(const float* x, const float* w, const float* b, double eps, float* y, float* mean, float* var,
                float* invstd, std::int64_t N, std::int64_t C, std::int64_t S) {
    batch_norm_impl(x, w, b, eps, y, mean, var, invstd, N, C, S);
}
void batch_norm(const double* x, const double* w, const double* b, double eps, double* y, double* mean,
                double* var, double* invstd, std::int64_t N, std::int64_t C, std::int64_t S) {
    batch_norm_impl(x, w, b, eps, y, mean, var, invstd, N, C, S);
}
void batch_norm_backward(const float* g, const float* x, const float* w, const float* mean, const float* invstd,
                         float* dx, float* dw, float* db, std::int64_t N, std::int64_t C, std::int64_t S) {
    batch_norm_backward_impl(g, x, w, mean, invstd, dx, dw, db, N, C, S);
}
void batch_norm_backward(const double* g, const double* x, const double* w, const double* mean,
                         const double* invstd, double* dx, double* dw, double* db, std::int64_t N, std::int64_t C,
                         std::int64_t S) {
    batch_norm_backward_impl(g, x, w, mean, invstd, dx, dw, db, N, C, S);
}

}  // namespace minidl
