// csrc/cpu/batchnorm.cpp — batch normalisation forward and backward: with the batch's statistics
// (training), and with fixed ones (evaluation: a per-channel affine map + activation).
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
// Layout: with S > 1 each channel's values lie in runs of S, and one channel at a time
//         is fine.  With S == 1 (BatchNorm1d on (N, C): the tabular model's 1024 x 200)
//         one channel's values are C apart: walking them one channel at a time touches a
//         new cache line per value (2.2 ms per step at batch 1024, the training step's
//         second most expensive kernel).  So for S == 1 the loops run row by row over a
//         block of channels (batch_norm_rows below): unit stride, vectorised across
//         channels, one block per thread.
// Measured (1 thread, float32, vs numpy_ref, a busy shared VM): (1024, 200) forward 2.6-3x
//         faster, backward 3.2-3.4x;
//         (32, 16, 32, 32) 2.2-2.7x / 2.9-3.8x.
//
// Evaluation mode (channel_affine): the statistics are fixed, so batch norm is the affine
// map y = act(x * scale[c] + shift[c]), with the activation that follows it (none, ReLU or
// ReLU6) in the same pass -- a "bias + activation" kernel with a per-channel scale.
//           forward:  one pass, read x, write y
//           backward: gm = g where act passes (y > 0; 0 < y < 6 for ReLU6), else 0;
//                     dx = gm * scale, dscale = sum gm * x, dshift = sum gm (per channel)
//         In numpy this is three broadcast passes forward (sub, mul, add) and five
//         backward, each with a fresh array: half of EfficientNet-Lite0's training step
//         with its batch norms frozen in eval mode (the pets example), before this kernel.
// Bytes:  forward sizeof(T) * 2 * N*C*S; backward sizeof(T) * 4 * N*C*S (3 with no activation).
// Threads: over (n, c) planes; the backward adds each channel's plane sums in a fixed
//         order (deterministic).
// Reference: `batch_norm`, `batch_norm_backward`, `channel_affine`, `channel_affine_backward`
//         in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "batch_norm or channel_affine"
// Bench:  .venv/bin/python -m benchmarks.bench_ops
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace minidl {
namespace {

// Split C channels into one block per thread (blocks of >= 16 channels, so that a row
// of a block fills some cache lines); body(c0, c1) handles channels [c0, c1).
template <typename Body>
void over_channel_blocks(index_t N, index_t C, Body body) {
    const index_t blocks = N * C >= (1 << 15) ? std::max<index_t>(1, std::min<index_t>(num_threads(), C / 16)) : 1;
#pragma omp parallel for schedule(static) num_threads(int(blocks)) if (blocks > 1)
    for (index_t i = 0; i < blocks; ++i) body(C * i / blocks, C * (i + 1) / blocks);
}

// batch_norm for x of shape (N, C) (S == 1), row by row; sums in double as below.
template <typename T>
void batch_norm_rows(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* var, T* invstd, index_t N,
                     index_t C) {
    over_channel_blocks(N, C, [&](index_t c0, index_t c1) {
        const index_t nc = c1 - c0;
        std::vector<double> sum(nc, 0.0), sq(nc, 0.0);
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + n * C + c0;
            for (index_t c = 0; c < nc; ++c) sum[c] += p[c];
        }
        for (index_t c = 0; c < nc; ++c) sum[c] /= double(N);  // now the mean
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + n * C + c0;
            for (index_t c = 0; c < nc; ++c) { const double d = p[c] - sum[c]; sq[c] += d * d; }
        }
        // y = (x - mean) * scale + b with scale = invstd * w.  (Folding the mean into the
        // shift, y = x * scale + shift, saves one subtraction but cancels digits when the
        // mean is large compared with the spread.)
        std::vector<T> mu(nc), scale(nc);
        for (index_t c = 0; c < nc; ++c) {
            const double v = sq[c] / double(N), is = 1 / std::sqrt(v + eps);
            mu[c] = mean[c0 + c] = T(sum[c]);
            var[c0 + c] = T(v);
            invstd[c0 + c] = T(is);
            scale[c] = T(is * double(w[c0 + c]));
        }
        const T* bc = b + c0;
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + n * C + c0;
            T* q = y + n * C + c0;
            for (index_t c = 0; c < nc; ++c) q[c] = (p[c] - mu[c]) * scale[c] + bc[c];
        }
    });
}

// batch_norm_backward for (N, C), row by row.
template <typename T>
void batch_norm_backward_rows(const T* g, const T* x, const T* w, const T* mean, const T* invstd, T* dx, T* dw,
                              T* db, index_t N, index_t C) {
    over_channel_blocks(N, C, [&](index_t c0, index_t c1) {
        const index_t nc = c1 - c0;
        std::vector<double> sg(nc, 0.0), sgx(nc, 0.0);
        const T *m = mean + c0, *is = invstd + c0;
        for (index_t n = 0; n < N; ++n) {
            const T *gp = g + n * C + c0, *xp = x + n * C + c0;
            for (index_t c = 0; c < nc; ++c) {
                sg[c] += gp[c];
                sgx[c] += double(gp[c]) * double((xp[c] - m[c]) * is[c]);
            }
        }
        // dx = scale * (M g - dbias - xhat dweight) = a g + bx (x - mean) + k, per channel:
        //   a = scale * M,  bx = -scale * invstd * dweight,  k = -scale * dbias
        std::vector<T> a(nc), bx(nc), k(nc);
        for (index_t c = 0; c < nc; ++c) {
            db[c0 + c] = T(sg[c]);
            dw[c0 + c] = T(sgx[c]);
            const double scale = double(w[c0 + c]) * double(is[c]) / double(N);
            a[c] = T(scale * double(N));
            bx[c] = T(-scale * double(is[c]) * sgx[c]);
            k[c] = T(-scale * sg[c]);
        }
        for (index_t n = 0; n < N; ++n) {
            const T *gp = g + n * C + c0, *xp = x + n * C + c0;
            T* q = dx + n * C + c0;
            for (index_t c = 0; c < nc; ++c) q[c] = a[c] * gp[c] + bx[c] * (xp[c] - m[c]) + k[c];
        }
    });
}

template <typename T>
void batch_norm_impl(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* var, T* invstd,
                     index_t N, index_t C, index_t S) {
    if (S == 1) return batch_norm_rows(x, w, b, eps, y, mean, var, invstd, N, C);
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
    if (S == 1) return batch_norm_backward_rows(g, x, w, mean, invstd, dx, dw, db, N, C);
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


// ---------------------------------------------------------------- evaluation mode: channel_affine

// The activations (ACT_NONE, ACT_RELU, ACT_RELU6) and the gradient each passes, activate<Act> and
// activation_passes<Act>: csrc/common/activation.h, the table the CUDA kernels share.

// g[i] where the activation passes the gradient (judged by its output y[i]), else 0; y is
// not read without an activation.  Both loads come first, unconditionally: a load
// inside the select would be control flow, which stops GCC from vectorising the loop.
template <int Act, typename T>
inline T gated(const T* g, const T* y, index_t i) {
    const T gv = g[i];
    if (Act == ACT_NONE) return gv;
    const T yv = y[i];
    return activation_passes<Act>(yv) ? gv : T(0);
}

// y[i] = act(x[i] * a + b) over one run of n values of one channel.
template <int Act, typename T>
inline void affine_run(const T* MINIDL_RESTRICT x, T a, T b, T* MINIDL_RESTRICT y, index_t n) {
    for (index_t i = 0; i < n; ++i) y[i] = activate<Act>(x[i] * a + b);
}

// One run of the backward: dx = gm * a, and the run's sums of gm and gm * x in sg, sgx.
// The sums go through 16 independent partial sums (the lanes of a vector: one running
// sum would make every add wait for the last), added up as a tree at the end.
template <int Act, typename T>
inline void affine_backward_run(const T* MINIDL_RESTRICT g, const T* MINIDL_RESTRICT x, const T* MINIDL_RESTRICT y,
                                T a, T* MINIDL_RESTRICT dx, index_t n, double& sg, double& sgx) {
    constexpr int L = 16;
    T pg[L] = {}, pgx[L] = {};
    index_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) {
            const T gm = gated<Act>(g, y, i + l);
            dx[i + l] = gm * a;
            pg[l] += gm;
            pgx[l] += gm * x[i + l];
        }
    for (; i < n; ++i) {
        const T gm = gated<Act>(g, y, i);
        dx[i] = gm * a;
        pg[i % L] += gm;
        pgx[i % L] += gm * x[i];
    }
    for (int w = L / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) { pg[l] += pg[l + w]; pgx[l] += pgx[l + w]; }
    sg = pg[0];
    sgx = pgx[0];
}

// The run functions for each activation, compiled also for AVX2 and AVX-512 (picked at
// load time; GCC's target_clones takes plain functions, hence one per dtype).
#define MINIDL_AFFINE_RUNS(T, SUFFIX)                                                                          \
    MINIDL_CLONES void affine_run_##SUFFIX(int act, const T* x, T a, T b, T* y, index_t n) {                   \
        if (act == ACT_RELU) affine_run<ACT_RELU>(x, a, b, y, n);                                              \
        else if (act == ACT_RELU6) affine_run<ACT_RELU6>(x, a, b, y, n);                                       \
        else affine_run<ACT_NONE>(x, a, b, y, n);                                                              \
    }                                                                                                          \
    MINIDL_CLONES void affine_backward_run_##SUFFIX(int act, const T* g, const T* x, const T* y, T a, T* dx,   \
                                                     index_t n, double& sg, double& sgx) {                     \
        if (act == ACT_RELU) affine_backward_run<ACT_RELU>(g, x, y, a, dx, n, sg, sgx);                        \
        else if (act == ACT_RELU6) affine_backward_run<ACT_RELU6>(g, x, y, a, dx, n, sg, sgx);                 \
        else affine_backward_run<ACT_NONE>(g, x, y, a, dx, n, sg, sgx);                                        \
    }                                                                                                          \
    inline void affine_run_best(int act, const T* x, T a, T b, T* y, index_t n) {                              \
        affine_run_##SUFFIX(act, x, a, b, y, n);                                                               \
    }                                                                                                          \
    inline void affine_backward_run_best(int act, const T* g, const T* x, const T* y, T a, T* dx, index_t n,   \
                                         double& sg, double& sgx) {                                            \
        affine_backward_run_##SUFFIX(act, g, x, y, a, dx, n, sg, sgx);                                         \
    }
MINIDL_AFFINE_RUNS(float, f32)
MINIDL_AFFINE_RUNS(double, f64)
#undef MINIDL_AFFINE_RUNS

// (N, C) input (S == 1): row by row over a block of channels, unit stride (see batch_norm_rows).
template <int Act, typename T>
void channel_affine_rows(const T* x, const T* a, const T* b, T* y, index_t N, index_t C) {
    over_channel_blocks(N, C, [&](index_t c0, index_t c1) {
        for (index_t n = 0; n < N; ++n) {
            const T* p = x + n * C;
            T* q = y + n * C;
            for (index_t c = c0; c < c1; ++c) q[c] = activate<Act>(p[c] * a[c] + b[c]);
        }
    });
}

// One row of (N, C) input, channels side by side: the row's gm and gm * x are added to
// the per-channel partial sums pg, pgx (in T: one pass of plain vector adds; the caller
// moves them into double every RUN rows).  ivdep: the arrays do not overlap (without it
// GCC guards its vector loop with overlap checks and ran the scalar one: 3 ns a value).
template <int Act, typename T>
inline void affine_backward_row(const T* g, const T* x, const T* y, const T* a, T* dx, T* pg, T* pgx, index_t n) {
#pragma GCC ivdep
    for (index_t c = 0; c < n; ++c) {
        const T gm = gated<Act>(g, y, c);
        dx[c] = gm * a[c];
        pg[c] += gm;
        pgx[c] += gm * x[c];
    }
}

template <int Act, typename T>
void channel_affine_backward_rows(const T* g, const T* x, const T* y, const T* a, T* dx, T* da, T* db, index_t N,
                                  index_t C) {
    constexpr index_t RUN = 64;  // rows summed in T before their sums go into double
    over_channel_blocks(N, C, [&](index_t c0, index_t c1) {
        const index_t nc = c1 - c0;
        std::vector<double> sg(nc, 0.0), sgx(nc, 0.0);
        std::vector<T> pg(nc), pgx(nc);
        for (index_t n0 = 0; n0 < N; n0 += RUN) {
            std::fill(pg.begin(), pg.end(), T(0));
            std::fill(pgx.begin(), pgx.end(), T(0));
            for (index_t n = n0; n < std::min(N, n0 + RUN); ++n) {
                const index_t r = n * C + c0;
                affine_backward_row<Act>(g + r, x + r, y ? y + r : nullptr, a + c0, dx + r, pg.data(), pgx.data(), nc);
            }
            for (index_t c = 0; c < nc; ++c) { sg[c] += pg[c]; sgx[c] += pgx[c]; }
        }
        for (index_t c = 0; c < nc; ++c) { db[c0 + c] = T(sg[c]); da[c0 + c] = T(sgx[c]); }
    });
}

template <typename T>
void channel_affine_impl(const T* x, const T* a, const T* b, int act, T* y, index_t N, index_t C, index_t S) {
    if (S == 1) {
        if (act == ACT_RELU) return channel_affine_rows<ACT_RELU>(x, a, b, y, N, C);
        if (act == ACT_RELU6) return channel_affine_rows<ACT_RELU6>(x, a, b, y, N, C);
        return channel_affine_rows<ACT_NONE>(x, a, b, y, N, C);
    }
#pragma omp parallel for schedule(static) if (N * C * S >= (1 << 15)) num_threads(num_threads())
    for (index_t p = 0; p < N * C; ++p) affine_run_best(act, x + p * S, a[p % C], b[p % C], y + p * S, S);
}

template <typename T>
void channel_affine_backward_impl(const T* g, const T* x, const T* y, const T* a, int act, T* dx, T* da, T* db,
                                  index_t N, index_t C, index_t S) {
    if (S == 1) {
        if (act == ACT_RELU) return channel_affine_backward_rows<ACT_RELU>(g, x, y, a, dx, da, db, N, C);
        if (act == ACT_RELU6) return channel_affine_backward_rows<ACT_RELU6>(g, x, y, a, dx, da, db, N, C);
        return channel_affine_backward_rows<ACT_NONE>(g, x, y, a, dx, da, db, N, C);
    }
    // Each (n, c) plane on its own (the threads stream through memory in order, as in the
    // forward), its sums kept; then each channel's N plane sums added in order of n:
    // the same result for any number of threads.
    std::vector<double> sums(2 * N * C);
#pragma omp parallel for schedule(static) if (N * C * S >= (1 << 15)) num_threads(num_threads())
    for (index_t p = 0; p < N * C; ++p)
        affine_backward_run_best(act, g + p * S, x + p * S, y ? y + p * S : nullptr, a[p % C], dx + p * S, S,
                                 sums[2 * p], sums[2 * p + 1]);
    for (index_t c = 0; c < C; ++c) {
        double sg = 0, sgx = 0;
        for (index_t n = 0; n < N; ++n) { sg += sums[2 * (n * C + c)]; sgx += sums[2 * (n * C + c) + 1]; }
        db[c] = T(sg);
        da[c] = T(sgx);
    }
}

// std::invalid_argument (Python's ValueError) for an activation code that is not in
// csrc/common/activation.h: the code selects the loop, so it is checked here.
void check_activation(const char* op, int act) {
    if (!is_activation(act))
        throw std::invalid_argument(std::string(op) + ": activation code " + std::to_string(act) +
                                    " is not 0 (none), 1 (relu) or 2 (relu6)");
}

}  // namespace

template <typename T>
void batch_norm(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* var, T* invstd, index_t N,
                index_t C, index_t S) {
    batch_norm_impl(x, w, b, eps, y, mean, var, invstd, N, C, S);
}
MINIDL_FLOAT_KERNEL(batch_norm)

template <typename T>
void batch_norm_backward(const T* g, const T* x, const T* w, const T* mean, const T* invstd, T* dx, T* dw, T* db,
                         index_t N, index_t C, index_t S) {
    batch_norm_backward_impl(g, x, w, mean, invstd, dx, dw, db, N, C, S);
}
MINIDL_FLOAT_KERNEL(batch_norm_backward)

template <typename T>
void channel_affine(const T* x, const T* a, const T* b, int act, T* y, index_t N, index_t C, index_t S) {
    check_activation("channel_affine", act);
    channel_affine_impl(x, a, b, act, y, N, C, S);
}
MINIDL_FLOAT_KERNEL(channel_affine)

template <typename T>
void channel_affine_backward(const T* g, const T* x, const T* y, const T* a, int act, T* dx, T* da, T* db, index_t N,
                             index_t C, index_t S) {
    check_activation("channel_affine_backward", act);
    channel_affine_backward_impl(g, x, y, a, act, dx, da, db, N, C, S);
}
MINIDL_FLOAT_KERNEL(channel_affine_backward)

}  // namespace minidl
