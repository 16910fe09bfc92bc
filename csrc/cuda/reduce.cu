// reduce.cu: sum / max / min / mean of each row of a (rows, R) matrix, with a shared-memory tree.
//
// reduce_rows  out[r] = op over j of x[r, j]   (REDUCE_* in block_reduce.cuh; mean = sum / R)
// The host moves the reduced axes last and makes the array contiguous, so any
// reduction over any set of axes is this one kernel.
// Launch: one block per row (grid = rows), blockDim.x a power of two from 32 to 1024,
//         dynamic shared memory blockDim.x floats.
// Each thread first folds a strided slice of the row (j = tid, tid + blockDim, ...),
// then the block halves the partial results in shared memory down to one warp, and
// the last warp finishes with shuffles (no barrier needed inside a warp).
// Cost: R - 1 FLOPs and 4R bytes read per row: memory-bound.
// Test: pytest tests/test_emu_kernels.py -k "test_reduce"  (test_reduce, test_reduce_long_rows_and_all), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "block_reduce.cuh"

extern "C" __global__ void reduce_rows(int op, const float* __restrict__ x, float* __restrict__ out,
                                       long long rows, long long R) {
    extern __shared__ float partial[];
    long long row = blockIdx.x;
    const float* xr = x + row * R;
    float acc = reduce_identity(op);
    for (long long j = threadIdx.x; j < R; j += blockDim.x) acc = reduce_combine(op, acc, xr[j]);
    float total = block_reduce(op, acc, partial);
    if (threadIdx.x == 0) out[row] = op == REDUCE_MEAN ? total / (float)R : total;
}
