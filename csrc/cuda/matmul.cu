// matmul.cu: C = op(A) @ op(B) for float32, batched, as seven kernels: each adds ONE idea to the one before.
//
// Shapes: op(A) is (M, K), op(B) is (K, N), C is (M, N), all row-major. With transA the
// array A is stored as (K, M) and read transposed, likewise transB (B stored as (N, K)):
// a backward pass's x^T @ g needs no transposed copy. Batch b = blockIdx.z reads
// A + b * strideA, B + b * strideB, writes C + b * strideC (a stride of 0 broadcasts).
// Every version takes these same arguments and is right for any M, N, K: tiles that hang
// over an edge of a matrix read zeros there and skip their stores.
// Cost: 2*M*N*K FLOPs per batch; at least 4*(M*K + K*N + M*N) bytes.
// Launch: each kernel's comment gives its own block and grid. minidl launches two of them
//         (backend/cuda.py gemm): v1 matmul_naive, block (16, 16), as a baseline, and v7 matmul_tiled,
//         block (256), for real, both with the grid FOLDED (tile_of_block below): grid
//         (ceil(N/T) * batch, min(ceil(M/T), 65535)), T the tile, since CUDA caps grid.y and grid.z at
//         65,535 and a batch of 70,000 small matrices or M of 5 million rows would not launch; the
//         unfolded grid (ceil(N/T), ceil(M/T), batch) of the other versions works for them too.
//         A weight gradient's long K (N*OH*OW) is split across blocks by the host (split-K, gemm).
// Test: pytest tests/test_cuda_steps.py (every version against numpy on "emu", and on "cuda" where a GPU
//       is visible); tests/test_emu_kernels.py -k "test_matmul" (v1 and v7 through minidl's matmul);
//       tests/test_cuda_shapes.py (folded grids: a batch of 70,000; split-K);
//       tests/test_cuda_compile.py compiles the file with NVRTC for sm_80 and sm_90.
// Benchmark: python -m benchmarks.bench_matmul --versions (GPU: each version's GFLOP/s against cuBLAS,
//            torch and fma_peak, the roof below).
//
// The chapter, in the order to read it:
//   fma_peak              the roof: fused multiply-adds on registers only, a speed no matmul can pass
//   v1 matmul_naive       one thread per element of C, reading A and B straight from global memory
//   v2 matmul_coalesced   the 32 threads of a warp take 32 neighbouring columns: their loads coalesce
//   v3 matmul_smem        a block stages 32x32 tiles of A and B in shared memory, each element loaded once
//   v4 matmul_regtile_1d  a thread computes 16 outputs of a column: one shared load of B feeds 16 FMAs
//   v5 matmul_regtile_2d  a thread computes a 4x4 patch: 8 shared loads feed 16 FMAs
//   v6 matmul_vec4        128-bit loads (float4): a quarter of the load instructions
//   v7 matmul_tiled       warp tiling: each warp owns a 32x16 piece of the block's tile
// From v4 on the block's tile of C is 64x64 with 256 threads, the launch minidl uses; what
// changes is how each thread does its share of the work.

#ifndef __CUDACC__  // NVRTC knows CUDA's vector types; the emulator's g++ does not: this is CUDA's float4
struct alignas(16) float4 { float x, y, z, w; };
#endif

// op(A)[m][k] and op(B)[k][n], or 0 outside the matrix (a tile hanging over an edge is padded with zeros).
__device__ float a_at(const float* A, int transA, int M, int K, int m, int k) {
    if (m >= M || k >= K) return 0.0f;
    return transA ? A[(long long)k * M + m] : A[(long long)m * K + k];
}

__device__ float b_at(const float* B, int transB, int K, int N, int k, int n) {
    if (k >= K || n >= N) return 0.0f;
    return transB ? B[(long long)n * K + k] : B[(long long)k * N + n];
}

// The batch and the column tile of this block, for a grid folded or not: grid.x holds
// ceil(N/T) column tiles for each of gridDim.x / ceil(N/T) batches, and grid.z counts
// groups of those batches (gridDim.z == 1 when folded; gridDim.x == ceil(N/T) unfolded).
// Row tiles are walked from blockIdx.y in steps of gridDim.y, so grid.y may be smaller than ceil(M/T).
__device__ long long tile_of_block(int N, int T, int* n_tile) {
    int tiles_n = (N + T - 1) / T;
    *n_tile = blockIdx.x % tiles_n;
    return (long long)blockIdx.z * (gridDim.x / tiles_n) + blockIdx.x / tiles_n;
}

// fma_peak: the roof. Each thread runs 8 independent chains of fused multiply-adds on registers,
// with no memory traffic, so the only limit is how many FMAs the SMs issue per clock (8 chains
// keep each one's 4-cycle latency hidden). Writes one float per thread so none of it is optimised away.
// Launch: block (256), grid (many: 8 per SM or more). Cost: 2 * 8 * iters FLOPs per thread.
extern "C" __global__ void fma_peak(float* __restrict__ out, int iters) {
    float x[8];
    for (int j = 0; j < 8; ++j) x[j] = (float)(threadIdx.x + j);
#pragma unroll 16
    for (int i = 0; i < iters; ++i)
        for (int j = 0; j < 8; ++j) x[j] = fmaf(x[j], 0.999f, 0.001f);
    out[blockIdx.x * blockDim.x + threadIdx.x] = x[0] + x[1] + x[2] + x[3] + x[4] + x[5] + x[6] + x[7];
}

// v1 matmul_naive. One thread per element of C: it walks row m of op(A) and column n of op(B),
// two loads from global memory for each multiply-add.
// Launch: block (16, 16), grid (ceil(N/16), ceil(M/16), batch): block (x, y) covers the 16x16 square
// of C at row 16y, column 16x (or folded: tile_of_block). Inside it threadIdx.x picks the ROW. The 32 threads of a warp
// (consecutive threadIdx.x) therefore hold 16 different rows, so a warp's loads of A and stores
// to C hit 16 places far apart: 16 memory transactions where one would do. v2 swaps x and y.
extern "C" __global__ void matmul_naive(const float* __restrict__ A, const float* __restrict__ B,
                                        float* __restrict__ C, int M, int N, int K, int transA, int transB,
                                        long long strideA, long long strideB, long long strideC) {
    int n_tile;
    long long batch = tile_of_block(N, 16, &n_tile);
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;
    int n = n_tile * blockDim.x + threadIdx.y;
    if (n >= N) return;  // no barrier below, so threads may leave early
    for (int m_tile = blockIdx.y; m_tile * 16 < M; m_tile += gridDim.y) {
        int m = m_tile * blockDim.y + threadIdx.x;  // the row from threadIdx.x (the block is square)
        if (m >= M) break;
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += a_at(A, transA, M, K, m, k) * b_at(B, transB, K, N, k, n);
        C[(long long)m * N + n] = acc;
    }
}

// v2 matmul_coalesced. The idea: give a warp's 32 threads 32 neighbouring COLUMNS of one row of C.
// Then at each k they read one element of A (the same address: one load, broadcast to all 32),
// 32 neighbouring elements of B (one 128-byte transaction) and store 32 neighbours of C.
// Launch: block (32, 8), grid (ceil(N/32), ceil(M/8), batch): threadIdx.x is the column.
extern "C" __global__ void matmul_coalesced(const float* __restrict__ A, const float* __restrict__ B,
                                            float* __restrict__ C, int M, int N, int K, int transA, int transB,
                                            long long strideA, long long strideB, long long strideC) {
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int n = blockIdx.x * blockDim.x + threadIdx.x;  // the column from threadIdx.x
    int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += a_at(A, transA, M, K, m, k) * b_at(B, transB, K, N, k, n);
    C[(long long)m * N + n] = acc;
}

// v3 matmul_smem. The idea: the 32x32 threads of a block compute a 32x32 tile of C, and all of
// them need the same 32 rows of A and 32 columns of B. So per step the block copies a 32x32 tile
// of each into shared memory (one element per thread: each element leaves global memory once,
// not 32 times) and every thread reads its row and column from there.
// Launch: block (32, 32), grid (ceil(N/32), ceil(M/32), batch).
extern "C" __global__ void matmul_smem(const float* __restrict__ A, const float* __restrict__ B,
                                       float* __restrict__ C, int M, int N, int K, int transA, int transB,
                                       long long strideA, long long strideB, long long strideC) {
    constexpr int T = 32;
    __shared__ float As[T][T], Bs[T][T];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int tx = threadIdx.x, ty = threadIdx.y;
    int m = blockIdx.y * T + ty, n = blockIdx.x * T + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += T) {
        As[ty][tx] = a_at(A, transA, M, K, m, k0 + tx);
        Bs[ty][tx] = b_at(B, transB, K, N, k0 + ty, n);
        __syncthreads();  // the tiles are complete before anyone reads them
        for (int k = 0; k < T; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();  // everyone is done with the tiles before the next copy overwrites them
    }
    if (m < M && n < N) C[(long long)m * N + n] = acc;  // not an early return: every thread must reach the barriers
}

// From here on a block computes a 64x64 tile of C and steps through K 8 at a time; the helpers
// below copy the step's two tiles into shared memory, both stored k-major: As[k][m] and Bs[k][n].
// Each row is padded by 4 floats: a copy that writes down a column (below) would otherwise
// send 8 stores 64 floats apart into the same shared-memory bank, to be served one by one.
constexpr int BM = 64, BN = 64, BK = 8, PAD = 4;

// Copy the R x S window at (r0, c0) of a row-major rows x cols matrix into shared memory, as
// tile[r][c] or, with transpose, tile[c][r] (ld: the tile's row length). Consecutive threads take
// consecutive columns, so the reads from global memory coalesce. Zeros past the matrix's edges.
template <int R, int S>
__device__ void load_tile(const float* src, int rows, int cols, int r0, int c0, bool transpose, float* tile,
                          int ld) {
    for (int e = threadIdx.x; e < R * S; e += blockDim.x) {
        int r = e / S, c = e % S;
        float v = (r0 + r < rows && c0 + c < cols) ? src[(long long)(r0 + r) * cols + c0 + c] : 0.0f;
        tile[transpose ? c * ld + r : r * ld + c] = v;
    }
}

// op(A)'s BM x BK tile at (m0, k0) as As[k][m], and op(B)'s BK x BN tile at (k0, n0) as Bs[k][n],
// from the matrices as they lie in memory: A stored (M, K) is copied transposed, (K, M) as it is.
__device__ void load_tiles(const float* A, const float* B, int transA, int transB, int M, int N, int K, int m0,
                           int n0, int k0, float* As, float* Bs) {
    if (transA) load_tile<BK, BM>(A, K, M, k0, m0, false, As, BM + PAD);
    else load_tile<BM, BK>(A, M, K, m0, k0, true, As, BM + PAD);
    if (transB) load_tile<BN, BK>(B, N, K, n0, k0, true, Bs, BN + PAD);
    else load_tile<BK, BN>(B, K, N, k0, n0, false, Bs, BN + PAD);
}

// v4 matmul_regtile_1d. The idea: more work per thread. Each of the 256 threads computes 16
// elements of one column of the 64x64 tile, in 16 registers. Per k it loads ONE value of B from
// shared memory into a register and reuses it for 16 multiply-adds (v3: 2 shared loads per FMA).
// Launch: block (256), grid (ceil(N/64), ceil(M/64), batch).
extern "C" __global__ void __launch_bounds__(256)
matmul_regtile_1d(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N,
                  int K, int transA, int transB, long long strideA, long long strideB, long long strideC) {
    constexpr int TM = 16;  // the thread's outputs: rows row0..row0+15 of column col
    __shared__ float As[BK][BM + PAD], Bs[BK][BN + PAD];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int row0 = threadIdx.x / BN * TM, col = threadIdx.x % BN;  // a warp: 32 neighbouring columns, same rows
    float acc[TM] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        load_tiles(A, B, transA, transB, M, N, K, m0, n0, k0, &As[0][0], &Bs[0][0]);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float b = Bs[k][col];  // one shared load ...
            for (int i = 0; i < TM; ++i) acc[i] += As[k][row0 + i] * b;  // ... for 16 FMAs (As: one address per warp)
        }
        __syncthreads();
    }
    for (int i = 0; i < TM; ++i) {
        int m = m0 + row0 + i, n = n0 + col;
        if (m < M && n < N) C[(long long)m * N + n] = acc[i];
    }
}

// v5 matmul_regtile_2d. The idea: a 2-D patch per thread. Each thread computes a 4x4 patch of C:
// per k it loads 4 values of A and 4 of B into registers and combines every pair, 16 FMAs for 8
// shared loads. (An 8x8 patch would do 64 for 16, but needs 64 threads per 64x64 tile.)
// Launch: block (256), grid (ceil(N/64), ceil(M/64), batch).
extern "C" __global__ void __launch_bounds__(256)
matmul_regtile_2d(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N,
                  int K, int transA, int transB, long long strideA, long long strideB, long long strideC) {
    __shared__ float As[BK][BM + PAD], Bs[BK][BN + PAD];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int row = threadIdx.x / 16 * 4, col = threadIdx.x % 16 * 4;  // this thread's 4x4 patch of the tile
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        load_tiles(A, B, transA, transB, M, N, K, m0, n0, k0, &As[0][0], &Bs[0][0]);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[k][row + i];
            for (int j = 0; j < 4; ++j) b[j] = Bs[k][col + j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            int m = m0 + row + i, n = n0 + col + j;
            if (m < M && n < N) C[(long long)m * N + n] = acc[i][j];
        }
}

// load_tile with 128-bit loads: each thread moves 4 neighbours of a row at once (one float4), when
// every row starts on a 16-byte boundary (cols a multiple of 4, src aligned); else as load_tile.
// The test is the same for every thread of the block, so the block takes one path as a whole.
template <int R, int S>
__device__ void load_tile_vec4(const float* src, int rows, int cols, int r0, int c0, bool transpose, float* tile,
                               int ld) {
    if (cols % 4 != 0 || (unsigned long long)src % 16 != 0) {
        load_tile<R, S>(src, rows, cols, r0, c0, transpose, tile, ld);
        return;
    }
    for (int e = threadIdx.x; e < R * S / 4; e += blockDim.x) {
        int r = e / (S / 4), c = e % (S / 4) * 4;
        float4 v = {0.0f, 0.0f, 0.0f, 0.0f};  // cols % 4 == 0: the 4 are all inside the matrix or all outside
        if (r0 + r < rows && c0 + c < cols) v = *reinterpret_cast<const float4*>(&src[(long long)(r0 + r) * cols + c0 + c]);
        if (transpose) {
            tile[c * ld + r] = v.x;
            tile[(c + 1) * ld + r] = v.y;
            tile[(c + 2) * ld + r] = v.z;
            tile[(c + 3) * ld + r] = v.w;
        } else {
            *reinterpret_cast<float4*>(&tile[r * ld + c]) = v;  // ld and c are multiples of 4: aligned
        }
    }
}

__device__ void load_tiles_vec4(const float* A, const float* B, int transA, int transB, int M, int N, int K, int m0,
                                int n0, int k0, float* As, float* Bs) {
    if (transA) load_tile_vec4<BK, BM>(A, K, M, k0, m0, false, As, BM + PAD);
    else load_tile_vec4<BM, BK>(A, M, K, m0, k0, true, As, BM + PAD);
    if (transB) load_tile_vec4<BN, BK>(B, N, K, n0, k0, true, Bs, BN + PAD);
    else load_tile_vec4<BK, BN>(B, K, N, k0, n0, false, Bs, BN + PAD);
}

// v6 matmul_vec4. The idea: move 16 bytes per load instruction instead of 4. The copies from
// global memory use float4 (load_tile_vec4), and so do the reads from shared memory: a thread's
// 4 values of A at step k are neighbours in As[k], one 128-bit load, and so are its 4 of B.
// Same tiles and patches as v5, a quarter of the load instructions.
// Launch: block (256), grid (ceil(N/64), ceil(M/64), batch).
extern "C" __global__ void __launch_bounds__(256)
matmul_vec4(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K,
            int transA, int transB, long long strideA, long long strideB, long long strideC) {
    __align__(16) __shared__ float As[BK][BM + PAD];
    __align__(16) __shared__ float Bs[BK][BN + PAD];
    A += blockIdx.z * strideA;
    B += blockIdx.z * strideB;
    C += blockIdx.z * strideC;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int row = threadIdx.x / 16 * 4, col = threadIdx.x % 16 * 4;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        load_tiles_vec4(A, B, transA, transB, M, N, K, m0, n0, k0, &As[0][0], &Bs[0][0]);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float4 a4 = *reinterpret_cast<const float4*>(&As[k][row]);
            float4 b4 = *reinterpret_cast<const float4*>(&Bs[k][col]);
            float a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w};
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            int m = m0 + row + i, n = n0 + col + j;
            if (m < M && n < N) C[(long long)m * N + n] = acc[i][j];
        }
}

// v7 matmul_tiled: the kernel minidl uses. The idea: warp tiling. The hardware runs a block as
// 8 warps of 32 threads, so give each warp its own 32x16 piece of the 64x64 tile (2 warps down,
// 4 across) and lay its threads' 4x4 patches out inside that piece, 8 down and 4 across.
// In v6 a warp's patches form an 8x64 strip: at each k its threads read 8 values of As and 64
// of Bs; a 32x16 piece needs 32 + 16 = 48, the squarer the piece the fewer. Only the three lines
// that place a thread's patch differ from v6, besides the folded grid (tile_of_block) minidl launches it
// with (tensor cores, the next step, compute in TF32 and need the mma instructions, which the
// emulator cannot run).
// Launch: block (256), grid (ceil(N/64) * batch, min(ceil(M/64), 65535)) folded (tile_of_block), or
// (ceil(N/64), ceil(M/64), batch) as the versions before it.
extern "C" __global__ void __launch_bounds__(256)
matmul_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K,
             int transA, int transB, long long strideA, long long strideB, long long strideC) {
    __align__(16) __shared__ float As[BK][BM + PAD];
    __align__(16) __shared__ float Bs[BK][BN + PAD];
    int n_tile;
    long long batch = tile_of_block(N, BN, &n_tile);
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;
    int n0 = n_tile * BN;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int row = warp / 4 * 32 + lane / 4 * 4;  // the warp's 32x16 piece, then the lane's 4x4 patch in it
    int col = warp % 4 * 16 + lane % 4 * 4;
    for (int m0 = blockIdx.y * BM; m0 < M; m0 += gridDim.y * BM) {  // the same m0 for the whole block
        float acc[4][4] = {};
        for (int k0 = 0; k0 < K; k0 += BK) {
            load_tiles_vec4(A, B, transA, transB, M, N, K, m0, n0, k0, &As[0][0], &Bs[0][0]);
            __syncthreads();
#pragma unroll
            for (int k = 0; k < BK; ++k) {
                float4 a4 = *reinterpret_cast<const float4*>(&As[k][row]);
                float4 b4 = *reinterpret_cast<const float4*>(&Bs[k][col]);
                float a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w};
                for (int i = 0; i < 4; ++i)
                    for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
            }
            __syncthreads();
        }
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
                int m = m0 + row + i, n = n0 + col + j;
                if (m < M && n < N) C[(long long)m * N + n] = acc[i][j];
            }
    }
}
