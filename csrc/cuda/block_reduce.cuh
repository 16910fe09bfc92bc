// block_reduce.cuh: combine one value per thread into one value per warp, or per block (sum / max / min).
// Included by reduce.cu, softmax.cu and batchnorm.cu.
//
// warp_reduce needs no memory and no barrier: the 32 lanes of a warp pass registers to each
// other with shuffles. block_reduce (reduce.cu's v3) reduces each warp that way, meets the
// warps' results in shared memory behind ONE barrier, and reduces those with shuffles again.
// Every thread of the block must call block_reduce (it has barriers), with blockDim.x a
// multiple of 32 up to 1024 and `shared` holding at least blockDim.x / 32 floats.
#pragma once

#ifndef INFINITY  // NVRTC has no <math.h>; the emulator's <cmath> defines it
#define INFINITY __int_as_float(0x7f800000)
#endif

enum { REDUCE_SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_MEAN };

__device__ float reduce_identity(int op) {
    return op == REDUCE_MAX ? -INFINITY : op == REDUCE_MIN ? INFINITY : 0.0f;
}

__device__ float reduce_combine(int op, float a, float b) {
    if (op == REDUCE_MAX) return (a != a || a > b) ? a : b;  // NaN propagates, as in numpy
    if (op == REDUCE_MIN) return (a != a || a < b) ? a : b;
    return a + b;
}

// Returns the combination of the 32 lanes' `value`, to every lane: at each step a lane combines
// its value with the one `offset` lanes away (lane ^ offset), 16, 8, 4, 2, 1 apart, so after 5
// steps every lane has seen all 32. All 32 lanes of the warp must call it.
__device__ float warp_reduce(int op, float value) {
    for (int offset = 16; offset > 0; offset /= 2)
        value = reduce_combine(op, value, __shfl_xor_sync(0xffffffffu, value, offset));
    return value;
}

// Returns the combination of every thread's `value`, to every thread.
__device__ float block_reduce(int op, float value, float* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = warp_reduce(op, value);
    if (lane == 0) shared[warp] = value;
    __syncthreads();  // every warp's result is in shared memory
    // Each warp reduces the (at most 32) warp results: all threads get the total, no second trip to memory.
    value = warp_reduce(op, lane < warps ? shared[lane] : reduce_identity(op));
    __syncthreads();  // everyone has read `shared` before the caller reuses it
    return value;
}
