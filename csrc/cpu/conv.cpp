// csrc/cpu/conv.cpp — 2-D convolution as a GEMM (forward, backward data, backward weight),
// NCHW, float32 and float64; groups == C == O goes to depthwise.cpp.
//
// What:   out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] * in[n, g*C/G + c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//         (zero outside the image), with stride, padding, dilation and G groups.
// How:    im2col + minidl::matmul, tile by tile (see "The general convolution" below):
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
// FLOPs:  2 * N * O * OH * OW * C/G * kh * kw per pass (forward, dx and dw each).
// Bytes:  the columns: sizeof(T) * C/G * kh * kw * N * OH * OW per group (written once,
//         read by the matmul, in cache-sized tiles), plus input, weight and output.
// Threads: OpenMP over tiles (each GEMM then on one thread) when there are enough to
//         share, else the GEMMs parallelise themselves (matmul.cpp).  _C.set_num_threads(n).
// Reference: conv2d, conv2d_backward_data, conv2d_backward_weight in minidl/backend/numpy_ref.py.
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k "conv"
// Bench:  .venv/bin/python -m benchmarks.bench_conv    (ResNet-18 layer shapes vs torch)
//         (--passes: forward / dx / dw timed separately)
// Measured: benchmarks/RESULTS.md.  History (batch 32, 2 threads, fwd + dx + dw,
// minidl's time / torch's in the same run): the whole batch's columns at once (58 MB for
// layer1), then one GEMM: 3x3 layers 1.58-1.97x, conv1 7x7/2 1.10x; in cache-sized tiles
// built 256 rows at a time: 1.20-1.54x and 0.64-0.74x.  What is left is the GEMM on these
// shapes (100-130 GFLOP/s a thread, 0.8-0.94x torch's own GEMM) against torch's oneDNN
// convolutions, which run at about its GEMM's speed.
#include <algorithm>
#include <cstring>
#include <vector>

#include "conv.h"

namespace minidl {
namespace {

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
TilePlan plan_tiles(const ConvGeometry& s) {
    const index_t CKK = s.C / s.groups * s.kh * s.kw, L = s.OH * s.OW;
    const index_t P = std::max({(index_t(512) << 10) / (std::min(CKK, RB) * index_t(sizeof(T))), 2 * (s.O / s.groups), index_t(256)});
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

inline index_t tile_width(const Tile& t, const ConvGeometry& s) { return t.nb * (t.y1 - t.y0) * s.OW; }

// Rows [r0, r1) of the tile's column matrix for group g, into cols (r1 - r0, P):
// row r = (c*kh + i)*kw + j, column (n - n0)*P1 + (y - y0)*OW + xo holds
// x[n, g*C/G + c, y*sh + i*dh - ph, xo*sw + j*dw - pw], zero outside the image.
// (GCC turns a loop that stores zeros into a call to memset -- here the slowest way to
// zero one or two floats; the attribute keeps the loops.  Measured: 0-10% off the three
// passes of ResNet18's 3x3 layers, ~4% on average.)
template <typename T>
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void im2col(const T* x, T* cols, const ConvGeometry& s, index_t g, const Tile& t, index_t r0, index_t r1) {
    const index_t Cg = s.C / s.groups, KK = s.kh * s.kw, P = tile_width(t, s);
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
void col2im(const T* cols, T* dx, const ConvGeometry& s, index_t g, const Tile& t, index_t r0, index_t r1) {
    const index_t KK = s.kh * s.kw, P = tile_width(t, s), P1 = (t.y1 - t.y0) * s.OW;
    const index_t c0 = r0 / KK, c1 = (r1 + KK - 1) / KK;  // the channels these rows belong to
    // (Each (n, c) plane is summed by one thread: no races.)
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads()) if ((r1 - r0) * P >= (1 << 16))
    for (index_t n = t.n0; n < t.n0 + t.nb; ++n)
        for (index_t c = c0; c < c1; ++c) {
            T* plane = dx + (n * s.C + g * (s.C / s.groups) + c) * s.H * s.W;
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
const T* tile_block(const T* t, index_t channels, index_t c0, index_t rows, const ConvGeometry& s, const Tile& tl,
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
inline bool pointwise(const ConvGeometry& s) {
    return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
}

// out[tile] = w_g (O/G, CKK) @ cols (CKK, P) for each group g, as the sum over row
// slices r0 of w_g[:, r0:r1] @ cols[r0:r1].
template <typename T>
void forward_tile(const T* x, const T* wt, T* out, const ConvGeometry& s, const Tile& t) {
    const index_t Cg = s.C / s.groups, Og = s.O / s.groups, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);  // per thread
    T* tmp = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.groups; ++g) {
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

// dx[tile's images] += col2im(w_g^T (CKK, O/G) @ grad_g (O/G, P)).  w_g^T is read in place
// through its strides.  The tiles of an image overlap in dx (neighbouring windows share
// pixels), so one thread does all the tiles of its images, in order.
template <typename T>
void backward_data_tile(const T* grad, const T* wt, T* dx, const ConvGeometry& s, const Tile& t) {
    const index_t Cg = s.C / s.groups, Og = s.O / s.groups, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);
    T* gbuf = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.groups; ++g) {
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

// acc (O, CKK) (+)= grad_g (O/G, P) @ cols^T (P, CKK) for each group g, the column matrix
// read transposed in place; a slice of its rows gives a slice of acc's columns.
template <typename T>
void backward_weight_tile(const T* grad, const T* x, T* acc, const ConvGeometry& s, const Tile& t, bool accumulate) {
    const index_t Cg = s.C / s.groups, Og = s.O / s.groups, CKK = Cg * s.kh * s.kw, L = s.OH * s.OW, P = tile_width(t, s);
    T* cols = workspace<T>(0, std::min(CKK, RB) * P);
    T* gbuf = workspace<T>(1, Og * P);
    for (index_t g = 0; g < s.groups; ++g) {
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

}  // namespace

template <typename T>
void conv2d(const T* x, const T* wt, T* out, const ConvGeometry& s) {
    if (is_depthwise(s)) return depthwise_conv2d(x, wt, out, s);
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
MINIDL_FLOAT_KERNEL(conv2d)

template <typename T>
void conv2d_backward_data(const T* grad, const T* wt, T* dx, const ConvGeometry& s) {
    if (is_depthwise(s)) return depthwise_conv2d_backward_data(grad, wt, dx, s);
    const TilePlan p = plan_tiles<T>(s);
#pragma omp parallel for schedule(dynamic) num_threads(num_threads()) if (threads_over_chunks(p))
    for (index_t k = 0; k < p.chunks; ++k) {
        std::fill(dx + p.n0(k) * s.C * s.H * s.W, dx + p.n0(k + 1) * s.C * s.H * s.W, T(0));
        p.for_tiles(k, [&](const Tile& t) { backward_data_tile(grad, wt, dx, s, t); });
    }
}
MINIDL_FLOAT_KERNEL(conv2d_backward_data)

template <typename T>
void conv2d_backward_weight(const T* grad, const T* x, T* dwt, const ConvGeometry& s) {
    if (is_depthwise(s)) return depthwise_conv2d_backward_weight(grad, x, dwt, s);
    const TilePlan p = plan_tiles<T>(s);
    const index_t size = s.O * (s.C / s.groups) * s.kh * s.kw;
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
MINIDL_FLOAT_KERNEL(conv2d_backward_weight)

}  // namespace minidl
