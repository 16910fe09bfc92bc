// partials.cu: two-pass reductions, for sums too long for one block: many blocks each reduce a part, then the parts are combined.
//
// One block per row (reduce.cu, batchnorm.cu before) leaves a GPU of ~132 SMs idle when there
// are few rows: a full-tensor sum is one row, a weight gradient's K = N*OH*OW one long dot
// product per output. So the host cuts each row into P parts and launches P times as many blocks;
// a second, tiny launch combines each row's P partial results.
// reduce_row_parts  partial[r * P + p] = op over j in part p of row r of x (rows, R): part p is
//                   [p * chunk, min((p + 1) * chunk, R)) (mean: the part's sum / R, so that the
//                   second pass is a sum; then reduce.cu's reduce_rows on (rows, P) finishes).
// sum_parts         out[i] = sum over p < P of parts[p * n + i]: the split-K GEMM's last step, where
//                   the P partial products of a weight gradient, each over a slice of K, are added.
// Launch: reduce_row_parts: grid (rows * P), blockDim.x a power of two in [32, 1024], blockDim.x
//         floats of dynamic shared memory (block_reduce.cuh); sum_parts: 1-D, 256 threads, grid-stride.
// Cost: memory-bound: 4R bytes per row once, plus 8 bytes per partial.
// Test: pytest tests/test_cuda_shapes.py (a full-tensor sum, split-K), on "emu" and on "cuda" where a
//       GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "block_reduce.cuh"

extern "C" __global__ void reduce_row_parts(int op, const float* __restrict__ x, float* __restrict__ partial,
                                            long long R, int P, long long chunk) {
    extern __shared__ float shared[];
    long long row = blockIdx.x / P;
    int part = blockIdx.x % P;
    const float* xr = x + row * R;
    long long end = (part + 1) * chunk < R ? (part + 1) * chunk : R;
    int combine = op == REDUCE_MEAN ? REDUCE_SUM : op;
    float acc = reduce_identity(combine);
    for (long long j = part * chunk + threadIdx.x; j < end; j += blockDim.x) acc = reduce_combine(combine, acc, xr[j]);
    float total = block_reduce(combine, acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = op == REDUCE_MEAN ? total / (float)R : total;
}

extern "C" __global__ void sum_parts(const float* __restrict__ parts, float* __restrict__ out, long long n, int P) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int p = 0; p < P; ++p) acc += parts[p * n + i];
        out[i] = acc;
    }
}
