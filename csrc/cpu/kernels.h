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

// Where element (b, i, j) of a matrix operand lies: data[b*batch + i*row + j*col], in
// elements (a C-contiguous (M, K) matrix has row = K, col = 1; its transpose row = 1, col = K).
struct Strides {
    std::int64_t batch, row, col;
};

// c[b] = a[b] @ b[b] for b in [0, batch), or c[b] += a[b] @ b[b] with accumulate: a is
// (batch, M, K), b is (batch, K, N), c is (batch, M, N). See matmul.cpp.  The first form
// reads a and b through any strides and writes c's rows (cs.col must be 1) wherever cs
// puts them; the second takes all three C-contiguous.
void matmul(const float* a, const Strides& as, const float* b, const Strides& bs, float* c, const Strides& cs,
            std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K, bool accumulate = false);
void matmul(const double* a, const Strides& as, const double* b, const Strides& bs, double* c,
            const Strides& cs, std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K,
            bool accumulate = false);
void matmul(const float* a, const float* b, float* c,
            std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K);
void matmul(const double* a, const double* b, double* c,
            std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K);

// Fused optimizer updates, in place on n contiguous elements (see optim.cpp). buf is
// nullptr when momentum == 0; first: the step that creates buf (buf = g).
void sgd_step(float* p, const float* g, float* buf, std::int64_t n, double lr, double mom, double wd,
              double damp, bool nesterov, bool first);
void sgd_step(double* p, const double* g, double* buf, std::int64_t n, double lr, double mom, double wd,
              double damp, bool nesterov, bool first);
void adam_step(float* p, const float* g, float* m, float* v, std::int64_t n, long step, double lr, double b1,
               double b2, double eps, double wd, bool decoupled);
void adam_step(double* p, const double* g, double* m, double* v, std::int64_t n, long step, double lr,
               double b1, double b2, double eps, double wd, bool decoupled);

// Embedding gather / scatter-add over R rows of width D; ids in [0, V). See embedding.cpp.
void embedding(const float* w, const std::int64_t* ids, float* out, std::int64_t R, std::int64_t D);
void embedding(const double* w, const std::int64_t* ids, double* out, std::int64_t R, std::int64_t D);
void embedding_backward(const float* g, const std::int64_t* ids, float* dw, std::int64_t R, std::int64_t V,
                        std::int64_t D);
void embedding_backward(const double* g, const std::int64_t* ids, double* dw, std::int64_t R, std::int64_t V,
                        std::int64_t D);

// Convolution / pooling geometry, NCHW (see conv.cpp). Pooling uses C == O, G == 1 and
// the kernel fields; OH and OW are the output size.
struct ConvShape {
    std::int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, G, OH, OW;
};
#define MINIDL_CONV_DECLARE(T)                                                              \
    void conv2d(const T* x, const T* w, T* out, const ConvShape& s);                        \
    void conv2d_backward_data(const T* grad, const T* w, T* dx, const ConvShape& s);        \
    void conv2d_backward_weight(const T* grad, const T* x, T* dw, const ConvShape& s);      \
    void max_pool2d(const T* x, T* out, std::int64_t* winner, const ConvShape& s);          \
    void max_pool2d_backward(const T* grad, const std::int64_t* winner, T* dx, const ConvShape& s); \
    void avg_pool2d(const T* x, T* out, const ConvShape& s);                                \
    void avg_pool2d_backward(const T* grad, T* dx, const ConvShape& s);
MINIDL_CONV_DECLARE(float)
MINIDL_CONV_DECLARE(double)
#undef MINIDL_CONV_DECLARE

// Batch norm over x viewed as (N, C, S), per channel (see batchnorm.cpp).
void batch_norm(const float* x, const float* w, const float* b, double eps, float* y, float* mean, float* var,
                float* invstd, std::int64_t N, std::int64_t C, std::int64_t S);
void batch_norm(const double* x, const double* w, const double* b, double eps, double* y, double* mean,
                double* var, double* invstd, std::int64_t N, std::int64_t C, std::int64_t S);
void batch_norm_backward(const float* g, const float* x, const float* w, const float* mean, const float* invstd,
                         float* dx, float* dw, float* db, std::int64_t N, std::int64_t C, std::int64_t S);
void batch_norm_backward(const double* g, const double* x, const double* w, const double* mean,
                         const double* invstd, double* dx, double* dw, double* db, std::int64_t N, std::int64_t C,
                         std::int64_t S);

// Batch norm in evaluation mode, fused with the activation after it (see batchnorm.cpp):
// y = act(x * a[c] + b[c]); backward: gm = g where act passes, dx = gm * a[c],
// da[c] = sum gm * x, db[c] = sum gm.  y may be null when act is ACT_NONE.
enum Activation { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };
void channel_affine(const float* x, const float* a, const float* b, int act, float* y, std::int64_t N,
                    std::int64_t C, std::int64_t S);
void channel_affine(const double* x, const double* a, const double* b, int act, double* y, std::int64_t N,
                    std::int64_t C, std::int64_t S);
void channel_affine_backward(const float* g, const float* x, const float* y, const float* a, int act, float* dx,
                             float* da, float* db, std::int64_t N, std::int64_t C, std::int64_t S);
void channel_affine_backward(const double* g, const double* x, const double* y, const double* a, int act,
                             double* dx, double* da, double* db, std::int64_t N, std::int64_t C, std::int64_t S);

// Over the last axis of x viewed as (R, D) (see softmax.cpp): softmax (log=false) or
// log-softmax (log=true); cross-entropy against one target class t[r] per row, giving
// loss[r] and its gradient dlogits[r, :] = softmax(x[r]) - onehot(t[r]).
#define MINIDL_SOFTMAX_DECLARE(T)                                                                       \
    void softmax(const T* x, T* y, std::int64_t R, std::int64_t D, bool log);                           \
    void cross_entropy(const T* x, const std::int64_t* t, T* loss, T* dlogits, std::int64_t R, std::int64_t D);
MINIDL_SOFTMAX_DECLARE(float)
MINIDL_SOFTMAX_DECLARE(double)
#undef MINIDL_SOFTMAX_DECLARE

// dx = g where y > 0, else 0, over n contiguous elements (see elementwise.cpp).
void relu_backward(const float* g, const float* y, float* dx, std::int64_t n);
void relu_backward(const double* g, const double* y, double* dx, std::int64_t n);
void clamp_backward(const float* g, const float* x, float* dx, std::int64_t n, float lo, float hi);
void clamp_backward(const double* g, const double* x, double* dx, std::int64_t n, double lo, double hi);

}  // namespace minidl
