// softmax.cu: softmax, log-softmax, logsumexp and fused cross-entropy over the rows of a (rows, C) matrix.
//
// softmax_rows  mode SOFTMAX:     out[r, j] = e^(x[r, j] - m) / s
//               mode LOG_SOFTMAX: out[r, j] = x[r, j] - m - log s
//               mode LOGSUMEXP:   out[r]    = m + log s
//   where m = max_j x[r, j] (subtracted so exp cannot overflow) and s = sum_j e^(x[r, j] - m).
// cross_entropy_rows  loss[r] = logsumexp(x[r]) - x[r, target[r]] and, fused in the same
//   pass, dlogits[r, j] = softmax(x[r])_j - [j == target[r]], the gradient of loss[r]
//   (numpy_ref.cross_entropy): the op's backward only scales it by dL/dloss[r]. A target
//   outside [0, C) is never read through: its row's loss is NaN (a mean loss shows it, and the
//   Learner's TerminateOnNaN stops there), with no copy to the host to check it first.
// The host moves the softmax axis last and makes the array contiguous.
// Launch: one block per row, blockDim.x a power of two in [32, 1024], dynamic shared
//         memory blockDim.x floats (block_reduce.cuh's tree).
// Cost: about 4C FLOPs + C exps per row, reading the row twice (8C bytes) and writing it once.
// Test: pytest tests/test_emu_kernels.py -k "test_softmax"  (test_softmax, test_cross_entropy_fused), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "block_reduce.cuh"

#ifndef NAN  // NVRTC has no <math.h>; the emulator's <cmath> defines it
#define NAN __int_as_float(0x7fc00000)
#endif

enum { SOFTMAX, LOG_SOFTMAX, LOGSUMEXP };

// m and log s of one row, computed by the whole block.
__device__ void row_stats(const float* xr, long long C, float* shared, float* m_out, float* log_s_out) {
    float m = -INFINITY;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) m = reduce_combine(REDUCE_MAX, m, xr[j]);
    m = block_reduce(REDUCE_MAX, m, shared);
    float shift = isfinite(m) ? m : 0.0f;  // a row of -inf stays -inf instead of becoming NaN
    float s = 0.0f;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) s += expf(xr[j] - shift);
    s = block_reduce(REDUCE_SUM, s, shared);
    *m_out = shift;
    *log_s_out = logf(s);
}

extern "C" __global__ void softmax_rows(int mode, const float* __restrict__ x, float* __restrict__ out,
                                        long long rows, long long C) {
    extern __shared__ float shared[];
    const float* xr = x + blockIdx.x * C;
    float m, log_s;
    row_stats(xr, C, shared, &m, &log_s);
    if (mode == LOGSUMEXP) {
        if (threadIdx.x == 0) out[blockIdx.x] = m + log_s;
        return;
    }
    float* yr = out + blockIdx.x * C;
    for (long long j = threadIdx.x; j < C; j += blockDim.x)
        yr[j] = mode == SOFTMAX ? expf(xr[j] - m - log_s) : xr[j] - m - log_s;
}

extern "C" __global__ void cross_entropy_rows(const float* __restrict__ x, const long long* __restrict__ target,
                                              float* __restrict__ loss, float* __restrict__ dlogits,
                                              long long rows, long long C) {
    extern __shared__ float shared[];
    long long r = blockIdx.x;
    const float* xr = x + r * C;
    float m, log_s;
    row_stats(xr, C, shared, &m, &log_s);
    long long t = target[r];
    bool valid = t >= 0 && t < C;
    if (threadIdx.x == 0) loss[r] = valid ? m + log_s - xr[t] : NAN;
    float* dr = dlogits + r * C;
    for (long long j = threadIdx.x; j < C; j += blockDim.x)
        dr[j] = expf(xr[j] - m - log_s) - (j == t ? 1.0f : 0.0f);
}
