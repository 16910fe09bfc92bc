// matmul.cu: C = op(A) @ op(B) for float32, batched: two versions of the same product.
//
// Shapes: op(A) is (M, K), op(B) is (K, N), C is (M, N), all row-major. With transA the
// array A is stored as (K, M) and read transposed, likewise transB (B stored as (N, K)):
// a backward pass's x^T @ g needs no transposed copy. Batch b = blockIdx.z reads
// A + b * strideA, B + b * strideB, writes C + b * strideC (a stride of 0 broadcasts).
// Cost: 2*M*N*K FLOPs per batch; at least 4*(M*K + K*N + M*N) bytes.
//
// matmul_naive  one thread per C element, each reads a row of A and a column of B
//               straight from global memory (2 loads per multiply-add).
//               Launch: block (16, 16), grid (ceil(N/16), ceil(M/16), batch).
// matmul_tiled  the block computes a 64x64 tile of C. Per step it copies a 64x8 tile of
//               A and an 8x64 tile of B into shared memory (each element loaded once
//               for the whole block, instead of once per thread), and each of its
//               256 threads accumulates a 4x4 patch of C in registers, so one shared
//               load feeds 4 multiply-adds (register blocking).
//               Launch: block (256), grid (ceil(N/64), ceil(M/64), batch).
// Edges: tiles past M, N or K load zeros and skip stores, so any size works.
// Test: pytest tests/test_emu_kernels.py -k "test_matmul"  (test_matmul, test_matmul_batched_and_broadcast), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.
// Benchmark (GPU): python -m benchmarks.bench_gpu.

__device__ float load_a(const float* A, int transA, int M, int K, int m, int k) {
    return transA ? A[(long long)k * M + m] : A[(long long)m * K + k];
}

__device__ float load_b(const float* B, int transB, int K, int N, int k, int n) {
    return transB ? B[(long long)n * K + k] : B[(long long)k * N + n];
}

extern "C" __global__ void matmul_naive(const float* __restrict__ A, const float* __restrict__ B,
                                        float* __restrict__ C, int M, int N, int K, int transA, int transB,
                                        long long strideA, long long strideB, long long strideC) {
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;  // no barrier below, so threads may leave early
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += load_a(A, transA, M, K, m, k) * load_b(B, transB, K, N, k, n);
    C[(long long)m * N + n] = acc;
}

#define TILE_M 64
#define TILE_N 64
#define TILE_K 8
#define THREAD_M 4  // each thread's patch of C: THREAD_M x THREAD_N
#define THREAD_N 4

extern "C" __global__ void __launch_bounds__(256)
matmul_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K,
             int transA, int transB, long long strideA, long long strideB, long long strideC) {
    // As is stored k-major so a thread's 4 rows are adjacent. The +4 pads each k-row: the
    // copy below writes 8 consecutive k of one row at once, which without the pad would all
    // fall in one shared-memory bank (64 floats apart) and be served one after another.
    __shared__ float As[TILE_K][TILE_M + 4];
    __shared__ float Bs[TILE_K][TILE_N];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int tid = threadIdx.x;
    int row0 = blockIdx.y * TILE_M, col0 = blockIdx.x * TILE_N;
    int ty = tid / (TILE_N / THREAD_N), tx = tid % (TILE_N / THREAD_N);  // this thread's patch in the tile

    float acc[THREAD_M][THREAD_N] = {};
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        // 256 threads copy 512 elements of each tile: two each, zeros past the edges.
        for (int e = tid; e < TILE_M * TILE_K; e += blockDim.x) {
            int i = e / TILE_K, k = e % TILE_K;
            int m = row0 + i, kk = k0 + k;
            As[k][i] = (m < M && kk < K) ? load_a(A, transA, M, K, m, kk) : 0.0f;
        }
        for (int e = tid; e < TILE_K * TILE_N; e += blockDim.x) {
            int k = e / TILE_N, j = e % TILE_N;
            int n = col0 + j, kk = k0 + k;
            Bs[k][j] = (n < N && kk < K) ? load_b(B, transB, K, N, kk, n) : 0.0f;
        }
        __syncthreads();  // the tiles are complete before anyone reads them
        for (int k = 0; k < TILE_K; ++k) {
            float a[THREAD_M], b[THREAD_N];
            for (int i = 0; i < THREAD_M; ++i) a[i] = As[k][ty * THREAD_M + i];
            for (int j = 0; j < THREAD_N; ++j) b[j] = Bs[k][tx * THREAD_N + j];
            for (int i = 0; i < THREAD_M; ++i)
                for (int j = 0; j < THREAD_N; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();  // everyone is done with the tiles before the next copy overwrites them
    }
    for (int i = 0; i < THREAD_M; ++i) {
        int m = row0 + ty * THREAD_M + i;
        for (int j = 0; j < THREAD_N; ++j) {
            int n = col0 + tx * THREAD_N + j;
            if (m < M && n < N) C[(long long)m * N + n] = acc[i][j];
        }
    }
}
