// batchnorm.cu: batch normalization forward and backward, statistics per channel (float32).
//
// x is viewed as (N, C, S) with S the spatial size (1 for (N, C) input); each channel has
// M = N*S values.
// batch_norm_stats     mean[c] = sum x / M;  var[c] = sum (x - mean)^2 / M (biased);
//                      invstd[c] = 1 / sqrt(var + eps). Two passes over the channel: the
//                      second subtracts the mean first, which is far more accurate in
//                      float32 than E[x^2] - E[x]^2.
// batch_norm_apply     y = (x - mean[c]) * invstd[c] * weight[c] + bias[c]
// batch_norm_backward_reduce  dbias[c] = sum g;  dweight[c] = sum g * xhat,  xhat = (x - mean) * invstd
// batch_norm_backward_apply   dx = weight * invstd / M * (M g - dbias - xhat * dweight)
// Evaluation mode (fixed statistics: batch norm is a per-channel affine map), fused with
// the activation after it; act: a code of csrc/common/activation.h (none, ReLU, ReLU6), the
// table and the functions the C++ kernels share:
// channel_affine       y = act(x * scale[c] + shift[c])
// channel_affine_backward   gm = g where act passes (y > 0; 0 < y < 6 for ReLU6), else 0;
//                      dx = gm * scale[c];  dscale[c] = sum gm * x;  dshift[c] = sum gm
//                      (one kernel: each block writes its channel's dx as it sums)
// Launch: the per-channel reductions use one block per channel (grid = C), blockDim.x a
//         power of two in [32, 1024] and blockDim.x floats of dynamic shared memory
//         (block_reduce.cuh); the apply kernels are 1-D, 256 threads, grid-stride.
// Cost: forward ~8 FLOPs and 12 bytes per element (reads x three times); backward about twice that.
// Test: pytest tests/test_emu_kernels.py -k "batch_norm or channel_affine", on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "../common/activation.h"
#include "block_reduce.cuh"

// Element k of channel c: sample k / S, position k % S.
__device__ long long channel_index(long long k, int c, int C, long long S) {
    return (k / S * C + c) * S + k % S;
}

extern "C" __global__ void batch_norm_stats(const float* __restrict__ x, float* __restrict__ mean,
                                            float* __restrict__ var, float* __restrict__ invstd,
                                            int N, int C, long long S, float eps) {
    extern __shared__ float shared[];
    int c = blockIdx.x;
    long long M = (long long)N * S;
    float sum = 0.0f;
    for (long long k = threadIdx.x; k < M; k += blockDim.x) sum += x[channel_index(k, c, C, S)];
    float mu = block_reduce(REDUCE_SUM, sum, shared) / (float)M;
    float sq = 0.0f;
    for (long long k = threadIdx.x; k < M; k += blockDim.x) {
        float dev = x[channel_index(k, c, C, S)] - mu;
        sq += dev * dev;
    }
    float v = block_reduce(REDUCE_SUM, sq, shared) / (float)M;
    if (threadIdx.x == 0) {
        mean[c] = mu;
        var[c] = v;
        invstd[c] = rsqrtf(v + eps);
    }
}

extern "C" __global__ void batch_norm_apply(const float* __restrict__ x, const float* __restrict__ weight,
                                            const float* __restrict__ bias, const float* __restrict__ mean,
                                            const float* __restrict__ invstd, float* __restrict__ y,
                                            long long n, int C, long long S) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        int c = e / S % C;
        y[e] = (x[e] - mean[c]) * invstd[c] * weight[c] + bias[c];
    }
}

extern "C" __global__ void batch_norm_backward_reduce(const float* __restrict__ grad, const float* __restrict__ x,
                                                      const float* __restrict__ mean, const float* __restrict__ invstd,
                                                      float* __restrict__ dweight, float* __restrict__ dbias,
                                                      int N, int C, long long S) {
    extern __shared__ float shared[];
    int c = blockIdx.x;
    long long M = (long long)N * S;
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (long long k = threadIdx.x; k < M; k += blockDim.x) {
        long long e = channel_index(k, c, C, S);
        g_sum += grad[e];
        gx_sum += grad[e] * (x[e] - mean[c]) * invstd[c];
    }
    g_sum = block_reduce(REDUCE_SUM, g_sum, shared);
    gx_sum = block_reduce(REDUCE_SUM, gx_sum, shared);
    if (threadIdx.x == 0) {
        dbias[c] = g_sum;
        dweight[c] = gx_sum;
    }
}

extern "C" __global__ void batch_norm_backward_apply(const float* __restrict__ grad, const float* __restrict__ x,
                                                     const float* __restrict__ weight, const float* __restrict__ mean,
                                                     const float* __restrict__ invstd, const float* __restrict__ dweight,
                                                     const float* __restrict__ dbias, float* __restrict__ dx,
                                                     long long n, int C, long long S, long long M) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        int c = e / S % C;
        float xhat = (x[e] - mean[c]) * invstd[c];
        dx[e] = weight[c] * invstd[c] / (float)M * ((float)M * grad[e] - dbias[c] - xhat * dweight[c]);
    }
}

extern "C" __global__ void channel_affine(const float* __restrict__ x, const float* __restrict__ scale,
                                          const float* __restrict__ shift, float* __restrict__ y, long long n,
                                          int C, long long S, int act) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        int c = e / S % C;
        y[e] = activate(act, x[e] * scale[c] + shift[c]);
    }
}

extern "C" __global__ void channel_affine_backward(const float* __restrict__ grad, const float* __restrict__ x,
                                                   const float* __restrict__ y, const float* __restrict__ scale,
                                                   float* __restrict__ dx, float* __restrict__ dscale,
                                                   float* __restrict__ dshift, int N, int C, long long S, int act) {
    extern __shared__ float shared[];
    int c = blockIdx.x;
    long long M = (long long)N * S;
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (long long k = threadIdx.x; k < M; k += blockDim.x) {
        long long e = channel_index(k, c, C, S);
        float gm = activation_passes(act, y[e]) ? grad[e] : 0.0f;
        dx[e] = gm * scale[c];
        g_sum += gm;
        gx_sum += gm * x[e];
    }
    g_sum = block_reduce(REDUCE_SUM, g_sum, shared);
    gx_sum = block_reduce(REDUCE_SUM, gx_sum, shared);
    if (threadIdx.x == 0) {
        dshift[c] = g_sum;
        dscale[c] = gx_sum;
    }
}
