// csrc/cpu/depthwise.cpp — depthwise 2-D convolution (groups == C == O: one input channel per
// output channel), forward, backward data and backward weight, NCHW, float32 and float64.
//
// What:   out[n, c, y, x] = sum_{i, j} w[c, 0, i, j] * in[n, c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//         (zero outside the image): conv2d with groups == C == O (conv.cpp hands these over).
// How:    a direct loop per (n, c) plane (dw: per channel), since a matmul with one input
//         channel per group has nothing to reuse.  Stride-1 3x3 and 5x5 kernels (MobileNet,
//         EfficientNet) have their own loop with the taps unrolled over a zero-bordered copy of
//         the plane, compiled for AVX-512 / AVX2 (depthwise_plane below).
// FLOPs:  2 * N * C * OH * OW * kh * kw per pass.
// Bytes:  sizeof(T) * N * C * (H*W + OH*OW) per pass, plus the weights.
// Threads: OpenMP over (n, c) planes (dw: over channels).  _C.set_num_threads(n).
// Reference: conv2d, conv2d_backward_data, conv2d_backward_weight in minidl/backend/numpy_ref.py.
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "conv"
// Bench:  .venv/bin/python -m benchmarks.bench_conv    (the "depthwise 3x3 (MobileNet)" row)
#include <algorithm>
#include <vector>

#include "conv.h"

namespace minidl {
namespace {

// The general kernels (depthwise_conv2d etc. below, any stride and dilation): loops
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
// copy the plane into a zero-bordered scratch, PH = OH + K - 1 rows of PW = OW + K - 1
// (so no tap needs a bounds test), then
//   out[y, x] = sum_{i,j} k[i, j] * padded[y + i, x + j]
// with the K*K taps known at compile time and unrolled.  The loop runs over the padded
// plane as one flat array, t = y*PW + x: out_flat[t] = sum k[i, j] * padded[t + i*PW + j]
// -- the same sum, since padded[y + i, x + j] = padded_flat[t + i*PW + j] -- for every t,
// x >= OW included (K - 1 wasted columns per row; they are dropped when the rows are
// copied out).  A loop over x alone would be too short to vectorise: EfficientNet's
// 14x14 and 7x7 planes have rows of fewer floats than one AVX-512 vector, and a loop
// over x of 14 ran 2.5x slower than torch on them.  (Rows of 32 or more go row by row,
// straight into out: for 56x56 planes that was 10-20% faster than the flat loop.)  With flip, k is used rotated by 180
// degrees: that turns backward-data (a "full" correlation of grad with the kernel) into
// the same loop.
template <int K, typename T>
MINIDL_INLINE void depthwise_plane(const T* in, index_t H, index_t W, index_t ph,
                                                           index_t pw, const T* k, bool flip, T* out,
                                                           index_t OH, index_t OW) {
    const index_t PW = OW + K - 1;
    const T* pad = padded_plane(in, H, W, ph, pw, OH + K - 1, PW);
    T kk[K * K];
    for (int t = 0; t < K * K; ++t) kk[t] = flip ? k[K * K - 1 - t] : k[t];
    // out_flat[0, n) = the taps at every t; rows of PW (x >= OW: wasted) into `flat`.
    const auto taps = [&](T* MINIDL_RESTRICT flat, const T* MINIDL_RESTRICT p, index_t n) {
        for (index_t t = 0; t < n; ++t) {
            T acc = 0;
#pragma GCC unroll 5
            for (int i = 0; i < K; ++i)
#pragma GCC unroll 5
                for (int j = 0; j < K; ++j) acc += kk[i * K + j] * p[t + i * PW + j];
            flat[t] = acc;
        }
    };
    if (OW >= 32) {  // rows long enough to vectorise on their own: written in place, no waste
        for (index_t y = 0; y < OH; ++y) taps(out + y * OW, pad + y * PW, OW);
        return;
    }
    thread_local std::vector<T> flat_buf;
    if (index_t(flat_buf.size()) < OH * PW) flat_buf.resize(OH * PW);
    taps(flat_buf.data(), pad, OH * PW - (K - 1));  // the last output, (OH - 1, OW - 1), is at n - 1
    for (index_t y = 0; y < OH; ++y) std::copy(flat_buf.data() + y * PW, flat_buf.data() + y * PW + OW, out + y * OW);
}

// dw for one channel (K*K taps) of a stride-1 depthwise conv, the same padded planes:
// dw[i, j] = sum_{n, y, x} grad[n, y, x] * padded_n[y + i, x + j].  As above, over flat
// planes: grad is copied into rows PW wide whose K - 1 extra columns stay zero, so that
// each tap is one dot product, sum_t grad_flat[t] * padded_flat[t + i*PW + j], a loop
// long enough to vectorise.
// sum_t a[t] * b[t] for t < n, in 32 running partial sums: a loop GCC vectorises (it
// does not reorder a single running sum by itself), with enough independent sums that
// the FMAs do not wait on each other's results (4 cycles of latency each).
template <typename T>
MINIDL_INLINE T dot(const T* MINIDL_RESTRICT a, const T* MINIDL_RESTRICT b, index_t n) {
    constexpr int S = 32;
    T part[S] = {};
    index_t t = 0;
    for (; t + S <= n; t += S)
        for (int l = 0; l < S; ++l) part[l] += a[t + l] * b[t + l];
    T sum = 0;
    for (; t < n; ++t) sum += a[t] * b[t];
    for (int l = 0; l < S; ++l) sum += part[l];
    return sum;
}

template <int K, typename T>
MINIDL_INLINE void depthwise_plane_dw(const T* x, const T* grad, index_t N, index_t C,
                                                              index_t H, index_t W, index_t ph, index_t pw,
                                                              index_t OH, index_t OW, T* dw) {
    const index_t PW = OW + K - 1, n = OH * PW - (K - 1);
    thread_local std::vector<T> gbuf;
    if (index_t(gbuf.size()) < OH * PW) gbuf.resize(OH * PW);
    T* MINIDL_RESTRICT g = gbuf.data();
    std::fill(g, g + OH * PW, T(0));
    T acc[K * K] = {};
    for (index_t b = 0; b < N; ++b) {
        const T* MINIDL_RESTRICT pad = padded_plane(x + b * C * H * W, H, W, ph, pw, OH + K - 1, PW);
        const T* gp = grad + b * C * OH * OW;
        for (index_t y = 0; y < OH; ++y) std::copy(gp + y * OW, gp + y * OW + OW, g + y * PW);
#pragma GCC unroll 5
        for (int i = 0; i < K; ++i)
#pragma GCC unroll 5
            for (int j = 0; j < K; ++j) {
                acc[i * K + j] += dot(g, pad + i * PW + j, n);
            }
    }
    for (int t = 0; t < K * K; ++t) dw[t] = acc[t];
}

// setup.py builds for baseline x86-64 (SSE2, 4 floats a vector); compile this loop also for
// AVX2 and AVX-512 and let the loader pick the best one the CPU has (MINIDL_CLONES,
// compiler.h: plain functions, not templates, hence one wrapper per K and dtype).
#define MINIDL_PLANE(K, T, NAME)                                                                    \
    MINIDL_CLONES void NAME(const T* in, index_t H, index_t W, index_t ph, index_t pw,       \
                                  const T* k, bool flip, T* out, index_t OH, index_t OW) {         \
        depthwise_plane<K>(in, H, W, ph, pw, k, flip, out, OH, OW);                               \
    }
MINIDL_PLANE(3, float, plane3_f32)
MINIDL_PLANE(5, float, plane5_f32)
MINIDL_PLANE(3, double, plane3_f64)
MINIDL_PLANE(5, double, plane5_f64)
#undef MINIDL_PLANE
#define MINIDL_PLANE_DW(K, T, NAME)                                                                 \
    MINIDL_CLONES void NAME(const T* x, const T* grad, index_t N, index_t C, index_t H,      \
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
inline int plane_kernel(const ConvGeometry& s) {
    if (s.kh != s.kw || s.sh != 1 || s.sw != 1 || s.dh != 1 || s.dw != 1) return 0;
    if (s.ph > s.kh - 1 || s.pw > s.kw - 1) return 0;   // backward's padding K-1-p must be >= 0
    return s.kh == 3 || s.kh == 5 ? int(s.kh) : 0;
}

template <typename T>
bool depthwise_fast(const T* in, const T* wt, T* out, const ConvGeometry& s, bool backward) {
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

}  // namespace

template <typename T>
void depthwise_conv2d(const T* x, const T* wt, T* out, const ConvGeometry& s) {
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
MINIDL_FLOAT_KERNEL(depthwise_conv2d)

template <typename T>
void depthwise_conv2d_backward_data(const T* grad, const T* wt, T* dx, const ConvGeometry& s) {
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
MINIDL_FLOAT_KERNEL(depthwise_conv2d_backward_data)

template <typename T>
void depthwise_conv2d_backward_weight(const T* grad, const T* x, T* dwt, const ConvGeometry& s) {
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
MINIDL_FLOAT_KERNEL(depthwise_conv2d_backward_weight)

}  // namespace minidl
