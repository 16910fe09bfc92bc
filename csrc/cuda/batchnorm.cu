// batchnorm.cu: batch normalization forward and backward, statistics per channel (float32).
//
// x is viewed as (N, C, S) with S the spatial size (1 for (N, C) input); each channel has
// M = N*S values.
// The per-channel sums run on many blocks: channel c's M values, taken in the order
// k = n*S + s, are cut into P parts of `chunk` values (the host picks P so that C*P blocks fill
// the GPU: one block per channel left most SMs idle), block c*P + p reduces part p, and a second
// small launch combines the parts. A block walks its part as (sample, position) rows
// (for_each_in_part): one index multiply per row, no 64-bit division per element.
// batch_norm_stats_parts   per part: its mean and the sum of squared deviations from it
// batch_norm_stats_combine mean[c] = sum x / M;  var[c] = sum (x - mean)^2 / M (biased);
//                      invstd[c] = 1 / sqrt(var + eps), from the parts by Chan's formula
//                      (M2 = sum M2_p + n_p (mean_p - mean)^2): as accurate in float32 as two
//                      passes over the channel, and far more than E[x^2] - E[x]^2.
// batch_norm_apply     y = (x - mean[c]) * invstd[c] * weight[c] + bias[c]
// batch_norm_backward_parts  per part: sum g and sum g * xhat, xhat = (x - mean) * invstd; the parts
//                      are added by partials.cu's sum_parts into dbias[c] = sum g, dweight[c] = sum g * xhat
// batch_norm_backward_apply   dx = weight * invstd / M * (M g - dbias - xhat * dweight)
// Evaluation mode (fixed statistics: batch norm is a per-channel affine map), fused with
// the activation after it; act: a code of csrc/common/activation.h (none, ReLU, ReLU6), the
// table and the functions the C++ kernels share:
// channel_affine       y = act(x * scale[c] + shift[c])
// channel_affine_backward_parts   gm = g where act passes (y > 0; 0 < y < 6 for ReLU6), else 0;
//                      dx = gm * scale[c];  per part: sum gm and sum gm * x, which sum_parts adds
//                      into dshift[c] = sum gm, dscale[c] = sum gm * x (each block writes its dx as it sums)
// Launch: the *_parts kernels: grid (C * P), blockDim.x a power of two in [32, 1024] and blockDim.x
//         floats of dynamic shared memory (block_reduce.cuh); part p of channel c is
//         k in [p * chunk, min((p + 1) * chunk, M)). The *_parts kernels write (P, 2, C) partial sums
//         (the stats: part_mean and part_m2, (C, P) each). batch_norm_stats_combine: one thread
//         per channel; the apply kernels: 1-D, 256 threads, grid-stride.
// Cost: forward ~8 FLOPs and 12 bytes per element (reads x three times); backward about twice that.
// Test: pytest tests/test_emu_kernels.py -k "batch_norm or channel_affine" and tests/test_cuda_shapes.py (many parts), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "../common/activation.h"
#include "block_reduce.cuh"

// Calls f(e) for each element e = (n*C + c)*S + s of channel c whose place k = n*S + s in the
// channel lies in [k0, k1). The block's threads take rows of tpr threads (tpr: a power of two,
// at most S): a row walks positions s of one sample n, and the rows walk the samples, so the
// index costs one multiply per sample and an add per element, not a 64-bit division.
// blockDim.x must be a power of two.
template <class F>
__device__ void for_each_in_part(int c, int C, long long S, long long k0, long long k1, F f) {
    int tpr = 1;
    while (tpr < S && tpr < (int)blockDim.x) tpr *= 2;
    int tx = threadIdx.x % tpr, ty = threadIdx.x / tpr, rows = blockDim.x / tpr;
    long long n_first = k0 / S, n_last = (k1 - 1) / S;  // once per thread
    for (long long n = n_first + ty; n <= n_last; n += rows) {
        long long s_begin = n == n_first ? k0 - n * S : 0, s_end = n == n_last ? k1 - n * S : S;
        long long base = (n * C + c) * S;
        for (long long s = s_begin + tx; s < s_end; s += tpr) f(base + s);
    }
}

// This block's channel c and its part [k0, k1) of the channel's M = N*S values.
__device__ int channel_part(int P, long long chunk, long long M, long long* k0, long long* k1) {
    int p = blockIdx.x % P;
    *k0 = p * chunk;
    *k1 = *k0 + chunk < M ? *k0 + chunk : M;
    return blockIdx.x / P;
}

extern "C" __global__ void batch_norm_stats_parts(const float* __restrict__ x, float* __restrict__ part_mean,
                                                  float* __restrict__ part_m2, int N, int C, long long S, int P,
                                                  long long chunk) {
    extern __shared__ float shared[];
    long long k0, k1;
    int c = channel_part(P, chunk, (long long)N * S, &k0, &k1);
    float sum = 0.0f;
    for_each_in_part(c, C, S, k0, k1, [&](long long e) { sum += x[e]; });
    float mu = block_reduce(REDUCE_SUM, sum, shared) / (float)(k1 - k0);
    float sq = 0.0f;
    for_each_in_part(c, C, S, k0, k1, [&](long long e) {  // a second pass: the part is still in cache
        float dev = x[e] - mu;
        sq += dev * dev;
    });
    sq = block_reduce(REDUCE_SUM, sq, shared);
    if (threadIdx.x == 0) {
        part_mean[blockIdx.x] = mu;
        part_m2[blockIdx.x] = sq;
    }
}

extern "C" __global__ void batch_norm_stats_combine(const float* __restrict__ part_mean,
                                                    const float* __restrict__ part_m2, float* __restrict__ mean,
                                                    float* __restrict__ var, float* __restrict__ invstd, int N,
                                                    int C, long long S, int P, long long chunk, float eps) {
    long long M = (long long)N * S;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        const float* pm = part_mean + (long long)c * P;
        const float* p2 = part_m2 + (long long)c * P;
        float mu = 0.0f;
        for (int p = 0; p < P; ++p) mu += pm[p] * (float)((p + 1) * chunk < M ? chunk : M - p * chunk);
        mu /= (float)M;
        float m2 = 0.0f;
        for (int p = 0; p < P; ++p) {
            float d = pm[p] - mu;
            m2 += p2[p] + d * d * (float)((p + 1) * chunk < M ? chunk : M - p * chunk);
        }
        float v = m2 / (float)M;
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

extern "C" __global__ void batch_norm_backward_parts(const float* __restrict__ grad, const float* __restrict__ x,
                                                     const float* __restrict__ mean, const float* __restrict__ invstd,
                                                     float* __restrict__ parts, int N, int C, long long S, int P,
                                                     long long chunk) {
    extern __shared__ float shared[];
    long long k0, k1;
    int c = channel_part(P, chunk, (long long)N * S, &k0, &k1);
    float mu = mean[c], is = invstd[c];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for_each_in_part(c, C, S, k0, k1, [&](long long e) {
        g_sum += grad[e];
        gx_sum += grad[e] * (x[e] - mu) * is;
    });
    g_sum = block_reduce(REDUCE_SUM, g_sum, shared);
    gx_sum = block_reduce(REDUCE_SUM, gx_sum, shared);
    if (threadIdx.x == 0) {  // parts (P, 2, C): row p holds [sum g | sum g xhat] of every channel
        long long p = blockIdx.x % P;
        parts[p * 2 * C + c] = g_sum;
        parts[p * 2 * C + C + c] = gx_sum;
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

extern "C" __global__ void channel_affine_backward_parts(const float* __restrict__ grad,
                                                         const float* __restrict__ x, const float* __restrict__ y,
                                                         const float* __restrict__ scale, float* __restrict__ dx,
                                                         float* __restrict__ parts, int N, int C, long long S,
                                                         int P, long long chunk, int act) {
    extern __shared__ float shared[];
    long long k0, k1;
    int c = channel_part(P, chunk, (long long)N * S, &k0, &k1);
    float sc = scale[c];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for_each_in_part(c, C, S, k0, k1, [&](long long e) {
        float gm = activation_passes(act, y[e]) ? grad[e] : 0.0f;
        dx[e] = gm * sc;
        g_sum += gm;
        gx_sum += gm * x[e];
    });
    g_sum = block_reduce(REDUCE_SUM, g_sum, shared);
    gx_sum = block_reduce(REDUCE_SUM, gx_sum, shared);
    if (threadIdx.x == 0) {  // parts (P, 2, C): row p holds [sum gm | sum gm x] of every channel
        long long p = blockIdx.x % P;
        parts[p * 2 * C + c] = g_sum;
        parts[p * 2 * C + C + c] = gx_sum;
    }
}
