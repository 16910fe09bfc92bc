// csrc/cpu/optim.cpp — fused optimizer updates (SGD with momentum, Adam/AdamW), float32 and float64.
//
// What:   one parameter's update, in place, in ONE pass over memory (numpy_ref's
//         sgd_step / adam_step make 5-10 passes and allocate temporaries):
//           sgd:  g = grad + wd*p;  buf = g (first step) | mom*buf + (1-damp)*g;
//                 p -= lr * (nesterov ? g + mom*buf : buf)      (g when mom == 0)
//           adam: p *= 1 - lr*wd (AdamW) | g = grad + wd*p (Adam);
//                 m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//                 p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)   (PyTorch's formula)
// FLOPs:  ~6 (sgd) / ~14 (adam) per element; memory-bound.
// Bytes:  sgd: sizeof(T) * n * (3 reads + 2 writes) with momentum (2 + 1 without, 2 + 2 on the
//         first step); adam: sizeof(T) * n * (4 reads + 3 writes).
// Threads: OpenMP over chunks of 16K elements, one thread below 512K elements (see
//         kParallelMin); set with _C.set_num_threads(n).
//         The per-chunk loop is multiversioned (AVX-512 / AVX2 / x86-64, compiler.h).
// Reference: `sgd_step`, `adam_step` in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "sgd or adam"
// Bench:  .venv/bin/python -m benchmarks.bench_optim   (GB/s against ~25 GB/s per core)
#include "kernels.h"

#include <algorithm>
#include <cmath>

// setup.py passes -fno-math-errno: without it std::sqrt may set errno, a side effect
// that stops GCC from vectorizing it (vsqrtps); here v >= 0, so errno is never set anyway.
#define MINIDL_NO_ERRNO

namespace minidl {
namespace {

constexpr index_t kChunk = 1 << 14;
// One thread below 512K elements (2 MB of float32 parameters): in a real training loop
// (examples/collab.py) a data-loader thread competes for the cores, and waking
// OpenMP's workers then costs more than the update of a mid-sized table takes on one
// core (measured: 0.9 ms with 2 threads against 0.2 ms with 1 for a 485K-element table).
constexpr index_t kParallelMin = 1 << 19;

template <typename T>
MINIDL_INLINE void sgd_chunk_t(T* MINIDL_RESTRICT p, const T* MINIDL_RESTRICT g, T* MINIDL_RESTRICT buf, index_t n,
                        T lr, T mom, T wd, T damp1, bool nesterov, bool first) {
    if (!buf) {  // momentum == 0
        for (index_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (first) {
        if (nesterov)
            for (index_t i = 0; i < n; ++i) { T gi = g[i] + wd * p[i]; buf[i] = gi; p[i] -= lr * (gi + mom * gi); }
        else
            for (index_t i = 0; i < n; ++i) { T gi = g[i] + wd * p[i]; buf[i] = gi; p[i] -= lr * gi; }
    } else if (nesterov) {
        for (index_t i = 0; i < n; ++i) {
            T gi = g[i] + wd * p[i];
            T b = mom * buf[i] + damp1 * gi;
            buf[i] = b;
            p[i] -= lr * (gi + mom * b);
        }
    } else {
        for (index_t i = 0; i < n; ++i) {
            T gi = g[i] + wd * p[i];
            T b = mom * buf[i] + damp1 * gi;
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

template <typename T>
MINIDL_INLINE void adam_chunk_t(T* MINIDL_RESTRICT p, const T* MINIDL_RESTRICT g, T* MINIDL_RESTRICT m, T* MINIDL_RESTRICT v,
                         index_t n, T decay, T wd, T b1, T omb1, T b2, T omb2, T inv_sqrt_bc2, T eps,
                         T step_size) {
    for (index_t i = 0; i < n; ++i) {
        T pi = p[i] * decay;  // decay = 1 - lr*wd (AdamW) or 1
        T gi = g[i] + wd * pi;  // wd = 0 for AdamW
        T mi = b1 * m[i] + omb1 * gi;
        T vi = b2 * v[i] + omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps));
    }
}

// target_clones applies to plain functions, not templates.
MINIDL_CLONES void sgd_chunk_f32(float* p, const float* g, float* buf, index_t n, float lr, float mom,
                                       float wd, float damp1, bool nesterov, bool first) {
    sgd_chunk_t(p, g, buf, n, lr, mom, wd, damp1, nesterov, first);
}
MINIDL_CLONES void sgd_chunk_f64(double* p, const double* g, double* buf, index_t n, double lr,
                                       double mom, double wd, double damp1, bool nesterov, bool first) {
    sgd_chunk_t(p, g, buf, n, lr, mom, wd, damp1, nesterov, first);
}
MINIDL_CLONES MINIDL_NO_ERRNO void adam_chunk_f32(float* p, const float* g, float* m, float* v, index_t n,
                                                        float decay, float wd, float b1, float omb1, float b2,
                                                        float omb2, float isb, float eps, float ss) {
    adam_chunk_t(p, g, m, v, n, decay, wd, b1, omb1, b2, omb2, isb, eps, ss);
}
MINIDL_CLONES MINIDL_NO_ERRNO void adam_chunk_f64(double* p, const double* g, double* m, double* v,
                                                        index_t n, double decay, double wd, double b1,
                                                        double omb1, double b2, double omb2, double isb,
                                                        double eps, double ss) {
    adam_chunk_t(p, g, m, v, n, decay, wd, b1, omb1, b2, omb2, isb, eps, ss);
}

inline void sgd_chunk(float* p, const float* g, float* b, index_t n, double lr, double mom, double wd,
                      double d1, bool nest, bool first) {
    sgd_chunk_f32(p, g, b, n, float(lr), float(mom), float(wd), float(d1), nest, first);
}
inline void sgd_chunk(double* p, const double* g, double* b, index_t n, double lr, double mom, double wd,
                      double d1, bool nest, bool first) {
    sgd_chunk_f64(p, g, b, n, lr, mom, wd, d1, nest, first);
}
inline void adam_chunk(float* p, const float* g, float* m, float* v, index_t n, double decay, double wd,
                       double b1, double b2, double isb, double eps, double ss) {
    adam_chunk_f32(p, g, m, v, n, float(decay), float(wd), float(b1), float(1 - b1), float(b2), float(1 - b2),
                   float(isb), float(eps), float(ss));
}
inline void adam_chunk(double* p, const double* g, double* m, double* v, index_t n, double decay, double wd,
                       double b1, double b2, double isb, double eps, double ss) {
    adam_chunk_f64(p, g, m, v, n, decay, wd, b1, 1 - b1, b2, 1 - b2, isb, eps, ss);
}

}  // namespace

// buf: the momentum buffer (null when momentum == 0); first: the step that creates it (buf = g).
template <typename T>
void sgd_step(T* p, const T* g, T* buf, index_t n, double lr, double mom, double wd, double damp, bool nesterov,
              bool first) {
    if (mom == 0) buf = nullptr;
    const index_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin) num_threads(num_threads())
    for (index_t c = 0; c < chunks; ++c) {
        const index_t lo = c * kChunk, len = std::min(kChunk, n - lo);
        sgd_chunk(p + lo, g + lo, buf ? buf + lo : nullptr, len, lr, mom, wd, 1 - damp, nesterov, first);
    }
}
MINIDL_FLOAT_KERNEL(sgd_step)

template <typename T>
void adam_step(T* p, const T* g, T* m, T* v, index_t n, long step, double lr, double b1, double b2, double eps,
               double wd, bool decoupled) {
    const double bc1 = 1 - std::pow(b1, double(step)), bc2 = 1 - std::pow(b2, double(step));
    const double decay = decoupled ? 1 - lr * wd : 1.0, l2 = decoupled ? 0.0 : wd;
    const double isb = 1 / std::sqrt(bc2), ss = lr / bc1;
    const index_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin) num_threads(num_threads())
    for (index_t c = 0; c < chunks; ++c) {
        const index_t lo = c * kChunk, len = std::min(kChunk, n - lo);
        adam_chunk(p + lo, g + lo, m + lo, v + lo, len, decay, l2, b1, b2, isb, eps, ss);
    }
}
MINIDL_FLOAT_KERNEL(adam_step)

}  // namespace minidl
