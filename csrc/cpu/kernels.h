// csrc/cpu/kernels.h — the C++ kernels that bindings.cpp exposes as minidl._C.
//
// Each kernel works on raw, C-contiguous buffers and knows nothing about Python;
// bindings.cpp checks shapes and dtypes, allocates the output and releases the GIL.
#pragma once
#include <atomic>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace minidl {

// How many threads every kernel's OpenMP region uses (`num_threads(minidl::num_threads())`).
// Process-wide, unlike omp_set_num_threads, which only affects the calling thread;
// starts at OMP_NUM_THREADS or the number of cores; _C.set_num_threads changes it.
#ifdef _OPENMP
inline std::atomic<int> g_num_threads{omp_get_max_threads()};
#else
inline std::atomic<int> g_num_threads{1};
#endif

// OpenMP's thread pool does not survive fork(): a forked child process (a data-loader
// worker, say) that starts a parallel region after its parent did hangs for ever.
// bindings.cpp sets this flag in every forked child (pthread_atfork); the kernels
// then run on one thread there.
inline std::atomic<bool> g_in_forked_child{false};

inline int num_threads() {
    return g_in_forked_child.load(std::memory_order_relaxed) ? 1
                                                              : g_num_threads.load(std::memory_order_relaxed);
}

// c[b] = a[b] @ b[b] for b in [0, batch): a is (batch, M, K), b is (batch, K, N),
// c is (batch, M, N), all C-contiguous. See matmul.cpp.
void matmul(const float* a, const float* b, float* c,
            std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K);
void matmul(const double* a, const double* b, double* c,
            std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K);

}  // namespace minidl
