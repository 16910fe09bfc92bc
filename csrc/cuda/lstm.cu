// lstm.cu: the fused gate passes of one LSTM layer's step, forward and backward (float32).
//
// The host (LSTMHost in minidl/backend/cuda.py) runs the time loop: per step one GEMM (matmul.cu)
// and one of these kernels; the math is numpy_ref.lstm_forward's and lstm_backward's. Time-major:
// a step's arrays are (B, 4H) gates and (B, H) states, gates in PyTorch's order i, f, g, o.
// lstm_gates_forward   z = gates + hproj + bias (gates holds x_t W_ih^T on entry); i, f, o = sigmoid,
//                      g = tanh; c = f * c_prev + i * g; h = o * tanh(c); gates = [i, f, g, o] on exit
// lstm_gates_backward  dh = d_out + dh_next, dc = dc + dh * o * (1 - tanh(c)^2);
//                      dz = [dc g i(1-i), dc c_prev f(1-f), dc i (1-g^2), dh tanh(c) o(1-o)];
//                      dc = dc * f on exit (what reaches c_prev)
// Launch: 1-D over the B*H elements of a step, 256 threads, grid-stride; each element reads and
//         writes its own four gates, so gates and dc may be updated in place.
// Cost: ~5 exps and ~30 FLOPs per element forward, 1 exp and ~25 backward; memory-bound:
//       ~40 (forward) and ~44 (backward) bytes per element.
// Test: pytest tests/test_lstm_op.py -k emu (against numpy_ref, on "emu" and on "cuda" where a GPU
//       is visible); tests/test_cuda_compile.py compiles it with NVRTC.

__device__ float sigmoid_f(float z) {
    // 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) otherwise: exp never overflows.
    float e = expf(-fabsf(z));
    return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

extern "C" __global__ void lstm_gates_forward(float* gates, const float* __restrict__ hproj,
                                              const float* __restrict__ bias, const float* __restrict__ c_prev,
                                              float* __restrict__ c, float* __restrict__ h, int B, int H) {
    long long n = (long long)B * H;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)gridDim.x * blockDim.x) {
        long long b = k / H, j = k % H, row = b * 4 * H;
        float* z = gates + row;
        const float* zh = hproj + row;
        float i = sigmoid_f(z[j] + zh[j] + bias[j]);
        float f = sigmoid_f(z[H + j] + zh[H + j] + bias[H + j]);
        float g = tanhf(z[2 * H + j] + zh[2 * H + j] + bias[2 * H + j]);
        float o = sigmoid_f(z[3 * H + j] + zh[3 * H + j] + bias[3 * H + j]);
        float ck = f * c_prev[k] + i * g;
        c[k] = ck;
        h[k] = o * tanhf(ck);
        z[j] = i, z[H + j] = f, z[2 * H + j] = g, z[3 * H + j] = o;
    }
}

extern "C" __global__ void lstm_gates_backward(const float* __restrict__ gates, const float* __restrict__ c_prev,
                                               const float* __restrict__ c, const float* __restrict__ d_out,
                                               const float* __restrict__ dh_next, float* __restrict__ dc,
                                               float* __restrict__ dz, int B, int H) {
    long long n = (long long)B * H;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)gridDim.x * blockDim.x) {
        long long b = k / H, j = k % H, row = b * 4 * H;
        const float* gk = gates + row;
        float* dzk = dz + row;
        float i = gk[j], f = gk[H + j], g = gk[2 * H + j], o = gk[3 * H + j];
        float tanh_c = tanhf(c[k]);
        float dh = d_out[k] + dh_next[k];
        float dck = dc[k] + dh * o * (1.0f - tanh_c * tanh_c);
        dzk[j] = dck * g * i * (1.0f - i);
        dzk[H + j] = dck * c_prev[k] * f * (1.0f - f);
        dzk[2 * H + j] = dck * i * (1.0f - g * g);
        dzk[3 * H + j] = dh * tanh_c * o * (1.0f - o);
        dc[k] = dck * f;
    }
}
