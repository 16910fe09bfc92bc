// Kernels that read shared memory no thread wrote: on a GPU they get whatever was there; the
// emulator fills shared memory with 0xFF bytes (NaN as a float) at the start of every block.

// Threads 32..63 read tile entries only threads 0..31 were meant to fill.
extern "C" __global__ void read_half_written(float* out) {
    __shared__ float tile[64];
    if (threadIdx.x < 32) tile[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = tile[threadIdx.x];
}

// Block 0 fills the tile; the other blocks only read it: shared memory is per block, and a new
// block does not see an earlier block's values (on a GPU it might, by chance).
extern "C" __global__ void read_other_blocks_tile(int* out) {
    __shared__ int tile[32];
    if (blockIdx.x == 0) tile[threadIdx.x] = 7;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = tile[threadIdx.x];
}

// A missing barrier: thread i reads tile[31 - i] before thread 31 - i has written it. The
// threads of a block run one after another between barriers, so the first half reads poison.
extern "C" __global__ void reverse_without_barrier(const float* x, float* out) {
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    out[threadIdx.x] = tile[31 - threadIdx.x];
}

// Too much static shared memory: 64 KB, over the 48 KB a block may have.
extern "C" __global__ void too_much_shared(float* out) {
    __shared__ float big[16384];
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = big[threadIdx.x];
}
