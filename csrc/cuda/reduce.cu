// reduce.cu: sum / max / min / mean of each row of a (rows, R) matrix, as three kernels: each adds ONE idea.
//
// out[r] = op over j of x[r, j]   (REDUCE_* in block_reduce.cuh; mean = sum / R)
// The host moves the reduced axes last and makes the array contiguous, so any
// reduction over any set of axes is one of these kernels. All three take the same arguments.
// Cost: R - 1 FLOPs and 4R bytes read per row: memory-bound, so the measure is GB/s against
//       the memory bandwidth, not FLOP/s.
// Launch: v1 block (256), grid (ceil(rows/256)); v2 and v3 one block per row (grid = rows),
//         blockDim.x a power of two from 32 to 1024, dynamic shared memory blockDim.x floats.
//         minidl launches v3, reduce_rows (backend/cuda.py reduce).
// Test: pytest tests/test_cuda_steps.py -k reduce (every version against numpy on "emu", and on "cuda"
//       where a GPU is visible); tests/test_emu_kernels.py -k "test_reduce" (v3 through minidl's reductions);
//       tests/test_cuda_compile.py compiles the file with NVRTC.
// Benchmark: python -m benchmarks.bench_gpu --versions (GPU: each version's GB/s against a device copy's).
//
//   v1 reduce_rows_naive  one thread per row, looping along it
//   v2 reduce_rows_tree   one block per row: neighbouring threads read neighbouring elements, then
//                         the block halves its partial results in shared memory, one barrier a step
//   v3 reduce_rows        warp shuffles: a warp's 32 lanes combine registers with no memory and no
//                         barrier (block_reduce.cuh), leaving one barrier per row

#include "block_reduce.cuh"

// v1 reduce_rows_naive. One thread per row, which it walks from start to end. The lanes of a
// warp read 32 different rows, R floats apart: 32 memory transactions per step where one would
// do; and a matrix with fewer rows than the GPU has threads (tens of thousands) leaves it mostly idle.
// Launch: block (256), grid (ceil(rows / 256)).
extern "C" __global__ void reduce_rows_naive(int op, const float* __restrict__ x, float* __restrict__ out,
                                             long long rows, long long R) {
    long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    const float* xr = x + row * R;
    float acc = reduce_identity(op);
    for (long long j = 0; j < R; ++j) acc = reduce_combine(op, acc, xr[j]);
    out[row] = op == REDUCE_MEAN ? acc / (float)R : acc;
}

// v2 reduce_rows_tree. One block per row. Thread t folds elements t, t + blockDim, t + 2 blockDim,
// ... so at each step a warp reads 32 neighbours (one transaction); then the block combines its
// partial results in shared memory, halving them each step (256 -> 128 -> ... -> 1), with a
// barrier between steps because each step reads what other threads wrote in the one before.
// Launch: grid (rows), blockDim.x a power of two from 32 to 1024, blockDim.x floats of dynamic shared memory.
extern "C" __global__ void reduce_rows_tree(int op, const float* __restrict__ x, float* __restrict__ out,
                                            long long rows, long long R) {
    extern __shared__ float partial[];
    const float* xr = x + (long long)blockIdx.x * R;
    int tid = threadIdx.x;
    float acc = reduce_identity(op);
    for (long long j = tid; j < R; j += blockDim.x) acc = reduce_combine(op, acc, xr[j]);
    partial[tid] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (tid < half) partial[tid] = reduce_combine(op, partial[tid], partial[tid + half]);
        __syncthreads();
    }
    if (tid == 0) out[blockIdx.x] = op == REDUCE_MEAN ? partial[0] / (float)R : partial[0];
}

// v3 reduce_rows: the kernel minidl uses. The idea: warp shuffles. Inside a warp the lanes can
// read each other's registers (__shfl_xor_sync), so the first 32 -> 1 of the tree needs neither
// shared memory nor barriers: block_reduce (block_reduce.cuh) reduces each warp that way, puts
// the warps' results side by side in shared memory behind one barrier, and shuffles those.
// Launch: grid (rows), blockDim.x a power of two from 32 to 1024, blockDim.x floats of dynamic shared memory.
extern "C" __global__ void reduce_rows(int op, const float* __restrict__ x, float* __restrict__ out,
                                       long long rows, long long R) {
    extern __shared__ float partial[];
    const float* xr = x + (long long)blockIdx.x * R;
    float acc = reduce_identity(op);
    for (long long j = threadIdx.x; j < R; j += blockDim.x) acc = reduce_combine(op, acc, xr[j]);
    float total = block_reduce(op, acc, partial);
    if (threadIdx.x == 0) out[blockIdx.x] = op == REDUCE_MEAN ? total / (float)R : total;
}
