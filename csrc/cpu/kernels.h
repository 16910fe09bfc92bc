// csrc/cpu/kernels.h — what the kernel files of csrc/cpu share: the thread count, matrix
// operands and the GEMM every convolution runs on, the conv geometry and activation records.
//
// Each kernel works on raw, C-contiguous buffers and knows nothing about Python.  The kernels
// minidl._C exposes are declared by their one line each in bindings.cpp (which passes the
// arrays through); minidl/backend/cpu.py validates their arguments and allocates the outputs.
#pragma once
#include <atomic>
#include <memory>

#include "../common/activation.h"
#include "../common/conv_geometry.h"
#include "compiler.h"

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

// Where element (b, i, j) of a matrix operand lies: data[b*batch + i*row + j*col], in
// elements (a C-contiguous (M, K) matrix has row = K, col = 1; its transpose row = 1, col = K).
struct Strides {
    index_t batch, row, col;
};

// A (batch, rows, cols) operand read in place through its strides: what bindings.cpp makes of
// a 2-D (batch 1) or 3-D numpy array with any strides (a transposed view, a slice).
template <typename T>
struct Matrix {
    T* data;
    index_t batch, rows, cols;
    Strides strides;
};

// c[b] = a[b] @ b[b] for b in [0, batch), or c[b] += a[b] @ b[b] with accumulate: a is
// (batch, M, K), b is (batch, K, N), c is (batch, M, N), read and written through their
// strides (cs.col must be 1).  The GEMM behind minidl._C.matmul and every convolution
// (conv.cpp).  See matmul.cpp.
template <typename T>
void matmul(const T* a, const Strides& as, const T* b, const Strides& bs, T* c, const Strides& cs, index_t batch,
            index_t M, index_t N, index_t K, bool accumulate = false);

// A B operand packed once (the GEMM packs B at every call) for many products with it, each
// c (+)= a @ B with a (M, K) and c (M, N) (cs.col 1, rows ldc apart): lstm.cpp's W_hh, at every
// step of a sequence.  Threads share B's columns, which suits an a of few rows.  See matmul.cpp.
template <typename T>
struct PackedMatrix {
    PackedMatrix(const T* b, const Strides& bs, index_t K, index_t N);  // b (K, N) read through its strides
    std::unique_ptr<T[]> data;
    index_t rows, cols;                                                   // K, N
};
template <typename T>
void matmul(const T* a, const Strides& as, const PackedMatrix<T>& b, T* c, index_t ldc, index_t M,
            bool accumulate = false);

// The geometry of a convolution or pooling (csrc/common/conv_geometry.h), with 64-bit sizes.
using ConvGeometry = ConvGeometryOf<index_t>;

// Make glibc's malloc keep freed memory for the next training step (see malloc_tuning.cpp).
bool keep_freed_memory();

}  // namespace minidl
