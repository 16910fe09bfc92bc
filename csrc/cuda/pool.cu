// pool.cu: 2-D max and average pooling, forward and backward (NCHW, float32).
//
// dims = [N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW] as in conv.cu.
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

#ifndef INFINITY  // NVRTC has no <math.h>; the emulator's <cmath> defines it
#define INFINITY __int_as_float(0x7f800000)
#endif

#define POOL_DIMS                                                                               \
    int N = d[0], C = d[1], H = d[2], W = d[3], kh = d[4], kw = d[5], sh = d[6], sw = d[7];  \
    int ph = d[8], pw = d[9], dh = d[10], dw = d[11], OH = d[12], OW = d[13];               \
    long long total = (long long)N * C * OH * OW;

#define FOR_EACH_OUTPUT(e)                                                                    \
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;              \
         e += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void max_pool2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                              long long* __restrict__ winner, const int* __restrict__ d) {
    POOL_DIMS
    FOR_EACH_OUTPUT(e) {
        int ox = e % OW, oy = e / OW % OH;
        const float* xc = x + e / ((long long)OH * OW) * H * W;
        float best = -INFINITY;
        int best_k = 0;
        for (int i = 0; i < kh; ++i)
            for (int j = 0; j < kw; ++j) {
                int h = oy * sh + i * dh - ph, w = ox * sw + j * dw - pw;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                float v = xc[h * W + w];
                if (v > best || (v != v && best == best)) { best = v; best_k = i * kw + j; }  // first max (or NaN) wins
            }
        out[e] = best;
        winner[e] = best_k;
    }
}

extern "C" __global__ void max_pool2d_backward(const float* __restrict__ grad, const long long* __restrict__ winner,
                                               float* __restrict__ dx, const int* __restrict__ d) {
    POOL_DIMS
    FOR_EACH_OUTPUT(e) {
        int ox = e % OW, oy = e / OW % OH;
        int i = winner[e] / kw, j = winner[e] % kw;
        int h = oy * sh + i * dh - ph, w = ox * sw + j * dw - pw;
        if (h >= 0 && h < H && w >= 0 && w < W) atomicAdd(&dx[e / ((long long)OH * OW) * H * W + h * W + w], grad[e]);
    }
}

extern "C" __global__ void avg_pool2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                              const int* __restrict__ d) {
    POOL_DIMS
    FOR_EACH_OUTPUT(e) {
        int ox = e % OW, oy = e / OW % OH;
        const float* xc = x + e / ((long long)OH * OW) * H * W;
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i)
            for (int j = 0; j < kw; ++j) {
                int h = oy * sh + i * dh - ph, w = ox * sw + j * dw - pw;
                if (h >= 0 && h < H && w >= 0 && w < W) sum += xc[h * W + w];
            }
        out[e] = sum / (float)(kh * kw);
    }
}

extern "C" __global__ void avg_pool2d_backward(const float* __restrict__ grad, float* __restrict__ dx,
                                               const int* __restrict__ d) {
    POOL_DIMS
    FOR_EACH_OUTPUT(e) {
        int ox = e % OW, oy = e / OW % OH;
        float* dxc = dx + e / ((long long)OH * OW) * H * W;
        float share = grad[e] / (float)(kh * kw);
        for (int i = 0; i < kh; ++i)
            for (int j = 0; j < kw; ++j) {
                int h = oy * sh + i * dh - ph, w = ox * sw + j * dw - pw;
                if (h >= 0 && h < H && w >= 0 && w < W) atomicAdd(&dxc[h * W + w], share);
            }
    }
}
