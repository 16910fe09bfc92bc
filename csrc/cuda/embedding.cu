// embedding.cu: an embedding table's row gather and its backward scatter-add (float32, int64 ids).
//
// embedding_gather       out[i, d] = weight[ids[i], d]             for i < n_ids, d < D
// embedding_scatter_add  dweight[ids[i], d] += grad[i, d]          (dweight zeroed by the host)
//   An id outside [0, V) is never followed out of the table: the gather writes NaN for it, the
//   scatter-add skips it. (The readable error comes from the host, which queues a check of the ids'
//   min and max and reads it with the next values it reads anyway: minidl/deferred.py.)
//   Two ids may name the same row, so two threads may add to one element at once:
//   atomicAdd makes each addition indivisible. (The order of the additions, and so
//   the last bits of a float sum, can differ from run to run.)
// Launch: 1-D over n_ids * D elements, 256 threads, grid-stride loop.
// Cost: memory-bound: 8 bytes per element gathered, 12 per element added (+ the atomic).
// Test: pytest tests/test_emu_kernels.py -k "test_embedding"  (test_embedding), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#ifndef NAN  // NVRTC has no <math.h>; the emulator's <cmath> defines it
#define NAN __int_as_float(0x7fc00000)
#endif

extern "C" __global__ void embedding_gather(const float* __restrict__ weight, const long long* __restrict__ ids,
                                            float* __restrict__ out, long long n_ids, long long D, long long V) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n_ids * D;
         e += (long long)gridDim.x * blockDim.x) {
        long long id = ids[e / D];
        out[e] = (id >= 0 && id < V) ? weight[id * D + e % D] : NAN;
    }
}

extern "C" __global__ void embedding_scatter_add(const float* __restrict__ grad, const long long* __restrict__ ids,
                                                 float* __restrict__ dweight, long long n_ids, long long D,
                                                 long long V) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n_ids * D;
         e += (long long)gridDim.x * blockDim.x) {
        long long id = ids[e / D];
        if (id >= 0 && id < V) atomicAdd(&dweight[id * D + e % D], grad[e]);
    }
}
