// csrc/cpu/elementwise.cpp — the backward of ReLU and of clamp (ReLU6), and dropout's mask; float32 and float64.
//
// What:   relu_backward:  dx[i] = g[i] if y[i] > 0 else 0            (y = relu(x), saved by the forward)
//         clamp_backward: dx[i] = g[i] if lo <= x[i] <= hi else 0    (ReLU6 is clamp(x, 0, 6): EfficientNet)
//         dropout_mask:   out[i] = scale if u_i >= p else 0, u_i = SplitMix64(seed, i) (csrc/cuda/elementwise.cu's
//                         dropout_mask_f32, bit for bit: one seed gives the same mask on every device)
// FLOPs:  none (one or two compares and one select per element).
// Bytes:  sizeof(T) * n * (2 reads + 1 write).
// Threads: OpenMP, one contiguous piece per thread, for n >= 64K.
// Reference: `relu_backward`, `clamp_backward`, `dropout_mask` in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "relu or clamp or dropout"
// Bench:  .venv/bin/python -m benchmarks.bench_ops
//
// Why a kernel for one line of numpy: `np.where(y > 0, g, 0)` makes a bool temporary,
// then a select that numpy does not vectorise as well; it was the most expensive
// "kernel" of the small CNN's training step (7 ns per element).  This loop is one pass
// that GCC turns into vector compares and blends.
//
// Other elementwise ops stay numpy's: its ufuncs are already one vectorised pass, and for
// the small arrays of the chapter-1 models a pybind11 call costs as much as a ufunc.  The
// exception is a per-channel vector broadcast over (N, C, H, W), as batch norm in eval mode
// does three times (on EfficientNet-Lite0's feature maps one such numpy add took 2.6-3.9x the
// time of a whole pass of scale, shift and ReLU6): channel_affine in batchnorm.cpp does batch
// norm and the activation after it in one pass.
#include <cstdint>

#include "kernels.h"


namespace minidl {
namespace {

// One contiguous piece.  Written as a select, not `g * (y > 0)`: a NaN or inf gradient
// where y <= 0 must give 0, not NaN.  GCC compiles the select to a vector compare and a
// mask (no branch: with half the signs random, a branch mispredicts on every other value).
template <typename T>
inline void relu_backward_piece(const T* MINIDL_RESTRICT g, const T* MINIDL_RESTRICT y, T* MINIDL_RESTRICT dx,
                                index_t n) {
    for (index_t i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? g[i] : T(0);
}
MINIDL_CLONES void relu_backward_f32(const float* g, const float* y, float* dx, index_t n) {
    relu_backward_piece(g, y, dx, n);
}
MINIDL_CLONES void relu_backward_f64(const double* g, const double* y, double* dx, index_t n) {
    relu_backward_piece(g, y, dx, n);
}
void relu_backward_piece_best(const float* g, const float* y, float* dx, index_t n) { relu_backward_f32(g, y, dx, n); }
void relu_backward_piece_best(const double* g, const double* y, double* dx, index_t n) {
    relu_backward_f64(g, y, dx, n);
}

// The same select for clamp: keep the gradient where lo <= x <= hi (NaN x: dropped).
template <typename T>
inline void clamp_backward_piece(const T* MINIDL_RESTRICT g, const T* MINIDL_RESTRICT x, T* MINIDL_RESTRICT dx,
                                 index_t n, T lo, T hi) {
    for (index_t i = 0; i < n; ++i) dx[i] = (x[i] >= lo && x[i] <= hi) ? g[i] : T(0);
}
MINIDL_CLONES void clamp_backward_f32(const float* g, const float* x, float* dx, index_t n, float lo, float hi) {
    clamp_backward_piece(g, x, dx, n, lo, hi);
}
MINIDL_CLONES void clamp_backward_f64(const double* g, const double* x, double* dx, index_t n, double lo, double hi) {
    clamp_backward_piece(g, x, dx, n, lo, hi);
}
void clamp_backward_piece_best(const float* g, const float* x, float* dx, index_t n, float lo, float hi) {
    clamp_backward_f32(g, x, dx, n, lo, hi);
}
void clamp_backward_piece_best(const double* g, const double* x, double* dx, index_t n, double lo, double hi) {
    clamp_backward_f64(g, x, dx, n, lo, hi);
}

// Split [0, n) into one contiguous piece per thread (threads only from 64K elements on).
template <typename Piece>
void in_pieces(index_t n, Piece piece) {
    const int threads = n >= (1 << 16) ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int t = 0; t < threads; ++t) piece(n * t / threads, n * (t + 1) / threads);
}

// A counter-based random number: SplitMix64's finaliser of seed + (i + 1) * golden ratio, so element i's
// number needs no other element's (any thread, any order). Its top 24 bits over 2^24 are exact in a float.
inline float splitmix64_uniform(std::uint64_t seed, index_t i) {
    std::uint64_t z = seed + std::uint64_t(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return float(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace

template <typename T>
void relu_backward(const T* g, const T* y, T* dx, index_t n) {
    in_pieces(n, [=](index_t i0, index_t i1) { relu_backward_piece_best(g + i0, y + i0, dx + i0, i1 - i0); });
}
MINIDL_FLOAT_KERNEL(relu_backward)

template <typename T>
void clamp_backward(const T* g, const T* x, T* dx, index_t n, T lo, T hi) {
    in_pieces(n, [=](index_t i0, index_t i1) { clamp_backward_piece_best(g + i0, x + i0, dx + i0, i1 - i0, lo, hi); });
}
MINIDL_FLOAT_KERNEL(clamp_backward)

// p is compared as a float whatever T is, as the CUDA kernel does: the same elements are dropped.
template <typename T>
void dropout_mask(T* out, index_t n, std::uint64_t seed, T p, T scale) {
    const float p32 = float(p);
    in_pieces(n, [=](index_t i0, index_t i1) {
        for (index_t i = i0; i < i1; ++i) out[i] = splitmix64_uniform(seed, i) >= p32 ? scale : T(0);
    });
}
MINIDL_FLOAT_KERNEL(dropout_mask)

}  // namespace minidl
