// csrc/cpu/conv.cpp — 2-D convolution (forward, backward data, backward weight) and
// max / average pooling, NCHW, float32 and float64.
//
// What:   out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] * in[n, g*C/G + c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//         (zero outside the image), with stride, padding, dilation and groups G.
// How:    general case: im2col + minidl::matmul, per group g:
//           forward:  cols (C/G*kh*kw, N*L) = patches, written straight into one packed
//                     buffer (zeros where a window hangs over the edge: no padded copy
//                     of the input);  tmp (O/G, N*L) = w_g @ cols;  out[n, o] = tmp[o, n*L:]
//           dx:       cols = w_g^T @ grad_g (grad_g gathered to (O/G, N*L)), then col2im
//                     (each (n, c) plane is owned by one thread: no races, deterministic)
//           dw:       dw_g^T = cols (C/G*kh*kw, N*L) @ grad_g^T (N*L, O/G), transposed back
//         depthwise (G == C == O): a direct loop per (n, c) plane (dw: per channel),
//         since a matmul with one input channel per group has nothing to reuse.
//         Pooling: direct loops per (n, c) plane.
// FLOPs:  conv: 2 * N * O * OH * OW * C/G * kh * kw per pass (forward, dx and dw each).
// Bytes:  the packed columns: sizeof(T) * C/G * kh * kw * N * OH * OW per group (written
//         once, read by the matmul), plus input, weight and output.
// Threads: OpenMP over rows of the column buffer / (n, c) planes / channels; the matmuls
//         parallelise themselves (matmul.cpp).  _C.set_num_threads(n).
// Reference: conv2d, conv2d_backward_data, conv2d_backward_weight, max_pool2d(_backward),
//         avg_pool2d(_backward) in minidl/backend/numpy_ref.py. max_pool2d's winner is the
//         window offset i*kw + j of the maximum (first one on ties), numpy_ref's contract.
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "conv or pool"
// Bench:  .venv/bin/python -m benchmarks.bench_conv    (ResNet-18 layer shapes vs torch)
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace minidl {
namespace {

using index_t = std::int64_t;

// The output columns xo whose input column xo*stride + off lies in [0, W): [lo, hi).
inline void valid_range(index_t off, index_t stride, index_t W, index_t OW, index_t& lo, index_t& hi) {
    lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    hi = (W - 1 - off) < 0 ? 0 : std::min(OW, (W - 1 - off) / stride + 1);
    lo = std::min(lo, OW);
    if (hi < lo) hi = lo;
}

// Whether a pass over the input and output is worth an OpenMP region (tiny layers run on
// the calling thread: waking the workers costs more).
inline bool big(const ConvShape& s) { return s.N * s.C * (s.H * s.W + s.OH * s.OW) >= (1 << 15); }

// A scratch buffer per calling thread, kept between calls: the column buffers are tens
// of MB, and allocating (page-faulting) and zeroing them anew each call costs as much as
// filling them.  Not zeroed: every kernel writes all of it.
template <typename T>
T* workspace(int slot, index_t n) {
    thread_local std::vector<T> bufs[3];
    std::vector<T>& b = bufs[slot];
    if (index_t(b.size()) < n) { b.clear(); b.shrink_to_fit(); b.resize(n); }
    return b.data();
}

template <typename T>
void im2col_rows(const T* x, T* cols, const ConvShape& s, index_t g) {
    // cols[(c*kh + i)*kw + j][n*L + y*OW + xo], for the C/G channels of group g.
    const index_t Cg = s.C / s.G, KK = s.kh * s.kw, L = s.OH * s.OW, NL = s.N * L, rows = Cg * KK;
#pragma omp parallel for schedule(static) if (rows * NL >= (1 << 14)) num_threads(num_threads())
    for (index_t r = 0; r < rows; ++r) {
        const index_t c = g * Cg + r / KK, i = (r % KK) / s.kw, j = r % s.kw;
        T* dst = cols + r * NL;
        for (index_t n = 0; n < s.N; ++n) {
            const T* plane = x + (n * s.C + c) * s.H * s.W;
            for (index_t y = 0; y < s.OH; ++y, dst += s.OW) {
                const index_t h = y * s.sh + i * s.dh - s.ph;
                if (h < 0 || h >= s.H) { std::fill(dst, dst + s.OW, T(0)); continue; }
                const index_t off = j * s.dw - s.pw;
                const T* row = plane + h * s.W + off;
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                for (index_t xo = 0; xo < lo; ++xo) dst[xo] = T(0);
                if (s.sw == 1)
                    for (index_t xo = lo; xo < hi; ++xo) dst[xo] = row[xo];
                else
                    for (index_t xo = lo; xo < hi; ++xo) dst[xo] = row[xo * s.sw];
                for (index_t xo = hi; xo < s.OW; ++xo) dst[xo] = T(0);
            }
        }
    }
}

// Gather grad[n, g*Og + o, :] into gm (Og, N*L).
template <typename T>
void gather_grad(const T* grad, T* gm, const ConvShape& s, index_t g) {
    const index_t Og = s.O / s.G, L = s.OH * s.OW;
#pragma omp parallel for collapse(2) schedule(static) if (Og * s.N * L >= (1 << 15)) num_threads(num_threads())
    for (index_t o = 0; o < Og; ++o)
        for (index_t n = 0; n < s.N; ++n)
            std::memcpy(gm + o * s.N * L + n * L, grad + (n * s.O + g * Og + o) * L, sizeof(T) * L);
}

// ------------------------------------------------------------------ depthwise (G == C == O)
// Loops ordered (i, j, y, xo) with the valid xo range computed once per (j): the inner
// loop is branch-free and, for stride 1, unit-stride (it vectorizes).

template <typename T>
void depthwise_forward(const T* x, const T* wt, T* out, const ConvShape& s) {
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        const index_t c = p % s.C;
        const T* plane = x + p * s.H * s.W;
        const T* k = wt + c * s.kh * s.kw;
        T* o = out + p * s.OH * s.OW;
        std::fill(o, o + s.OH * s.OW, T(0));
        for (index_t i = 0; i < s.kh; ++i)
            for (index_t j = 0; j < s.kw; ++j) {
                const T kv = k[i * s.kw + j];
                const index_t off = j * s.dw - s.pw;
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                for (index_t y = 0; y < s.OH; ++y) {
                    const index_t h = y * s.sh + i * s.dh - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    const T* row = plane + h * s.W + off;
                    T* orow = o + y * s.OW;
                    for (index_t xo = lo; xo < hi; ++xo) orow[xo] += kv * row[xo * s.sw];
                }
            }
    }
}

template <typename T>
void depthwise_backward_data(const T* grad, const T* wt, T* dx, const ConvShape& s) {
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        const index_t c = p % s.C;
        T* plane = dx + p * s.H * s.W;
        std::fill(plane, plane + s.H * s.W, T(0));
        const T* k = wt + c * s.kh * s.kw;
        const T* gp = grad + p * s.OH * s.OW;
        for (index_t i = 0; i < s.kh; ++i)
            for (index_t j = 0; j < s.kw; ++j) {
                const T kv = k[i * s.kw + j];
                const index_t off = j * s.dw - s.pw;
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                for (index_t y = 0; y < s.OH; ++y) {
                    const index_t h = y * s.sh + i * s.dh - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    T* row = plane + h * s.W + off;
                    const T* grow = gp + y * s.OW;
                    for (index_t xo = lo; xo < hi; ++xo) row[xo * s.sw] += kv * grow[xo];
                }
            }
    }
}

template <typename T>
void depthwise_backward_weight(const T* grad, const T* x, T* dwt, const ConvShape& s) {
    const index_t KK = s.kh * s.kw;
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t c = 0; c < s.C; ++c) {
        for (index_t i = 0; i < s.kh; ++i)
            for (index_t j = 0; j < s.kw; ++j) {
                const index_t off = j * s.dw - s.pw;
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                T acc = 0;
                for (index_t n = 0; n < s.N; ++n) {
                    const T* plane = x + (n * s.C + c) * s.H * s.W;
                    const T* gp = grad + (n * s.C + c) * s.OH * s.OW;
                    for (index_t y = 0; y < s.OH; ++y) {
                        const index_t h = y * s.sh + i * s.dh - s.ph;
                        if (h < 0 || h >= s.H) continue;
                        const T* row = plane + h * s.W + off;
                        const T* grow = gp + y * s.OW;
                        T a = 0;
                        for (index_t xo = lo; xo < hi; ++xo) a += grow[xo] * row[xo * s.sw];
                        acc += a;
                    }
                }
                dwt[c * KK + i * s.kw + j] = acc;
            }
    }
}

bool is_depthwise(const ConvShape& s) { return s.G == s.C && s.O == s.C && s.G > 1; }

// ------------------------------------------------------------------ the three passes

template <typename T>
void conv2d_forward_impl(const T* x, const T* wt, T* out, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_forward(x, wt, out, s);
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, NL = s.N * L;
    const bool direct = s.N == 1 && s.G == 1;
    T* cols = workspace<T>(0, CKK * NL);
    T* tmp = direct ? nullptr : workspace<T>(1, Og * NL);
    for (index_t g = 0; g < s.G; ++g) {
        im2col_rows(x, cols, s, g);
        matmul(wt + g * Og * CKK, cols, direct ? out : tmp, 1, Og, NL, CKK);
        if (direct) continue;
#pragma omp parallel for collapse(2) schedule(static) if (Og * NL >= (1 << 15)) num_threads(num_threads())
        for (index_t n = 0; n < s.N; ++n)
            for (index_t o = 0; o < Og; ++o)
                std::memcpy(out + (n * s.O + g * Og + o) * L, tmp + o * NL + n * L, sizeof(T) * L);
    }
}

template <typename T>
void conv2d_backward_data_impl(const T* grad, const T* wt, T* dx, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_backward_data(grad, wt, dx, s);
    const index_t Cg = s.C / s.G, Og = s.O / s.G, KK = s.kh * s.kw, CKK = Cg * KK, L = s.OH * s.OW,
                  NL = s.N * L;
    T* gm = workspace<T>(1, Og * NL);
    T* cols = workspace<T>(0, CKK * NL);
    std::vector<T> wT(CKK * Og);
    for (index_t g = 0; g < s.G; ++g) {
        gather_grad(grad, gm, s, g);
        const T* wg = wt + g * Og * CKK;
        for (index_t o = 0; o < Og; ++o)
            for (index_t r = 0; r < CKK; ++r) wT[r * Og + o] = wg[o * CKK + r];
        matmul(wT.data(), gm, cols, 1, CKK, NL, Og);
        // col2im: every (n, c) plane of dx is summed by one thread.
#pragma omp parallel for collapse(2) schedule(static) if (big(s)) num_threads(num_threads())
        for (index_t n = 0; n < s.N; ++n)
            for (index_t c = 0; c < Cg; ++c) {
                T* plane = dx + (n * s.C + g * Cg + c) * s.H * s.W;
                std::fill(plane, plane + s.H * s.W, T(0));
                for (index_t i = 0; i < s.kh; ++i)
                    for (index_t j = 0; j < s.kw; ++j) {
                        const T* src = cols + ((c * s.kh + i) * s.kw + j) * NL + n * L;
                        const index_t off = j * s.dw - s.pw;
                        index_t lo, hi;
                        valid_range(off, s.sw, s.W, s.OW, lo, hi);
                        for (index_t y = 0; y < s.OH; ++y) {
                            const index_t h = y * s.sh + i * s.dh - s.ph;
                            if (h < 0 || h >= s.H) continue;
                            T* row = plane + h * s.W + off;
                            const T* srow = src + y * s.OW;
                            if (s.sw == 1)
                                for (index_t xo = lo; xo < hi; ++xo) row[xo] += srow[xo];
                            else
                                for (index_t xo = lo; xo < hi; ++xo) row[xo * s.sw] += srow[xo];
                        }
                    }
            }
    }
}

template <typename T>
void conv2d_backward_weight_impl(const T* grad, const T* x, T* dwt, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_backward_weight(grad, x, dwt, s);
    // dw_g^T (CKK, Og) = cols (CKK, N*L) @ grad_g^T (N*L, Og): the big operand is the
    // column buffer of the forward pass (fast to build); only grad is transposed.
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, NL = s.N * L;
    T* cols = workspace<T>(0, CKK * NL);
    T* gT = workspace<T>(1, NL * Og);
    T* res = workspace<T>(2, CKK * Og);
    for (index_t g = 0; g < s.G; ++g) {
        im2col_rows(x, cols, s, g);
#pragma omp parallel for schedule(static) if (Og * NL >= (1 << 15)) num_threads(num_threads())
        for (index_t n = 0; n < s.N; ++n)
            for (index_t o = 0; o < Og; ++o) {
                const T* src = grad + (n * s.O + g * Og + o) * L;
                T* dst = gT + n * L * Og + o;
                for (index_t l = 0; l < L; ++l) dst[l * Og] = src[l];
            }
        matmul(cols, gT, res, 1, CKK, Og, NL);
        T* dwg = dwt + g * Og * CKK;
        for (index_t o = 0; o < Og; ++o)
            for (index_t r = 0; r < CKK; ++r) dwg[o * CKK + r] = res[r * Og + o];
    }
}

// ------------------------------------------------------------------ pooling

template <typename T>
void max_pool_impl(const T* x, T* out, index_t* winner, const ConvShape& s) {
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        const T* plane = x + p * s.H * s.W;
        for (index_t y = 0; y < s.OH; ++y)
            for (index_t xo = 0; xo < s.OW; ++xo) {
                T best = -std::numeric_limits<T>::infinity();
                index_t arg = 0;
                for (index_t i = 0; i < s.kh; ++i) {
                    const index_t h = y * s.sh + i * s.dh - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    for (index_t j = 0; j < s.kw; ++j) {
                        const index_t w = xo * s.sw + j * s.dw - s.pw;
                        if (w < 0 || w >= s.W) continue;
                        const T v = plane[h * s.W + w];
                        // numpy's argmax: the first maximum, and the first NaN beats everything.
                        if (v > best || (std::isnan(v) && !std::isnan(best))) { best = v; arg = i * s.kw + j; }
                    }
                }
                out[p * s.OH * s.OW + y * s.OW + xo] = best;
                winner[p * s.OH * s.OW + y * s.OW + xo] = arg;
            }
    }
}

template <typename T>
void max_pool_backward_impl(const T* grad, const index_t* winner, T* dx, const ConvShape& s) {
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

template <typename T>
void avg_pool_impl(const T* x, T* out, const ConvShape& s) {
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

template <typename T>
void avg_pool_backward_impl(const T* grad, T* dx, const ConvShape& s) {
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

}  // namespace

#define MINIDL_CONV_INSTANTIATE(T)                                                                          \
    void conv2d(const T* x, const T* w, T* out, const ConvShape& s) { conv2d_forward_impl(x, w, out, s); }  \
    void conv2d_backward_data(const T* g, const T* w, T* dx, const ConvShape& s) {                          \
        conv2d_backward_data_impl(g, w, dx, s);                                                             \
    }                                                                                                       \
    void conv2d_backward_weight(const T* g, const T* x, T* dw, const ConvShape& s) {                        \
        conv2d_backward_weight_impl(g, x, dw, s);                                                           \
    }                                                                                                       \
    void max_pool2d(const T* x, T* out, std::int64_t* winner, const ConvShape& s) {                         \
        max_pool_impl(x, out, winner, s);                                                                   \
    }                                                                                                       \
    void max_pool2d_backward(const T* g, const std::int64_t* winner, T* dx, const ConvShape& s) {           \
        max_pool_backward_impl(g, winner, dx, s);                                                           \
    }                                                                                                       \
    void avg_pool2d(const T* x, T* out, const ConvShape& s) { avg_pool_impl(x, out, s); }                   \
    void avg_pool2d_backward(const T* g, T* dx, const ConvShape& s) { avg_pool_backward_impl(g, dx, s); }

MINIDL_CONV_INSTANTIATE(float)
MINIDL_CONV_INSTANTIATE(double)

}  // namespace minidl
