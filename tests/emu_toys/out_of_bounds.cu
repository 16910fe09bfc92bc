// An off-by-one: `i <= n` where `i < n` was meant, so thread n writes one float past the array.
// On a GPU that corrupts a neighbour silently; with MINIDL_EMU_SANITIZE=address the emulator
// stops at this line.
extern "C" __global__ void fill_one_too_many(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) x[i] = 1.0f;
}

extern "C" __global__ void fill(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 1.0f;
}

// Uses every feature of the emulator (static and dynamic shared memory, barriers, shuffles,
// votes, atomics): it must run clean under AddressSanitizer, fibers and all.
extern "C" __global__ void everything(const float* x, float* out, int* count) {
    extern __shared__ float partial[];
    __shared__ float warp_sums[32];
    float v = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    partial[threadIdx.x] = v;
    __syncthreads();
    if (__all_sync(0xffffffffu, partial[threadIdx.x] == v)) atomicAdd(count, 1);
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int w = 0; w < blockDim.x / 32; ++w) total += warp_sums[w];
        out[blockIdx.x] = total;
    }
}

// A divergent __syncthreads fails the launch, which unwinds the fibers with an exception: that
// too must run clean under AddressSanitizer.
extern "C" __global__ void divergent(float* x, int n) {
    if (threadIdx.x < 16) __syncthreads();
    x[threadIdx.x] = 1.0f;
}
