// csrc/cpu/embedding.cpp — embedding lookup (row gather) and its backward (scatter-add).
//
// What:   embedding:          out[r, :] = weight[ids[r], :]          r in [0, R), weight (V, D)
//         embedding_backward: dweight = zeros(V, D); dweight[ids[r], :] += grad[r, :]
//         ids are int64 in [-V, V), a negative id counting from the end as in numpy's
//         indexing; any other id is an IndexError (checked here, before anything is written:
//         the ids are data, which minidl.backend.cpu does not look at).
// FLOPs:  backward R * D adds.  Bytes: forward 2 * sizeof(T) * R * D (+ 8R for ids);
//         backward sizeof(T) * (R*D read + V*D zero + touched rows read/write) + 8R * threads.
// Threads: forward: OpenMP over output rows.  Backward: deterministic without atomics —
//         thread t OWNS the table rows [V*t/T, V*(t+1)/T): it zeroes them, then scans ALL
//         ids in order and adds only the gradient rows that land in its range.  Every
//         table row is therefore summed in the same order (r ascending) as np.add.at,
//         whatever the thread count: bit-identical results, no races.  Reading all ids
//         per thread costs 8 bytes per row against 4*D bytes of gradient.
// Reference: `embedding`, `embedding_backward` in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_cpu_kernels.py -k embedding
// Bench:  .venv/bin/python -m benchmarks.bench_optim   (prints the embedding rows too)
#include "kernels.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace minidl {
namespace {

// Throws std::out_of_range (Python's IndexError) for the first id outside [-V, V).
void check_ids(const char* op, const index_t* ids, index_t R, index_t V) {
    for (index_t r = 0; r < R; ++r)
        if (ids[r] < -V || ids[r] >= V)
            throw std::out_of_range(std::string(op) + ": id " + std::to_string(ids[r]) +
                                    " is out of range for a table of " + std::to_string(V) + " rows");
}

// The table row of id v in [-V, V).
inline index_t row_of(index_t v, index_t V) { return v < 0 ? v + V : v; }

}  // namespace

template <typename T>
void embedding(const T* w, const index_t* ids, T* out, index_t R, index_t V, index_t D) {
    check_ids("embedding", ids, R, V);
#pragma omp parallel for schedule(static) if (R * D >= (1 << 17)) num_threads(num_threads())
    for (index_t r = 0; r < R; ++r) std::memcpy(out + r * D, w + row_of(ids[r], V) * D, sizeof(T) * D);
}
MINIDL_FLOAT_KERNEL(embedding)

template <typename T>
void embedding_backward(const T* grad, const index_t* ids, T* dw, index_t R, index_t V, index_t D) {
    check_ids("embedding_backward", ids, R, V);
    // Parallel only for big batches or big tables: a training step's 64 rows into a
    // 10K-row table is a 2 MB memset plus 64 row adds, faster on one core than waking
    // the OpenMP workers while a data-loader thread holds the other core.
    const bool parallel = R * D >= (1 << 17) || V * D >= (1 << 22);
#pragma omp parallel if (parallel) num_threads(num_threads())
    {
#ifdef _OPENMP
        const index_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const index_t t = 0, nt = 1;
#endif
        const index_t v0 = V * t / nt, v1 = V * (t + 1) / nt;
        if (v1 > v0) std::memset(dw + v0 * D, 0, sizeof(T) * (v1 - v0) * D);
        for (index_t r = 0; r < R; ++r) {
            const index_t v = row_of(ids[r], V);
            if (v < v0 || v >= v1) continue;
            T* MINIDL_RESTRICT dst = dw + v * D;
            const T* MINIDL_RESTRICT src = grad + r * D;
            for (index_t d = 0; d < D; ++d) dst[d] += src[d];
        }
    }
}

MINIDL_FLOAT_KERNEL(embedding_backward)

}  // namespace minidl
