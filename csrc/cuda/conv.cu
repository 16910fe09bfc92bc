// conv.cu: the gathers that turn a 2-D convolution into a matmul, and a direct depthwise convolution.
//
// x is (N, C, H, W), the output (N, O, OH, OW): the sizes, kernel, stride, padding and dilation
// come in one ConvGeometry record (csrc/common/conv_geometry.h, with its OH and OW computed by
// minidl/backend/kernel_types.py). The host (minidl/backend/cuda.py) composes these with matmul.cu:
//   forward        cols = im2col(x)                    (N, C*kh*kw, OH*OW)
//                  out[n] = w (O, C*kh*kw) @ cols[n]    matmul_tiled, batched over n
//   backward data  dcols[n] = w^T @ grad[n]             matmul_tiled with transA
//                  dx = col2im(dcols)
//   backward wt.   dw = grad (O, N*OH*OW) @ cols^T       matmul_tiled with transA, from K-major copies
//                  (N*OH*OW, O) and (N*OH*OW, C*kh*kw), K split across blocks (split-K) when
//                  the output has few tiles, the slices added by partials.cu's sum_parts
//
// im2col   cols[n, (c*kh + i)*kw + j, y*OW + x] = x[n, c, y*sh + i*dh - ph, x*sw + j*dw - pw]
//          (0 where that falls in the padding). One thread per element of cols.
// col2im   dx[n, c, h, w] = sum of the dcols entries that im2col copied from (h, w):
//          one thread per input pixel *gathers* its window offsets (i, j) whose output
//          position is whole and in range, so no two threads write the same element
//          and no atomics are needed (the result is deterministic).
// depthwise_conv2d  groups == C == O: out[n, c, y, x] = sum_ij w[c, 0, i, j] * x[n, c, ...],
//          one thread per output element; no im2col (which would be C tiny matmuls).
// depthwise_conv2d_backward_data    dx[n, c, h, w] = sum of w[c, i, j] * grad[n, c, y, x] over
//          the outputs (y, x) whose window covers (h, w) at offset (i, j): gathered as in col2im.
// depthwise_conv2d_backward_weight  dw[c, i, j] = sum over n, y, x of grad[n, c, y, x] *
//          x[n, c, y*sh + i*dh - ph, x*sw + j*dw - pw]: one block per weight element, which
//          folds its N*OH*OW products with block_reduce.cuh's tree (grid = C*kh*kw,
//          blockDim.x a power of two in [32, 1024], blockDim.x floats of dynamic shared memory).
// Launch: the others are 1-D, 256 threads, grid-stride loops over the elements named above.
// Cost: im2col/col2im move 4*N*C*kh*kw*OH*OW bytes each way; depthwise is
//       2*N*C*OH*OW*kh*kw FLOPs. The matmuls: 2*N*O*OH*OW*C*kh*kw FLOPs each.
// Test: pytest tests/test_emu_kernels.py -k "test_conv2d"  (test_conv2d, test_conv2d_layers (depthwise)) and
//       tests/test_cuda_shapes.py (split-K weight gradients), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "../common/conv_geometry.h"
#include "block_reduce.cuh"

typedef ConvGeometryOf<int> ConvGeometry;  // 32-bit sizes on the GPU; the host passes it as an int32 array

extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    long long L = (long long)s.OH * s.OW, KK = (long long)s.kh * s.kw;
    long long total = (long long)s.N * s.C * KK * L;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long l = e % L, row = e / L;  // row = (n*C + c)*KK + i*kw + j
        int j = row % s.kw, i = row / s.kw % s.kh;
        long long nc = row / KK;
        int oy = l / s.OW, ox = l % s.OW;
        int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
        cols[e] = (h >= 0 && h < s.H && w >= 0 && w < s.W) ? x[(nc * s.H + h) * s.W + w] : 0.0f;
    }
}

extern "C" __global__ void col2im(const float* __restrict__ cols, float* __restrict__ dx, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    long long L = (long long)s.OH * s.OW, KK = (long long)s.kh * s.kw;
    long long total = (long long)s.N * s.C * s.H * s.W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int w = e % s.W, h = e / s.W % s.H;
        long long nc = e / ((long long)s.H * s.W);
        float acc = 0.0f;
        for (int i = 0; i < s.kh; ++i) {
            int ty = h + s.ph - i * s.dh;  // = oy * sh when window offset i of output row oy covers h
            if (ty < 0 || ty % s.sh) continue;
            int oy = ty / s.sh;
            if (oy >= s.OH) continue;
            for (int j = 0; j < s.kw; ++j) {
                int tx = w + s.pw - j * s.dw;
                if (tx < 0 || tx % s.sw) continue;
                int ox = tx / s.sw;
                if (ox >= s.OW) continue;
                acc += cols[(nc * KK + i * s.kw + j) * L + (long long)oy * s.OW + ox];
            }
        }
        dx[e] = acc;
    }
}

extern "C" __global__ void depthwise_conv2d(const float* __restrict__ x, const float* __restrict__ wt,
                                            float* __restrict__ out, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    long long total = (long long)s.N * s.C * s.OH * s.OW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int ox = e % s.OW, oy = e / s.OW % s.OH;
        long long nc = e / ((long long)s.OH * s.OW);
        int c = nc % s.C;
        const float* xc = x + nc * s.H * s.W;
        const float* wc = wt + (long long)c * s.kh * s.kw;
        float acc = 0.0f;
        for (int i = 0; i < s.kh; ++i) {
            int h = oy * s.sh + i * s.dh - s.ph;
            if (h < 0 || h >= s.H) continue;
            for (int j = 0; j < s.kw; ++j) {
                int w = ox * s.sw + j * s.dw - s.pw;
                if (w >= 0 && w < s.W) acc += wc[i * s.kw + j] * xc[h * s.W + w];
            }
        }
        out[e] = acc;
    }
}

extern "C" __global__ void depthwise_conv2d_backward_data(const float* __restrict__ grad, const float* __restrict__ wt,
                                                          float* __restrict__ dx, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    long long total = (long long)s.N * s.C * s.H * s.W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int w = e % s.W, h = e / s.W % s.H;
        long long nc = e / ((long long)s.H * s.W);
        const float* gc = grad + nc * s.OH * s.OW;
        const float* wc = wt + (long long)(nc % s.C) * s.kh * s.kw;
        float acc = 0.0f;
        for (int i = 0; i < s.kh; ++i) {
            int ty = h + s.ph - i * s.dh;  // = oy * sh when offset i of output row oy covers h
            if (ty < 0 || ty % s.sh || ty / s.sh >= s.OH) continue;
            for (int j = 0; j < s.kw; ++j) {
                int tx = w + s.pw - j * s.dw;
                if (tx < 0 || tx % s.sw || tx / s.sw >= s.OW) continue;
                acc += wc[i * s.kw + j] * gc[(ty / s.sh) * s.OW + tx / s.sw];
            }
        }
        dx[e] = acc;
    }
}

extern "C" __global__ void depthwise_conv2d_backward_weight(const float* __restrict__ grad, const float* __restrict__ x,
                                                            float* __restrict__ dwt, const ConvGeometry* __restrict__ geometry) {
    extern __shared__ float shared[];
    const ConvGeometry s = *geometry;
    int j = blockIdx.x % s.kw, i = blockIdx.x / s.kw % s.kh, c = blockIdx.x / (s.kw * s.kh);
    long long L = (long long)s.OH * s.OW;
    float acc = 0.0f;
    for (long long k = threadIdx.x; k < s.N * L; k += blockDim.x) {  // k runs over (n, y, x)
        long long n = k / L;
        int oy = k % L / s.OW, ox = k % s.OW;
        int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
        if (h >= 0 && h < s.H && w >= 0 && w < s.W)
            acc += grad[(n * s.C + c) * L + k % L] * x[((n * s.C + c) * s.H + h) * s.W + w];
    }
    float total = block_reduce(REDUCE_SUM, acc, shared);
    if (threadIdx.x == 0) dwt[blockIdx.x] = total;
}
