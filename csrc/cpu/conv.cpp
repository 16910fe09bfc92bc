// csrc/cpu/conv.cpp — 2-D convolution (forward, backward data, backward weight) and
// max / average pooling, NCHW, float32 and float64.
//
// What:   out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] * in[n, g*C/G + c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//         (zero outside the image), with stride, padding, dilation and groups G.
// How:    general case: im2col + minidl::matmul, tile by tile (see "the three passes"):
//         the output is cut into tiles (a few rows of an image, or a few small images),
//         and a tile's column matrix, cols (C/G*kh*kw, P) = the input patches under its P
//         output pixels, is built 256 rows at a time, so that each slice stays in cache
//         from im2col through its GEMM.  Per tile and group g (sums over the slices):
//           forward:  out[tile] = w_g @ cols, written in place (a strided block of out);
//                     a 1x1 / stride 1 / no padding conv reads x as its own cols.
//           dx:       cols = w_g^T @ grad[tile] (w^T read in place), then col2im adds the
//                     columns back into dx; one thread owns all tiles of an image (their
//                     windows overlap): no races, deterministic.
//           dw:       dw_g += grad[tile] @ cols^T, in a partial sum per thread, added up
//                     in a fixed order at the end (deterministic for a thread count).
//         depthwise (G == C == O): a direct loop per (n, c) plane (dw: per channel),
//         since a matmul with one input channel per group has nothing to reuse.  Stride-1
//         3x3 and 5x5 kernels (MobileNet, EfficientNet) have their own loop with the taps
//         unrolled over a zero-bordered copy of the plane, compiled for AVX-512 / AVX2.
//         Pooling: direct loops per (n, c) plane.
// FLOPs:  conv: 2 * N * O * OH * OW * C/G * kh * kw per pass (forward, dx and dw each).
// Bytes:  the columns: sizeof(T) * C/G * kh * kw * N * OH * OW per group (written once,
//         read by the matmul, in cache-sized tiles), plus input, weight and output.
// Threads: OpenMP over tiles (each GEMM then on one thread) when there are enough to
//         share, else the GEMMs parallelise themselves (matmul.cpp); over (n, c) planes /
//         channels for depthwise and pooling.  _C.set_num_threads(n).
// Reference: conv2d, conv2d_backward_data, conv2d_backward_weight, max_pool2d(_backward),
//         avg_pool2d(_backward) in minidl/backend/numpy_ref.py. max_pool2d's winner is the
//         window offset i*kw + j of the maximum (first one on ties), numpy_ref's contract.
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "conv or pool"
// Bench:  .venv/bin/python -m benchmarks.bench_conv    (ResNet-18 layer shapes vs torch)
//         (--passes: forward / dx / dw timed separately)
// Measured: benchmarks/RESULTS.md.  History (batch 32, 2 threads, fwd + dx + dw,
// minidl's time / torch's in the same run): the whole batch's columns at once (58 MB for
// layer1), then one GEMM: 3x3 layers 1.58-1.97x, conv1 7x7/2 1.10x; in cache-sized tiles
// built 256 rows at a time: 1.20-1.54x and 0.64-0.74x.  What is left is the GEMM on these
// shapes (100-130 GFLOP/s a thread, 0.8-0.94x torch's own GEMM) against torch's oneDNN
// convolutions, which run at about its GEMM's speed.
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

// A scratch buffer per calling thread, kept between calls: allocating (page-faulting)
// and zeroing a buffer anew on each call costs as much as filling it.  Not zeroed: every
// kernel writes all of it.
template <typename T>
T* workspace(int slot, index_t n) {
    thread_local std::vector<T> bufs[3];
    std::vector<T>& b = bufs[slot];
    if (index_t(b.size()) < n) { b.clear(); b.shrink_to_fit(); b.resize(n); }
    return b.data();
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
inline __attribute__((always_inline)) void depthwise_plane(const T* in, index_t H, index_t W, index_t ph,
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
inline __attribute__((always_inline)) T dot(const T* MINIDL_RESTRICT a, const T* MINIDL_RESTRICT b, index_t n) {
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
inline __attribute__((always_inline)) void depthwise_plane_dw(const T* x, const T* grad, index_t N, index_t C,
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
// The general convolution is a GEMM over "columns": column (n, y, x) of the column
// matrix holds the C/G*kh*kw input values under output pixel (y, x) of image n.  Building
// all N*OH*OW columns at once (58 MB for ResNet18's layer1 at batch 32) sends them out to
// memory and back, and page-faults a fresh buffer; so the output is cut into tiles --
// a few rows of one image, or a few whole images when images are small -- and each
// tile's columns are made a slice of rows at a time (RB below), small enough to stay in
// the core's L2 cache from im2col through the GEMM.  The threads take tiles (each GEMM
// then runs on one thread), or, when there are too few tiles to share, go through them
// one by one with threaded GEMMs.

// A tile: output rows [y0, y1) of images [n0, n0 + nb) (nb > 1 only with whole images).
struct Tile {
    index_t n0, nb, y0, y1;
};

// The column matrix of a tile is built and used RB rows (a slice of C/G*kh*kw) at a time,
// each slice a GEMM of its own that adds into the result: RB x P floats (e.g. 256 x 784:
// 0.8 MB) stay in the core's L2 from im2col to the GEMM, where the whole matrix (layer4:
// 4608 x 784, 14 MB per thread) went out to memory and back.  RB = 256 is matmul.cpp's
// KC, the depth the GEMM slices K into anyway, so slicing here costs it nothing.
constexpr index_t RB = 256;

// How the output is cut: `rows` output rows per tile, or, when one image is narrower than
// P, whole images, about P / (OH*OW) per tile.  A tile should be P columns wide with
//   P >= 512 KiB / (min(CKK, RB) * sizeof(T)): a slice of columns about fills L2 (a
//                  narrower tile would only make more, smaller GEMMs),
//   P >= 2 * O/G:  each tile's GEMM packs all the weights (O/G x CKK) again -- and dw's
//                  adds into all of dw -- so P must be large next to O/G to pay for that,
//   P >= 256:      a GEMM narrower than that is mostly edges,
// whichever is largest.  E.g. ResNet18 at batch 32: layer1 (O = 64, 56x56): 10 rows,
// 560 columns; layer3 (O = 256, 14x14): 2 or 3 images, 392-588 columns; layer4 (O = 512,
// 7x7): 16 images, 784 columns (2 tiles, one per thread).  (Measured against 4 * O/G,
// which made layer4 one tile of 32 images with threaded GEMMs: 12-18% slower forward and
// dx.)
struct TilePlan {
    index_t N, OH, rows, chunks;  // rows per tile; chunks: groups of whole images
    // Chunk k: images [n0(k), n0(k + 1)) -- sizes differ by at most one.
    index_t n0(index_t k) const { return N * k / chunks; }
    // Calls f(tile) for each tile of chunk k, in order of rows.
    template <typename F>
    void for_tiles(index_t k, F&& f) const {
        for (index_t y0 = 0; y0 < OH; y0 += rows) f(Tile{n0(k), n0(k + 1) - n0(k), y0, std::min(OH, y0 + rows)});
    }
};

template <typename T>
TilePlan plan_tiles(const ConvShape& s) {
    const index_t CKK = s.C / s.G * s.kh * s.kw, L = s.OH * s.OW;
    const index_t P = std::max({(index_t(512) << 10) / (std::min(CKK, RB) * index_t(sizeof(T))), 2 * (s.O / s.G), index_t(256)});
    TilePlan p{s.N, s.OH, std::clamp<index_t>((P + s.OW - 1) / s.OW, 1, s.OH), s.N};
    if (p.rows == s.OH) {  // whole images: as many as make P columns
        const index_t nb = std::clamp<index_t>((P + L - 1) / L, 1, s.N);
        p.chunks = (s.N + nb - 1) / nb;
        const index_t th = num_threads();  // a multiple of the thread count, so that they all finish together
        if (th > 1 && p.chunks >= th) p.chunks = std::min(s.N, (p.chunks + th - 1) / th * th);
    }
    return p;
}

// Whether the threads should take whole chunks (each GEMM on one thread): when there are
// at least as many as threads (plan_tiles makes their number a multiple of the threads).
// Otherwise the chunks go one by one, with threaded GEMMs (and a threaded im2col / col2im).
inline bool threads_over_chunks(const TilePlan& p) { return num_threads() > 1 && p.chunks >= num_threads(); }

inline index_t tile_width(const Tile& t, const ConvShape& s) { return t.nb * (t.y1 - t.y0) * s.OW; }

// Rows [r0, r1) of the tile's column matrix for group g, into cols (r1 - r0, P):
// row r = (c*kh + i)*kw + j, column (n - n0)*P1 + (y - y0)*OW + xo holds
// x[n, g*C/G + c, y*sh + i*dh - ph, xo*sw + j*dw - pw], zero outside the image.
// (GCC turns a loop that stores zeros into a call to memset -- here the slowest way to
// zero one or two floats; the attribute keeps the loops.  Measured: 0-10% off the three
// passes of ResNet18's 3x3 layers, ~4% on average.)
template <typename T>
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void im2col(const T* x, T* cols, const ConvShape& s, index_t g, const Tile& t, index_t r0, index_t r1) {
    const index_t Cg = s.C / s.G, KK = s.kh * s.kw, P = tile_width(t, s);
    // (Threaded only when called outside the threads' loop over tiles: a nested region runs on one.)
#pragma omp parallel for schedule(static) num_threads(num_threads()) if ((r1 - r0) * P >= (1 << 16))
    for (index_t r = r0; r < r1; ++r) {
        const index_t c = g * Cg + r / KK, i = (r % KK) / s.kw, j = r % s.kw;
        const index_t off = j * s.dw - s.pw;
        index_t lo, hi;
        valid_range(off, s.sw, s.W, s.OW, lo, hi);
        T* MINIDL_RESTRICT dst = cols + (r - r0) * P;
        for (index_t n = t.n0; n < t.n0 + t.nb; ++n) {
            const T* plane = x + (n * s.C + c) * s.H * s.W;
            for (index_t y = t.y0; y < t.y1; ++y, dst += s.OW) {
                const index_t h = y * s.sh + i * s.dh - s.ph;
                const bool inside = h >= 0 && h < s.H;
                const T* MINIDL_RESTRICT row = plane + (inside ? h : 0) * s.W + off;
                const index_t a = inside ? lo : s.OW, b = inside ? hi : s.OW;
                // Plain loops, not std::fill: the segments are a few floats long (7 on a
                // 7x7 image, the zeros one or two), too short for a call to memset.
                index_t xo = 0;
                for (; xo < a; ++xo) dst[xo] = T(0);
                if (s.sw == 1)
                    for (; xo < b; ++xo) dst[xo] = row[xo];
                else
                    for (; xo < b; ++xo) dst[xo] = row[xo * s.sw];
                for (; xo < s.OW; ++xo) dst[xo] = T(0);
            }
        }
    }
}

// The inverse, summing, for rows [r0, r1) of the column matrix in cols:
// dx[n, g*C/G + c] += every column entry that came from that pixel.
template <typename T>
void col2im(const T* cols, T* dx, const ConvShape& s, index_t g, const Tile& t, index_t r0, index_t r1) {
    const index_t KK = s.kh * s.kw, P = tile_width(t, s), P1 = (t.y1 - t.y0) * s.OW;
    const index_t c0 = r0 / KK, c1 = (r1 + KK - 1) / KK;  // the channels these rows belong to
    // (Each (n, c) plane is summed by one thread: no races.)
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads()) if ((r1 - r0) * P >= (1 << 16))
    for (index_t n = t.n0; n < t.n0 + t.nb; ++n)
        for (index_t c = c0; c < c1; ++c) {
            T* plane = dx + (n * s.C + g * (s.C / s.G) + c) * s.H * s.W;
            for (index_t ij = std::max(r0, c * KK) - c * KK; ij < std::min(r1, (c + 1) * KK) - c * KK; ++ij) {
                const index_t i = ij / s.kw, j = ij % s.kw;
                const T* src = cols + (c * KK + ij - r0) * P + (n - t.n0) * P1;
                const index_t off = j * s.dw - s.pw;
                index_t lo, hi;
                valid_range(off, s.sw, s.W, s.OW, lo, hi);
                for (index_t y = t.y0; y < t.y1; ++y) {
                    const index_t h = y * s.sh + i * s.dh - s.ph;
                    if (h < 0 || h >= s.H) continue;
                    T* MINIDL_RESTRICT row = plane + h * s.W + off;
                    const T* MINIDL_RESTRICT srow = src + (y - t.y0) * s.OW;
                    if (s.sw == 1)
                        for (index_t xo = lo; xo < hi; ++xo) row[xo] += srow[xo];
                    else
                        for (index_t xo = lo; xo < hi; ++xo) row[xo * s.sw] += srow[xo];
                }
            }
        }
}

// A (rows, P) block of an NCHW tensor t with `channels` channels, for the tile: channels
// [c0, c0 + rows), pixels (y0, 0) .. (y1, 0) of each image.  One image: a strided view of
// t itself (*view = true).  Several images: gathered into buf.
template <typename T>
const T* tile_block(const T* t, index_t channels, index_t c0, index_t rows, const ConvShape& s, const Tile& tl,
                    index_t L, T* buf, Strides& st) {
    if (tl.nb == 1) {
        st = Strides{0, L, 1};
        return t + (tl.n0 * channels + c0) * L + tl.y0 * s.OW;
    }
    const index_t P = tile_width(tl, s);  // whole images: P = nb * L
    for (index_t r = 0; r < rows; ++r)
        for (index_t n = 0; n < tl.nb; ++n)
            std::memcpy(buf + r * P + n * L, t + ((tl.n0 + n) * channels + c0 + r) * L, sizeof(T) * L);
    st = Strides{0, P, 1};
    return buf;
}

// A 1x1 kernel with stride 1 and no padding: an image (C, H*W) already is its column
// matrix, so a one-image tile's columns are a view of x (no im2col, no col2im).
inline bool pointwise(const ConvShape& s) {
    return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
}

// out[tile] = w_g (O/G, CKK) @ cols (CKK, P) for each group g, as the sum over row
// slices r0 of w_g[:, r0:r1] @ cols[r0:r1].
template <typename T>
void forward_tile(const T* x, const T* wt, T* out, const ConvShape& s, const Tile& t) {
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);  // per thread
    T* tmp = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.G; ++g) {
        const T* w = wt + g * Og * CKK;
        // The tile's rows of out[n, group g] are a strided block of out; several images go via tmp.
        T* c = t.nb == 1 ? out + (t.n0 * s.O + g * Og) * L + t.y0 * s.OW : tmp;
        const Strides cs{0, t.nb == 1 ? L : P, 1};
        if (pointwise(s) && t.nb == 1) {  // x is its own column matrix
            Strides bs;
            const T* b = tile_block(x, s.C, g * Cg, Cg, s, t, L, cols, bs);
            matmul(w, Strides{0, CKK, 1}, b, bs, c, cs, 1, Og, P, CKK);
        } else {
            for (index_t r0 = 0; r0 < CKK; r0 += RB) {
                const index_t r1 = std::min(CKK, r0 + RB);
                im2col(x, cols, s, g, t, r0, r1);
                matmul(w + r0, Strides{0, CKK, 1}, cols, Strides{0, P, 1}, c, cs, 1, Og, P, r1 - r0, r0 > 0);
            }
        }
        if (t.nb == 1) continue;
        for (index_t n = 0; n < t.nb; ++n)
            for (index_t o = 0; o < Og; ++o)
                std::memcpy(out + ((t.n0 + n) * s.O + g * Og + o) * L, tmp + o * P + n * L, sizeof(T) * L);
    }
}

template <typename T>
void conv2d_forward_impl(const T* x, const T* wt, T* out, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_forward(x, wt, out, s);
    const TilePlan p = plan_tiles<T>(s);
    // Forward tiles are independent (each writes its own part of out), rows of one image too.
    const index_t per_chunk = (s.OH + p.rows - 1) / p.rows, tiles = p.chunks * per_chunk;
    const bool over_tiles = num_threads() > 1 && tiles >= num_threads();
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (over_tiles)
    for (index_t k = 0; k < tiles; ++k) {
        const index_t c = k / per_chunk, y0 = k % per_chunk * p.rows;
        forward_tile(x, wt, out, s, Tile{p.n0(c), p.n0(c + 1) - p.n0(c), y0, std::min(s.OH, y0 + p.rows)});
    }
}

// dx[tile's images] += col2im(w_g^T (CKK, O/G) @ grad_g (O/G, P)).  w_g^T is read in place
// through its strides.  The tiles of an image overlap in dx (neighbouring windows share
// pixels), so one thread does all the tiles of its images, in order.
template <typename T>
void backward_data_tile(const T* grad, const T* wt, T* dx, const ConvShape& s, const Tile& t) {
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);
    T* gbuf = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.G; ++g) {
        Strides gs;
        const T* gb = tile_block(grad, s.O, g * Og, Og, s, t, L, gbuf, gs);
        const T* w = wt + g * Og * CKK;
        const Strides wTs{0, 1, CKK};  // element (i, o) of w_g^T is w_g[o, i]
        if (pointwise(s) && t.nb == 1) {  // col2im is the identity: write dx directly
            matmul(w, wTs, gb, gs, dx + (t.n0 * s.C + g * Cg) * L + t.y0 * s.OW, Strides{0, L, 1}, 1, CKK, P, Og);
            continue;
        }
        for (index_t r0 = 0; r0 < CKK; r0 += RB) {  // rows r0..r1 of cols = rows r0..r1 of w_g^T @ grad_g
            const index_t r1 = std::min(CKK, r0 + RB);
            matmul(w + r0, wTs, gb, gs, cols, Strides{0, P, 1}, 1, r1 - r0, P, Og);
            col2im(cols, dx, s, g, t, r0, r1);
        }
    }
}

template <typename T>
void conv2d_backward_data_impl(const T* grad, const T* wt, T* dx, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_backward_data(grad, wt, dx, s);
    const TilePlan p = plan_tiles<T>(s);
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (threads_over_chunks(p))
    for (index_t k = 0; k < p.chunks; ++k) {
        std::fill(dx + p.n0(k) * s.C * s.H * s.W, dx + p.n0(k + 1) * s.C * s.H * s.W, T(0));
        p.for_tiles(k, [&](const Tile& t) { backward_data_tile(grad, wt, dx, s, t); });
    }
}

// acc (O, CKK) (+)= grad_g (O/G, P) @ cols^T (P, CKK) for each group g, the column matrix
// read transposed in place; a slice of its rows gives a slice of acc's columns.
template <typename T>
void backward_weight_tile(const T* grad, const T* x, T* acc, const ConvShape& s, const Tile& t, bool accumulate) {
    const index_t Cg = s.C / s.G, Og = s.O / s.G, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);
    T* gbuf = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.G; ++g) {
        Strides gs;
        const T* gb = tile_block(grad, s.O, g * Og, Og, s, t, L, gbuf, gs);
        T* a = acc + g * Og * CKK;
        if (pointwise(s) && t.nb == 1) {
            Strides xs;
            const T* b = tile_block(x, s.C, g * Cg, Cg, s, t, L, cols, xs);
            // the (Cg, P) block of x, read transposed: element (p, i) at b[i * xs.row + p]
            matmul(gb, gs, b, Strides{0, 1, xs.row}, a, Strides{0, CKK, 1}, 1, Og, CKK, P, accumulate);
            continue;
        }
        for (index_t r0 = 0; r0 < CKK; r0 += RB) {
            const index_t r1 = std::min(CKK, r0 + RB);
            im2col(x, cols, s, g, t, r0, r1);
            // element (p, i) of cols^T is cols[i, p]
            matmul(gb, gs, cols, Strides{0, 1, P}, a + r0, Strides{0, CKK, 1}, 1, Og, r1 - r0, P, accumulate);
        }
    }
}

template <typename T>
void conv2d_backward_weight_impl(const T* grad, const T* x, T* dwt, const ConvShape& s) {
    if (is_depthwise(s)) return depthwise_backward_weight(grad, x, dwt, s);
    const TilePlan p = plan_tiles<T>(s);
    const index_t size = s.O * (s.C / s.G) * s.kh * s.kw;
    if (!threads_over_chunks(p)) {  // tile after tile, summing into dw, with threaded GEMMs
        bool first = true;
        for (index_t k = 0; k < p.chunks; ++k)
            p.for_tiles(k, [&](const Tile& t) {
                backward_weight_tile(grad, x, dwt, s, t, !first);
                first = false;
            });
        return;
    }
    // Thread r sums the chunks of its share of the batch into partial r, then the partials
    // are added in order: the same sums in the same order on every call (deterministic),
    // which a shared accumulator with atomic adds, or chunks taken dynamically, would not give.
    const int threads = num_threads();
    T* partial = workspace<T>(2, (threads - 1) * size);  // thread 0 sums into dwt itself
#pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int r = 0; r < threads; ++r) {
        T* acc = r == 0 ? dwt : partial + (r - 1) * size;
        const index_t k0 = p.chunks * r / threads, k1 = p.chunks * (r + 1) / threads;
        bool first = true;
        for (index_t k = k0; k < k1; ++k)
            p.for_tiles(k, [&](const Tile& t) {
                backward_weight_tile(grad, x, acc, s, t, !first);
                first = false;
            });
        if (first) std::fill(acc, acc + size, T(0));
    }
    for (int r = 1; r < threads; ++r) {
        const T* part = partial + (r - 1) * size;
        for (index_t i = 0; i < size; ++i) dwt[i] += part[i];
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
