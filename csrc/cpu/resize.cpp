// csrc/cpu/resize.cpp — resizing (F.interpolate), nearest and bilinear, forward and backward, NCHW,
// float32 and float64.
//
// What:   upsample_nearest2d:   out[p, i, j] = x[p, rows[i], cols[j]]
//         upsample_bilinear2d:  out[p, i, j] = (1 - wy[i]) c[p, y0[i], j] + wy[i] c[p, y1[i], j], where
//                               c[p, r, j]   = (1 - wx[j]) x[p, r, x0[j]] + wx[j] x[p, r, x1[j]]
//         and their backward passes: the same maps transposed (scatter-adds).  p runs over the
//         N*C planes.  The maps (one entry per output row or column: rows = [y0; y1] and
//         cols = [x0; x1] for bilinear) are numpy_ref.nearest_source_index / linear_source_index,
//         PyTorch's arithmetic, computed once per call by minidl/backend/cpu.py.
// How:    one plane at a time; bilinear goes through a scratch c (H x w) per thread: every input
//         row interpolated along the columns once, then each output row blends two rows of c,
//         a contiguous loop that vectorises (and PyTorch's order of operations).
// FLOPs:  nearest none; bilinear 3 per element of c and 3 per output (twice that backward).
// Bytes:  sizeof(T) * N * C * (H*W + h*w).
// Threads: OpenMP over (n, c) planes.  _C.set_num_threads(n).
// Reference: upsample_nearest2d(_backward), upsample_bilinear2d(_backward) in minidl/backend/numpy_ref.py.
// Test:   .venv/bin/python -m pytest -q tests/test_resize.py
// Bench:  .venv/bin/python -m benchmarks.bench_ops    (the upsample rows)
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace minidl {
namespace {

// The maps are data: an entry outside [0, size) is std::out_of_range (IndexError), before anything is written.
void check_map(const char* op, const char* name, const index_t* map, index_t n, index_t size) {
    for (index_t k = 0; k < n; ++k)
        if (map[k] < 0 || map[k] >= size)
            throw std::out_of_range(std::string(op) + ": " + name + "[" + std::to_string(k) + "] = " +
                                    std::to_string(map[k]) + " is not in [0, " + std::to_string(size) + ")");
}

// Whether the work is worth an OpenMP region (small images run on the calling thread).
inline bool big(index_t planes, index_t in, index_t out) { return planes * (in + out) >= (1 << 15); }

// One output row of a nearest resize: src's pixels read through the column map.
template <typename T>
inline void gather_row(const T* MINIDL_RESTRICT src, const index_t* MINIDL_RESTRICT cols, T* MINIDL_RESTRICT out,
                       index_t w) {
    for (index_t j = 0; j < w; ++j) out[j] = src[cols[j]];
}

// The transpose of gather_row: row[cols[j]] += g[j].  Neighbours that read one pixel (a run of equal
// cols: two when doubling) are summed in a register first, one store per run instead of a chain of
// dependent adds to one address.
template <typename T>
inline void scatter_row(const T* MINIDL_RESTRICT g, const index_t* MINIDL_RESTRICT cols, T* MINIDL_RESTRICT row,
                        index_t w) {
    for (index_t j = 0; j < w;) {
        const index_t c = cols[j];
        T sum = g[j++];
        while (j < w && cols[j] == c) sum += g[j++];
        row[c] += sum;
    }
}

// c[r, :] = (1 - wx) x[r, x0] + wx x[r, x1] for every row r of one plane: x (H, W) -> c (H, w).
template <typename T>
void interpolate_columns(const T* MINIDL_RESTRICT x, const index_t* cols, const T* wx, T* MINIDL_RESTRICT c,
                         index_t H, index_t W, index_t w) {
    const index_t *x0 = cols, *x1 = cols + w;
    for (index_t r = 0; r < H; ++r, x += W, c += w)
        for (index_t j = 0; j < w; ++j) c[j] = (T(1) - wx[j]) * x[x0[j]] + wx[j] * x[x1[j]];
}

// out[i, :] = (1 - wy[i]) c[y0[i], :] + wy[i] c[y1[i], :] for every output row i: c (H, w) -> out (h, w).
template <typename T>
void blend_rows(const T* MINIDL_RESTRICT c, const index_t* rows, const T* wy, T* MINIDL_RESTRICT out, index_t h,
                index_t w) {
    for (index_t i = 0; i < h; ++i, out += w) {
        const T *a = c + rows[i] * w, *b = c + rows[h + i] * w, wb = wy[i], wa = T(1) - wb;
        for (index_t j = 0; j < w; ++j) out[j] = wa * a[j] + wb * b[j];
    }
}

// The transpose of blend_rows: each output row's gradient shared between its two rows of dc (H, w), zeroed first.
template <typename T>
void unblend_rows(const T* MINIDL_RESTRICT grad, const index_t* rows, const T* wy, T* MINIDL_RESTRICT dc, index_t H,
                  index_t h, index_t w) {
    std::fill(dc, dc + H * w, T(0));
    for (index_t i = 0; i < h; ++i, grad += w) {
        T *a = dc + rows[i] * w, *b = dc + rows[h + i] * w;
        const T wb = wy[i], wa = T(1) - wb;
        for (index_t j = 0; j < w; ++j) a[j] += wa * grad[j];
        for (index_t j = 0; j < w; ++j) b[j] += wb * grad[j];  // (a second loop: b may be a)
    }
}

// The transpose of interpolate_columns: each dc entry's gradient shared between its two pixels of dx (H, W).
template <typename T>
void uninterpolate_columns(const T* MINIDL_RESTRICT dc, const index_t* cols, const T* wx, T* MINIDL_RESTRICT dx,
                           index_t H, index_t W, index_t w) {
    const index_t *x0 = cols, *x1 = cols + w;
    std::fill(dx, dx + H * W, T(0));
    for (index_t r = 0; r < H; ++r, dx += W, dc += w)
        for (index_t j = 0; j < w; ++j) {
            dx[x0[j]] += (T(1) - wx[j]) * dc[j];
            dx[x1[j]] += wx[j] * dc[j];
        }
}

}  // namespace

// Each output row gathers its source row through the column map; a row with the same source as
// the row before it (every other row when doubling) copies that finished row instead.
template <typename T>
void upsample_nearest2d(const T* x, T* out, const index_t* rows, const index_t* cols, index_t planes, index_t H,
                        index_t W, index_t h, index_t w) {
    check_map("upsample_nearest2d", "rows", rows, h, H);
    check_map("upsample_nearest2d", "cols", cols, w, W);
#pragma omp parallel for schedule(static) if (big(planes, H * W, h * w)) num_threads(num_threads())
    for (index_t p = 0; p < planes; ++p) {
        T* o = out + p * h * w;
        for (index_t i = 0; i < h; ++i, o += w) {
            if (i > 0 && rows[i] == rows[i - 1]) std::copy(o - w, o, o);
            else gather_row(x + (p * H + rows[i]) * W, cols, o, w);
        }
    }
}
MINIDL_FLOAT_KERNEL(upsample_nearest2d)

// dx = 0, then each output row's gradient is added onto the row it copied, through the column map.
// One thread per plane, so no two threads add into one pixel, and each sum comes in one order
// (deterministic).
template <typename T>
void upsample_nearest2d_backward(const T* grad, T* dx, const index_t* rows, const index_t* cols, index_t planes,
                                 index_t H, index_t W, index_t h, index_t w) {
    check_map("upsample_nearest2d_backward", "rows", rows, h, H);
    check_map("upsample_nearest2d_backward", "cols", cols, w, W);
#pragma omp parallel for schedule(static) if (big(planes, H * W, h * w)) num_threads(num_threads())
    for (index_t p = 0; p < planes; ++p) {
        T* plane = dx + p * H * W;
        std::fill(plane, plane + H * W, T(0));
        const T* g = grad + p * h * w;
        for (index_t i = 0; i < h; ++i, g += w) scatter_row(g, cols, plane + rows[i] * W, w);
    }
}
MINIDL_FLOAT_KERNEL(upsample_nearest2d_backward)

// Along the columns into a scratch c (H, w) per thread, then along the rows (see the top).
template <typename T>
void upsample_bilinear2d(const T* x, T* out, const index_t* rows, const T* row_weights, const index_t* cols,
                         const T* col_weights, index_t planes, index_t H, index_t W, index_t h, index_t w) {
    check_map("upsample_bilinear2d", "rows", rows, 2 * h, H);
    check_map("upsample_bilinear2d", "cols", cols, 2 * w, W);
#pragma omp parallel if (big(planes, H * W, h * w)) num_threads(num_threads())
    {
        std::vector<T> c(H * w);
#pragma omp for schedule(static)
        for (index_t p = 0; p < planes; ++p) {
            interpolate_columns(x + p * H * W, cols, col_weights, c.data(), H, W, w);
            blend_rows(c.data(), rows, row_weights, out + p * h * w, h, w);
        }
    }
}
MINIDL_FLOAT_KERNEL(upsample_bilinear2d)

// The forward's two steps transposed, in reverse order, one plane per thread (deterministic).
template <typename T>
void upsample_bilinear2d_backward(const T* grad, T* dx, const index_t* rows, const T* row_weights,
                                  const index_t* cols, const T* col_weights, index_t planes, index_t H, index_t W,
                                  index_t h, index_t w) {
    check_map("upsample_bilinear2d_backward", "rows", rows, 2 * h, H);
    check_map("upsample_bilinear2d_backward", "cols", cols, 2 * w, W);
#pragma omp parallel if (big(planes, H * W, h * w)) num_threads(num_threads())
    {
        std::vector<T> dc(H * w);
#pragma omp for schedule(static)
        for (index_t p = 0; p < planes; ++p) {
            unblend_rows(grad + p * h * w, rows, row_weights, dc.data(), H, h, w);
            uninterpolate_columns(dc.data(), cols, col_weights, dx + p * H * W, H, W, w);
        }
    }
}
MINIDL_FLOAT_KERNEL(upsample_bilinear2d_backward)

}  // namespace minidl
