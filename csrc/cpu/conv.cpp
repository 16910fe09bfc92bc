// csrc/cpu/conv.cpp — 2-D convolution (forward, backward data, backward weight) and
// max / average pooling, NCHW, float32 and float64.
//
// What:   out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] * in[n, g*C/G + c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//         (zero outside the image), with stride, padding, dilation and groups G.
// How:    general case: im2col + minidl::matmul, per group g:
//           forward:  cols (C/G*kh*kw, N*L) = patches, written straight into one packed
//                     buffer (zeros where a window hangs over the edge: no padded copy
//                     of the input);  tmp (O/G, N*L) = w_g @ cols;  out[n, o] = tmp[o, n*L:]
//                     Big images (G == 1, L = OH*OW >= 1024) go one image at a time:
//                     out[n] = w @ cols_n, written in place, cols_n still in cache; a
//                     1x1 / stride 1 / no padding conv skips im2col (x[n] is cols_n).
//           dx:       cols = w_g^T @ grad_g (grad_g gathered to (O/G, N*L)), then col2im
//                     (each (n, c) plane is owned by one thread: no races, deterministic);
//                     big images one at a time again: cols_n = w^T @ grad[n], no gather.
//           dw:       dw_g^T = cols (C/G*kh*kw, N*L) @ grad_g^T (N*L, O/G), transposed back
//           (transposes of weights and grad go in 32 x 32 tiles, see transpose()).
//         depthwise (G == C == O): a direct loop per (n, c) plane (dw: per channel),
//         since a matmul with one input channel per group has nothing to reuse.  Stride-1
//         3x3 and 5x5 kernels (MobileNet, EfficientNet) have their own loop with the taps
//         unrolled over a zero-bordered copy of the plane, compiled for AVX-512 / AVX2.
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
//         (--passes: forward / dx / dw timed separately)
// Measured (batch 8, 2 threads, float32, fwd + dx + dw in ms, each library in its own
// process, median of 4 interleaved runs of 9-repeat medians; a shared 2-core Xeon with
// AVX-512, so +-15% noise): before = im2col for every conv, naive transposes, depthwise
// with the general loop; after = this file.
//   layer                 before   after   torch   after / torch    where the time is now
//   conv1 7x7/2            117.8    77.1    92.1    0.84             dw 37 (torch 11)
//   layer1 3x3 (56x56)      67.8    61.8    26.8    2.3              GEMM-bound, all 3 passes
//   layer2 3x3/2            24.0    ~24     16.4    ~1.5 (noise)     GEMM
//   layer2 1x1/2             5.1     4.7     5.5    0.85
//   layer2 3x3 (28x28)      46.5    ~48     26.4    ~1.8 (noise)     GEMM
//   layer3 3x3 (14x14)      42.6    42.6    23.6    1.8              GEMM
//   layer4 3x3 (7x7)        66.8    49.8    24.4    2.0              GEMM (M=512, N*L=392)
//   depthwise 3x3 s1         5.3     3.2     2.0    1.6              dw 1.8 (torch 0.6)
// The rest is minidl::matmul at ~100-120 GFLOP/s on these shapes against ~200+ for
// torch's (oneDNN) convolutions: e.g. layer1's forward GEMM (64 x 576 x 3136 per image).
// Batch 32 (the shapes): see benchmarks/RESULTS.md (layer1-4 3x3: 1.5-2.1x torch).
#include "kernels.h"

#define MINIDL_RESTRICT __restrict__

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

// dst (cols, rows) = src (rows, cols)^T, row strides lds / ldd.  A naive transpose
// writes (or reads) with a stride of a whole row: every element touches a new cache
// line and, for rows of a few KB, a new page.  Going tile by tile (32 x 32: 4 KB of
// floats read, 4 KB written) keeps both sides in L1.  For a 512 x 4608 weight this is
// many times faster than the naive loop, which was a third of layer4's backward-data
// time.  Single-threaded: the callers run it inside their own parallel loops, or on a
// weight-sized matrix that is done in a millisecond or two.
template <typename T>
void transpose(const T* src, T* dst, index_t rows, index_t cols, index_t lds, index_t ldd) {
    constexpr index_t B = 32;
    for (index_t r0 = 0; r0 < rows; r0 += B)
        for (index_t c0 = 0; c0 < cols; c0 += B) {
            const index_t r1 = std::min(rows, r0 + B), c1 = std::min(cols, c0 + B);
            for (index_t c = c0; c < c1; ++c)
                for (index_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * lds + c];
        }
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
// The general kernels (depthwise_forward etc. below, any stride and dilation): loops
// ordered (i, j, y, xo) with the valid xo range computed once per (j): the inner loop is
// branch-free and, for stride 1, unit-stride (it vectorizes).

// The (PH, PW) window of a plane (H, W) that starts at (-ph, -pw), zeros outside the
// plane, in a per-thread scratch buffer (valid until the thread's next call).
template <typename T>
const T* padded_plane(const T* in, index_t H, index_t W, index_t ph, index_t pw, index_t PH, index_t PW) {
    thread_local std::vector<T> buf;
    if (index_t(buf.size()) < PH * PW) buf.resize(PH * PW);
    T* pad = buf.data();
    for (index_t r = 0; r < PH; ++r) {
        T* dst = pad + r * PW;
        const index_t h = r - ph;
        if (h < 0 || h >= H) { std::fill(dst, dst + PW, T(0)); continue; }
        const index_t lo = std::min(PW, std::max<index_t>(0, pw)), hi = std::max(lo, std::min(PW, W + pw));
        std::fill(dst, dst + lo, T(0));
        std::copy(in + h * W + (lo - pw), in + h * W + (hi - pw), dst + lo);
        std::fill(dst + hi, dst + PW, T(0));
    }
    return pad;
}

// The common case, a K x K kernel (3 or 5) with stride 1 and no dilation, on one plane:
// copy the plane into a zero-bordered scratch (so no tap needs a bounds test), then
// out[y, x] = sum_{i,j} k[i, j] * padded[y + i, x + j] with the K*K taps known at compile
// time: unrolled, all nine (or 25) multiply-adds of a row of outputs happen while that
// row is in registers, and the x loop vectorizes.  The loop order (i, j, y, x) of the
// general kernel instead sweeps the output plane K*K times, on rows too short (28, 14,
// 7 floats) to amortise the loop overhead.  With flip, k is used rotated by 180 degrees:
// that turns backward-data (a "full" correlation of grad with the kernel) into the same
// loop.
template <int K, typename T>
inline __attribute__((always_inline)) void depthwise_plane(const T* in, index_t H, index_t W, index_t ph,
                                                           index_t pw, const T* k, bool flip, T* out,
                                                           index_t OH, index_t OW) {
    const index_t PW = OW + K - 1;
    const T* pad = padded_plane(in, H, W, ph, pw, OH + K - 1, PW);
    T kk[K * K];
    for (int t = 0; t < K * K; ++t) kk[t] = flip ? k[K * K - 1 - t] : k[t];
    for (index_t y = 0; y < OH; ++y) {
        T* o = out + y * OW;
        for (index_t x = 0; x < OW; ++x) {
            T acc = 0;
            for (int i = 0; i < K; ++i)
                for (int j = 0; j < K; ++j) acc += kk[i * K + j] * pad[(y + i) * PW + x + j];
            o[x] = acc;
        }
    }
}

// dw for one channel (K*K taps) of a stride-1 depthwise conv, the same padded planes:
// dw[i, j] = sum_{n, y, x} grad[n, y, x] * padded_n[y + i, x + j].  Each tap keeps a row
// of OW partial sums (racc) that the x loop updates element-wise -- it vectorizes, where
// a single running sum per tap would be a serial chain of adds -- and the rows are summed
// at the end.
template <int K, typename T>
inline __attribute__((always_inline)) void depthwise_plane_dw(const T* x, const T* grad, index_t N, index_t C,
                                                              index_t H, index_t W, index_t ph, index_t pw,
                                                              index_t OH, index_t OW, T* dw) {
    const index_t PW = OW + K - 1;
    thread_local std::vector<T> rows;
    if (index_t(rows.size()) < K * K * OW) rows.resize(K * K * OW);
    T* racc = rows.data();
    std::fill(racc, racc + K * K * OW, T(0));
    for (index_t n = 0; n < N; ++n) {
        const T* pad = padded_plane(x + n * C * H * W, H, W, ph, pw, OH + K - 1, PW);
        const T* gp = grad + n * C * OH * OW;
        for (index_t y = 0; y < OH; ++y)
            for (int i = 0; i < K; ++i)
                for (int j = 0; j < K; ++j) {
                    const T* prow = pad + (y + i) * PW + j;
                    const T* grow = gp + y * OW;
                    T* r = racc + (i * K + j) * OW;
                    for (index_t xo = 0; xo < OW; ++xo) r[xo] += grow[xo] * prow[xo];
                }
    }
    for (int t = 0; t < K * K; ++t) {
        T acc = 0;
        for (index_t xo = 0; xo < OW; ++xo) acc += racc[t * OW + xo];
        dw[t] = acc;
    }
}

// setup.py builds for baseline x86-64 (SSE2, 4 floats a vector); like matmul.cpp and
// optim.cpp, compile this loop also for AVX2 and AVX-512 and let the loader pick the
// best one the CPU has (GCC target_clones, which takes plain functions, not templates:
// hence one wrapper per K and dtype).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(MINIDL_NO_MULTIVERSION)
#define MINIDL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MINIDL_MULTIVERSION
#endif
#define MINIDL_PLANE(K, T, NAME)                                                                    \
    MINIDL_MULTIVERSION void NAME(const T* in, index_t H, index_t W, index_t ph, index_t pw,       \
                                  const T* k, bool flip, T* out, index_t OH, index_t OW) {         \
        depthwise_plane<K>(in, H, W, ph, pw, k, flip, out, OH, OW);                               \
    }
MINIDL_PLANE(3, float, plane3_f32)
MINIDL_PLANE(5, float, plane5_f32)
MINIDL_PLANE(3, double, plane3_f64)
MINIDL_PLANE(5, double, plane5_f64)
#undef MINIDL_PLANE
#define MINIDL_PLANE_DW(K, T, NAME)                                                                 \
    MINIDL_MULTIVERSION void NAME(const T* x, const T* grad, index_t N, index_t C, index_t H,      \
                                  index_t W, index_t ph, index_t pw, index_t OH, index_t OW, T* dw) { \
        depthwise_plane_dw<K>(x, grad, N, C, H, W, ph, pw, OH, OW, dw);                            \
    }
MINIDL_PLANE_DW(3, float, plane3_dw_f32)
MINIDL_PLANE_DW(5, float, plane5_dw_f32)
MINIDL_PLANE_DW(3, double, plane3_dw_f64)
MINIDL_PLANE_DW(5, double, plane5_dw_f64)
#undef MINIDL_PLANE_DW
inline auto plane_dw(int K, float) { return K == 3 ? plane3_dw_f32 : plane5_dw_f32; }
inline auto plane_dw(int K, double) { return K == 3 ? plane3_dw_f64 : plane5_dw_f64; }
template <int K>
void run_plane(const float* in, index_t H, index_t W, index_t ph, index_t pw, const float* k, bool flip,
               float* out, index_t OH, index_t OW) {
    (K == 3 ? plane3_f32 : plane5_f32)(in, H, W, ph, pw, k, flip, out, OH, OW);
}
template <int K>
void run_plane(const double* in, index_t H, index_t W, index_t ph, index_t pw, const double* k, bool flip,
               double* out, index_t OH, index_t OW) {
    (K == 3 ? plane3_f64 : plane5_f64)(in, H, W, ph, pw, k, flip, out, OH, OW);
}

// Whether depthwise_plane<K> applies, and with which K (0: it does not).
inline int plane_kernel(const ConvShape& s) {
    if (s.kh != s.kw || s.sh != 1 || s.sw != 1 || s.dh != 1 || s.dw != 1) return 0;
    if (s.ph > s.kh - 1 || s.pw > s.kw - 1) return 0;   // backward's padding K-1-p must be >= 0
    return s.kh == 3 || s.kh == 5 ? int(s.kh) : 0;
}

template <typename T>
bool depthwise_fast(const T* in, const T* wt, T* out, const ConvShape& s, bool backward) {
    const int K = plane_kernel(s);
    if (K == 0) return false;
    // forward: in = x (H, W) -> out (OH, OW), padding p;
    // backward data: in = grad (OH, OW) -> dx (H, W), padding K-1-p, kernel flipped.
    const index_t IH = backward ? s.OH : s.H, IW = backward ? s.OW : s.W;
    const index_t RH = backward ? s.H : s.OH, RW = backward ? s.W : s.OW;
    const index_t ph = backward ? K - 1 - s.ph : s.ph, pw = backward ? K - 1 - s.pw : s.pw;
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p) {
        const T* k = wt + (p % s.C) * K * K;
        if (K == 3) run_plane<3>(in + p * IH * IW, IH, IW, ph, pw, k, backward, out + p * RH * RW, RH, RW);
        else run_plane<5>(in + p * IH * IW, IH, IW, ph, pw, k, backward, out + p * RH * RW, RH, RW);
    }
    return true;
}

template <typename T>
void depthwise_forward(const T* x, const T* wt, T* out, const ConvShape& s) {
    if (depthwise_fast(x, wt, out, s, false)) return;
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
    if (depthwise_fast(grad, wt, dx, s, true)) return;
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
    if (const int K = plane_kernel(s)) {
        const auto kernel = plane_dw(K, T(0));
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
        for (index_t c = 0; c < s.C; ++c)
            kernel(x + c * s.H * s.W, grad + c * s.OH * s.OW, s.N, s.C, s.H, s.W, s.ph, s.pw, s.OH, s.OW,
                   dwt + c * KK);
        return;
    }
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

// One image at a time, when an image has enough output pixels (L) to keep both GEMM
// threads busy: the GEMM then writes out[n] (O, L) in place -- no (O, N*L) temporary to
// copy back to NCHW -- and im2col's columns for one image (e.g. 7 MB for layer1) are
// still in cache when the GEMM packs them, instead of a whole batch's (58 MB) that went
// out to memory and back.  Small images (layer4: L = 49) go as one batched GEMM instead,
// where N*L columns make a better-shaped product.
inline bool per_image(const ConvShape& s) { return s.G == 1 && s.N > 1 && s.OH * s.OW >= 1024; }

inline ConvShape one_image(ConvShape s) { s.N = 1; return s; }

// Whether to hand whole images to the threads: when one image's GEMM is too small for
// minidl::matmul to split (below its 4 MFLOP threshold, e.g. the first layer of a small
// CNN: 16 x 27 x 1024), going image after image would leave every thread but one idle.
inline bool threads_over_images(const ConvShape& s, index_t M, index_t N, index_t K) {
    return s.N > 1 && num_threads() > 1 && 2.0 * M * N * K < 4e6;
}

// A 1x1 kernel with stride 1 and no padding: an image (C, H*W) already is its column
// matrix; skip im2col.
inline bool pointwise(const ConvShape& s) {
    return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
}

template <typename T>
void conv2d_forward_impl(const T* x, const T* wt, T* out, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_forward(x, wt, out, s);
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, NL = s.N * L;
    if (s.G == 1 && (s.N == 1 || per_image(s))) {
        const ConvShape s1 = one_image(s);
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (threads_over_images(s, s.O, L, CKK))
        for (index_t n = 0; n < s.N; ++n) {
            T* cols = pointwise(s) ? nullptr : workspace<T>(0, CKK * L);  // one per thread
            const T* xn = x + n * s.C * s.H * s.W;
            if (cols) im2col_rows(xn, cols, s1, 0);
            matmul(wt, cols ? cols : xn, out + n * s.O * L, 1, s.O, L, CKK);
        }
        return;
    }
    T* cols = workspace<T>(0, CKK * NL);
    T* tmp = workspace<T>(1, Og * NL);
    for (index_t g = 0; g < s.G; ++g) {
        im2col_rows(x, cols, s, g);
        matmul(wt + g * Og * CKK, cols, tmp, 1, Og, NL, CKK);
#pragma omp parallel for collapse(2) schedule(static) if (Og * NL >= (1 << 15)) num_threads(num_threads())
        for (index_t n = 0; n < s.N; ++n)
            for (index_t o = 0; o < Og; ++o)
                std::memcpy(out + (n * s.O + g * Og + o) * L, tmp + o * NL + n * L, sizeof(T) * L);
    }
}

// col2im: dx[n, g*Cg + c] = the sum of the columns' entries that came from each pixel.
// Every (n, c) plane of dx is summed by one thread: no races, deterministic.
template <typename T>
void col2im(const T* cols, T* dx, const ConvShape& s, index_t g) {
    const index_t Cg = s.C / s.G, L = s.OH * s.OW, NL = s.N * L;
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

template <typename T>
void conv2d_backward_data_impl(const T* grad, const T* wt, T* dx, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_backward_data(grad, wt, dx, s);
    const index_t Cg = s.C / s.G, Og = s.O / s.G, KK = s.kh * s.kw, CKK = Cg * KK, L = s.OH * s.OW,
                  NL = s.N * L;
    std::vector<T> wT(CKK * Og);
    if (per_image(s)) {
        // Per image, grad[n] (O, L) is the GEMM's right operand as it stands (no gather).
        const ConvShape s1 = one_image(s);
        transpose(wt, wT.data(), s.O, CKK, CKK, s.O);
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (threads_over_images(s, CKK, L, s.O))
        for (index_t n = 0; n < s.N; ++n) {
            T* cols = workspace<T>(0, CKK * L);  // one per thread
            matmul(wT.data(), grad + n * s.O * L, cols, 1, CKK, L, s.O);
            col2im(cols, dx + n * s.C * s.H * s.W, s1, 0);
        }
        return;
    }
    T* gm = workspace<T>(1, Og * NL);
    T* cols = workspace<T>(0, CKK * NL);
    for (index_t g = 0; g < s.G; ++g) {
        gather_grad(grad, gm, s, g);
        transpose(wt + g * Og * CKK, wT.data(), Og, CKK, CKK, Og);
        matmul(wT.data(), gm, cols, 1, CKK, NL, Og);
        col2im(cols, dx, s, g);
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
        // gT rows n*L .. n*L+L-1 = grad[n, group g] (Og, L) transposed.
#pragma omp parallel for schedule(static) if (Og * NL >= (1 << 15)) num_threads(num_threads())
        for (index_t n = 0; n < s.N; ++n)
            transpose(grad + (n * s.O + g * Og) * L, gT + n * L * Og, Og, L, L, Og);
        matmul(cols, gT, res, 1, CKK, Og, NL);
        transpose(res, dwt + g * Og * CKK, CKK, Og, Og, CKK);
    }
}

// ------------------------------------------------------------------ pooling

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
inline void max_pool_plane(const T* plane, T* out, index_t* winner, const ConvShape& s) {
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
// Compiled for AVX-512 / AVX2 / x86-64 (see MINIDL_MULTIVERSION): AVX-512's masked
// stores are what lets GCC vectorise the selects above (1.4x over the AVX2 build).
MINIDL_MULTIVERSION void max_pool_plane_f32(const float* plane, float* out, index_t* winner, const ConvShape& s) {
    max_pool_plane(plane, out, winner, s);
}
MINIDL_MULTIVERSION void max_pool_plane_f64(const double* plane, double* out, index_t* winner, const ConvShape& s) {
    max_pool_plane(plane, out, winner, s);
}
void max_pool_plane_best(const float* p, float* o, index_t* w, const ConvShape& s) { max_pool_plane_f32(p, o, w, s); }
void max_pool_plane_best(const double* p, double* o, index_t* w, const ConvShape& s) { max_pool_plane_f64(p, o, w, s); }

template <typename T>
void max_pool_impl(const T* x, T* out, index_t* winner, const ConvShape& s) {
#pragma omp parallel for schedule(static) if (big(s)) num_threads(num_threads())
    for (index_t p = 0; p < s.N * s.C; ++p)
        max_pool_plane_best(x + p * s.H * s.W, out + p * s.OH * s.OW, winner + p * s.OH * s.OW, s);
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
