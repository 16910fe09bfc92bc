// resize.cu: resizing (F.interpolate), nearest and bilinear, forward and backward (NCHW, float32).
//
// The maps come from the host, computed once per call with PyTorch's arithmetic
// (numpy_ref.nearest_source_index / linear_source_index): for nearest rows (h,) and cols (w,);
// for bilinear rows = [y0; y1] (2, h) with weights wy (h,) and cols = [x0; x1] (2, w) with wx (w,).
// p runs over the N*C planes of H x W inputs and h x w outputs.
// upsample_nearest2d_forward    out[p, i, j] = x[p, rows[i], cols[j]]
// upsample_nearest2d_backward   dx[p, rows[i], cols[j]] += grad[p, i, j]
// upsample_bilinear2d_forward   out[p, i, j] = (1 - wy) top + wy bottom, where top (bottom) is row y0 (y1)
//                               interpolated at column j: (1 - wx) x[., x0] + wx x[., x1]   (PyTorch's order)
// upsample_bilinear2d_backward  each of those four pixels += its weight * grad[p, i, j]
// The backward kernels scatter, one thread per output, with atomicAdd: when upsampling, several
// outputs read one pixel. dx is zeroed by the host.
// Launch: 1-D over planes*h*w outputs, 256 threads, grid-stride loop.
// Cost: memory-bound: 8 bytes per output for nearest; bilinear reads 4 pixels (neighbours share them in
//       cache) and does 6 multiply-adds per output.
// Test: pytest tests/test_resize.py -k "emu or cuda"  (on "emu", and on "cuda" where a GPU is visible);
//       tests/test_cuda_compile.py compiles it with NVRTC.

// A grid-stride loop over the planes*h*w outputs, e the output's flat index.
#define FOR_EACH_OUTPUT(e, total)                                                                         \
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < (total);                    \
         e += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void upsample_nearest2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                                      const long long* __restrict__ rows,
                                                      const long long* __restrict__ cols, long long planes, int H,
                                                      int W, int h, int w) {
    FOR_EACH_OUTPUT(e, planes * h * w) {
        const long long p = e / ((long long)h * w);
        const int i = e / w % h, j = e % w;
        out[e] = x[(p * H + rows[i]) * W + cols[j]];
    }
}

extern "C" __global__ void upsample_nearest2d_backward(const float* __restrict__ grad, float* __restrict__ dx,
                                                       const long long* __restrict__ rows,
                                                       const long long* __restrict__ cols, long long planes, int H,
                                                       int W, int h, int w) {
    FOR_EACH_OUTPUT(e, planes * h * w) {
        const long long p = e / ((long long)h * w);
        const int i = e / w % h, j = e % w;
        atomicAdd(&dx[(p * H + rows[i]) * W + cols[j]], grad[e]);
    }
}

extern "C" __global__ void upsample_bilinear2d_forward(const float* __restrict__ x, float* __restrict__ out,
                                                       const long long* __restrict__ rows,
                                                       const float* __restrict__ wy,
                                                       const long long* __restrict__ cols,
                                                       const float* __restrict__ wx, long long planes, int H, int W,
                                                       int h, int w) {
    FOR_EACH_OUTPUT(e, planes * h * w) {
        const long long p = e / ((long long)h * w);
        const int i = e / w % h, j = e % w;
        const float* top = x + (p * H + rows[i]) * W;
        const float* bottom = x + (p * H + rows[h + i]) * W;
        const long long x0 = cols[j], x1 = cols[w + j];
        const float b = wx[j], a = 1.0f - b, d = wy[i], c = 1.0f - d;
        out[e] = c * (a * top[x0] + b * top[x1]) + d * (a * bottom[x0] + b * bottom[x1]);
    }
}

extern "C" __global__ void upsample_bilinear2d_backward(const float* __restrict__ grad, float* __restrict__ dx,
                                                        const long long* __restrict__ rows,
                                                        const float* __restrict__ wy,
                                                        const long long* __restrict__ cols,
                                                        const float* __restrict__ wx, long long planes, int H, int W,
                                                        int h, int w) {
    FOR_EACH_OUTPUT(e, planes * h * w) {
        const long long p = e / ((long long)h * w);
        const int i = e / w % h, j = e % w;
        float* top = dx + (p * H + rows[i]) * W;
        float* bottom = dx + (p * H + rows[h + i]) * W;
        const long long x0 = cols[j], x1 = cols[w + j];
        const float b = wx[j], a = 1.0f - b, d = wy[i], c = 1.0f - d, g = grad[e];
        atomicAdd(&top[x0], c * a * g);
        atomicAdd(&top[x1], c * b * g);
        atomicAdd(&bottom[x0], d * a * g);
        atomicAdd(&bottom[x1], d * b * g);
    }
}
