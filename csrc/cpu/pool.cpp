// csrc/cpu/pool.cpp — 2-D max and average pooling, forward and backward, NCHW, float32 and float64.
//
// What:   max_pool2d:  out[n, c, y, x] = max over the (dilated) window at (y*sh - ph, x*sw - pw),
//                      padding never winning, and winner[n, c, y*OW + x] = i*kw + j, the window
//                      offset of the maximum (the first one on ties; a NaN wins): numpy_ref's contract.
//         max_pool2d_backward: dx[the input under each winner] += grad.
//         avg_pool2d:  out = the window's sum / (kh*kw), padding counted as zeros; its backward
//                      gives each input 1/(kh*kw) of the gradient of every window covering it.
// How:    direct loops per (n, c) plane; max pooling one output row at a time, window offset by
//         window offset, as vector selects (max_pool_offset below).
// FLOPs:  kh * kw compares (or adds) per output.
// Bytes:  sizeof(T) * N * C * (H*W + OH*OW) (+ 8 bytes a winner).
// Threads: OpenMP over (n, c) planes.  _C.set_num_threads(n).
// Reference: max_pool2d(_backward), avg_pool2d(_backward) in minidl/backend/numpy_ref.py.
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "pool"
// Bench:  .venv/bin/python -m benchmarks.bench_conv    (the maxpool and avgpool rows)
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "conv.h"

namespace minidl {
namespace {

// One window offset for n outputs of a row: each output compares its input at that
// offset (in[i * stride]) with its best so far.  numpy's argmax semantics: the first
// maximum wins, and the first NaN beats everything; as one expression,
//   take = !(v <= best) && best is not NaN
// (v NaN: !(NaN <= b) is true; best NaN: never replaced).  Written as selects over
// restrict pointers so that GCC vectorises it: on real data "is this bigger?" is a coin
// toss, and the branchy version mispredicted on every other compare (~5x slower).
template <typename T, index_t Stride>
inline void max_pool_offset(const T* MINIDL_RESTRICT in, index_t stride, T* MINIDL_RESTRICT best,
                            index_t* MINIDL_RESTRICT arg, index_t k, index_t n) {
    const index_t st = Stride ? Stride : stride;  // a constant stride (1, 2) lets loads be vectorised
    for (index_t i = 0; i < n; ++i) {
        const T v = in[i * st], b = best[i];
        const bool take = !(v <= b) & (b == b);
        best[i] = take ? v : b;
        arg[i] = take ? k : arg[i];
    }
}

// Max pooling of one (n, c) plane, one output row at a time, visiting the window offsets
// (i, j) in numpy's order (so that ties go to the first).
template <typename T>
inline void max_pool_plane(const T* plane, T* out, index_t* winner, const ConvGeometry& s) {
    for (index_t y = 0; y < s.OH; ++y) {
        T* best = out + y * s.OW;
        index_t* arg = winner + y * s.OW;
        std::fill(best, best + s.OW, -std::numeric_limits<T>::infinity());
        std::fill(arg, arg + s.OW, index_t(0));
        for (index_t i = 0; i < s.kh; ++i) {
            const index_t h = y * s.sh + i * s.dh - s.ph;
            if (h < 0 || h >= s.H) continue;
            for (index_t j = 0; j < s.kw; ++j) {
                const index_t off = j * s.dw - s.pw;  // outputs [lo, hi) read inside the row
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                const T* in = plane + h * s.W + off + lo * s.sw;
                const index_t k = i * s.kw + j, n = hi - lo;
                if (s.sw == 2) max_pool_offset<T, 2>(in, 2, best + lo, arg + lo, k, n);
                else if (s.sw == 1) max_pool_offset<T, 1>(in, 1, best + lo, arg + lo, k, n);
                else max_pool_offset<T, 0>(in, s.sw, best + lo, arg + lo, k, n);
            }
        }
    }
}
// Compiled for AVX-512 / AVX2 / x86-64 (see MINIDL_CLONES): AVX-512's masked
// stores are what lets GCC vectorise the selects above (1.4x over the AVX2 build).
MINIDL_CLONES void max_pool_plane_f32(const float* plane, float* out, index_t* winner, const ConvGeometry& s) {
    max_pool_plane(plane, out, winner, s);
}
MINIDL_CLONES void max_pool_plane_f64(const double* plane, double* out, index_t* winner, const ConvGeometry& s) {
    max_pool_plane(plane, out, winner, s);
}
void max_pool_plane_best(const float* p, float* o, index_t* w, const ConvGeometry& s) { max_pool_plane_f32(p, o, w, s); }
void max_pool_plane_best(const double* p, double* o, index_t* w, const ConvGeometry& s) { max_pool_plane_f64(p, o, w, s); }

}  // namespace

template <typename T>
void max_pool2d(const T* x, T* out, index_t* winner, const ConvGeometry& s) {
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p)
        max_pool_plane_best(x + p * s.H * s.W, out + p * s.OH * s.OW, winner + p * s.OH * s.OW, s);
}
MINIDL_FLOAT_KERNEL(max_pool2d)

template <typename T>
void max_pool2d_backward(const T* grad, const index_t* winner, T* dx, const ConvGeometry& s) {
    // The winners are data, indexes into the window that minidl.backend.cpu does not look at:
    // std::out_of_range (Python's IndexError) for one outside [0, kh*kw), before anything is written.
    for (index_t i = 0; i < s.N * s.C * s.OH * s.OW; ++i)
        if (winner[i] < 0 || winner[i] >= s.kh * s.kw)
            throw std::out_of_range("max_pool2d_backward: winner " + std::to_string(winner[i]) +
                                    " is not a window offset in [0, kh*kw)");
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        T* plane = dx + p * s.H * s.W;
        std::fill(plane, plane + s.H * s.W, T(0));
        for (index_t y = 0; y < s.OH; ++y)
            for (index_t xo = 0; xo < s.OW; ++xo) {
                const index_t k = winner[p * s.OH * s.OW + y * s.OW + xo];
                const index_t h = y * s.sh + (k / s.kw) * s.dh - s.ph, w = xo * s.sw + (k % s.kw) * s.dw - s.pw;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W) plane[h * s.W + w] += grad[p * s.OH * s.OW + y * s.OW + xo];
            }
    }
}
MINIDL_FLOAT_KERNEL(max_pool2d_backward)

template <typename T>
void avg_pool2d(const T* x, T* out, const ConvGeometry& s) {
    const T scale = T(1) / T(s.kh * s.kw);
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        const T* plane = x + p * s.H * s.W;
        for (index_t y = 0; y < s.OH; ++y)
            for (index_t xo = 0; xo < s.OW; ++xo) {
                T acc = 0;
                for (index_t i = 0; i < s.kh; ++i) {
                    const index_t h = y * s.sh + i - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    for (index_t j = 0; j < s.kw; ++j) {
                        const index_t w = xo * s.sw + j - s.pw;
                        if (w >= 0 && w < s.W) acc += plane[h * s.W + w];
                    }
                }
                out[p * s.OH * s.OW + y * s.OW + xo] = acc * scale;
            }
    }
}
MINIDL_FLOAT_KERNEL(avg_pool2d)

template <typename T>
void avg_pool2d_backward(const T* grad, T* dx, const ConvGeometry& s) {
    const T k = T(s.kh * s.kw);
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        T* plane = dx + p * s.H * s.W;
        std::fill(plane, plane + s.H * s.W, T(0));
        for (index_t y = 0; y < s.OH; ++y)
            for (index_t xo = 0; xo < s.OW; ++xo) {
                const T gv = grad[p * s.OH * s.OW + y * s.OW + xo] / k;
                for (index_t i = 0; i < s.kh; ++i) {
                    const index_t h = y * s.sh + i - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    for (index_t j = 0; j < s.kw; ++j) {
                        const index_t w = xo * s.sw + j - s.pw;
                        if (w >= 0 && w < s.W) plane[h * s.W + w] += gv;
                    }
                }
            }
    }
}
MINIDL_FLOAT_KERNEL(avg_pool2d_backward)

}  // namespace minidl
