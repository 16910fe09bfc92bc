// Kernels whose answer depends on the order of the blocks: a GPU runs blocks in any order, many
// at a time, so these are bugs (races between blocks) that the ordered emulator would hide.

// Every block writes its index to the same place: the answer is whichever block ran last.
extern "C" __global__ void last_block_wins(int* out) {
    if (threadIdx.x == 0) out[0] = blockIdx.x;
}

// A running sum across blocks that assumes block b - 1 has finished before block b starts:
// right when the blocks run in order, wrong otherwise.
extern "C" __global__ void carry_from_previous_block(const float* x, float* out) {
    if (threadIdx.x == 0) out[blockIdx.x] = x[blockIdx.x] + (blockIdx.x > 0 ? out[blockIdx.x - 1] : 0.0f);
}

// The right way to combine across blocks: an atomic, whatever the order.
extern "C" __global__ void atomic_sum(const float* x, float* total) {
    atomicAdd(total, x[blockIdx.x * blockDim.x + threadIdx.x]);
}
