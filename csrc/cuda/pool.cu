// pool.cu: 2-D max and average pooling, forward and backward (NCHW, float32).
//
// The geometry comes in one ConvGeometry record, as in conv.cu (csrc/common/conv_geometry.h;
// pooling: O == C, groups == 1).
// max_pool2d_forward   out[n, c, y, x] = max over the window of x (padding never wins), and
//                      winner[n, c, y*OW + x] = i*kw + j, the first offset holding that max
//                      (numpy_ref.max_pool2d's argmax convention).
// max_pool2d_backward  dx[input pixel of the winner] += grad[n, c, y, x]
// avg_pool2d_forward   out = sum over the window / (kh*kw)   (padding counts as 0, PyTorch's default)
// avg_pool2d_backward  dx[each window pixel] += grad / (kh*kw)
// The backward kernels scatter: one thread per *output*, adding into the input with
// atomicAdd because overlapping windows (stride < kernel) share input pixels. dx is
// zeroed by the host.
// Launch: 1-D over N*C*OH*OW outputs, 256 threads, grid-stride loop.
// Cost: kh*kw compares (or adds) and 4*kh*kw bytes read per output.
// Test: pytest tests/test_emu_kernels.py -k "test_max_pool"  (test_max_pool, test_avg_pool), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

#include "../common/conv_geometry.h"

typedef ConvGeometryOf<int> ConvGeometry;  // 32-bit sizes on the GPU; the host passes it as an int32 array

#ifndef INFINITY  // NVRTC has no <math.h>; the emulator's <cmath> defines it
#define INFINITY __int_as_float(0x7f800000)
#endif

// A grid-stride loop over the N*C*OH*OW outputs of geometry s, e the output's flat index.
#define FOR_EACH_OUTPUT(e, s)                                                             \
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x,                 \
                   total = (long long)s.N * s.C * s.OH * s.OW;                           \
         e < total; e += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void max_pool2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                              long long* __restrict__ winner, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    FOR_EACH_OUTPUT(e, s) {
        int ox = e % s.OW, oy = e / s.OW % s.OH;
        const float* xc = x + e / ((long long)s.OH * s.OW) * s.H * s.W;
        float best = -INFINITY;
        int best_k = 0;
        for (int i = 0; i < s.kh; ++i)
            for (int j = 0; j < s.kw; ++j) {
                int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
                if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
                float v = xc[h * s.W + w];
                if (v > best || (v != v && best == best)) { best = v; best_k = i * s.kw + j; }  // first max (or NaN) wins
            }
        out[e] = best;
        winner[e] = best_k;
    }
}

extern "C" __global__ void max_pool2d_backward(const float* __restrict__ grad, const long long* __restrict__ winner,
                                               float* __restrict__ dx, const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    FOR_EACH_OUTPUT(e, s) {
        int ox = e % s.OW, oy = e / s.OW % s.OH;
        int i = winner[e] / s.kw, j = winner[e] % s.kw;
        int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
        if (h >= 0 && h < s.H && w >= 0 && w < s.W) atomicAdd(&dx[e / ((long long)s.OH * s.OW) * s.H * s.W + h * s.W + w], grad[e]);
    }
}

extern "C" __global__ void avg_pool2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                              const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    FOR_EACH_OUTPUT(e, s) {
        int ox = e % s.OW, oy = e / s.OW % s.OH;
        const float* xc = x + e / ((long long)s.OH * s.OW) * s.H * s.W;
        float sum = 0.0f;
        for (int i = 0; i < s.kh; ++i)
            for (int j = 0; j < s.kw; ++j) {
                int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W) sum += xc[h * s.W + w];
            }
        out[e] = sum / (float)(s.kh * s.kw);
    }
}

extern "C" __global__ void avg_pool2d_backward(const float* __restrict__ grad, float* __restrict__ dx,
                                               const ConvGeometry* __restrict__ geometry) {
    const ConvGeometry s = *geometry;
    FOR_EACH_OUTPUT(e, s) {
        int ox = e % s.OW, oy = e / s.OW % s.OH;
        float* dxc = dx + e / ((long long)s.OH * s.OW) * s.H * s.W;
        float share = grad[e] / (float)(s.kh * s.kw);
        for (int i = 0; i < s.kh; ++i)
            for (int j = 0; j < s.kw; ++j) {
                int h = oy * s.sh + i * s.dh - s.ph, w = ox * s.sw + j * s.dw - s.pw;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W) atomicAdd(&dxc[h * s.W + w], share);
            }
    }
}
