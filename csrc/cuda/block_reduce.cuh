// block_reduce.cuh: combine one value per thread into one value per block (sum / max / min).
// Included by reduce.cu, softmax.cu and batchnorm.cu.
//
// Every thread of the block must call block_reduce (it has barriers), with blockDim.x a
// power of two >= 32 and `shared` holding blockDim.x floats. The block halves the
// partial results in shared memory down to one warp; that warp finishes with shuffles,
// which need no barrier because a warp's lanes exchange registers directly.
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

// Returns the combination of every thread's `value`, to every thread.
__device__ float block_reduce(int op, float value, float* shared) {
    int tid = threadIdx.x;
    shared[tid] = value;
    __syncthreads();
    for (int half = blockDim.x / 2; half >= 32; half /= 2) {
        if (tid < half) shared[tid] = reduce_combine(op, shared[tid], shared[tid + half]);
        __syncthreads();
    }
    float v = shared[tid % 32];  // every warp shuffles (all lanes must); warp 0's result is the one kept
    for (int offset = 16; offset > 0; offset /= 2)
        v = reduce_combine(op, v, __shfl_down_sync(0xffffffffu, v, offset));
    __syncthreads();  // everyone has read shared[0..32) before thread 0 overwrites shared[0]
    if (tid == 0) shared[0] = v;
    __syncthreads();
    float result = shared[0];
    __syncthreads();  // the caller may reuse `shared` right away
    return result;
}
