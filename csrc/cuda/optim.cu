// optim.cu: fused optimizer updates, one thread per parameter element (float32, in place).
//
// sgd_step   g = grad + wd * param;  buf = g (first step) or momentum * buf + (1 - dampening) * g;
//            param -= lr * (nesterov ? g + momentum * buf : buf)      (momentum == 0: param -= lr * g)
// adam_step  AdamW: param *= 1 - lr * wd;  Adam: g = grad + wd * param;
//            m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2;
//            param -= step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps),
//            step_size = lr / (1 - b1^step) and bias_correction2 = 1 - b2^step computed by the host.
// One pass reads and writes each state array once, where the unfused numpy update
// makes a temporary array per arithmetic operation. Same math as numpy_ref.sgd_step/adam_step.
// Launch: 1-D over n elements, 256 threads, grid-stride loop.
// Cost: sgd ~5 FLOPs and 16 bytes per element; adam ~15 FLOPs and 28 bytes per element.
// Test: pytest tests/test_emu_kernels.py -k "test_sgd"  (test_sgd, test_adam), on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

extern "C" __global__ void sgd_step(float* __restrict__ param, const float* __restrict__ grad,
                                    float* __restrict__ buf, long long n, float lr, float momentum,
                                    float weight_decay, int nesterov, float dampening, int first_step) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float g = grad[i];
        if (weight_decay != 0.0f) g += weight_decay * param[i];
        float update = g;
        if (momentum != 0.0f) {
            float b = first_step ? g : momentum * buf[i] + (1.0f - dampening) * g;
            buf[i] = b;
            update = nesterov ? g + momentum * b : b;
        }
        param[i] -= lr * update;
    }
}

extern "C" __global__ void adam_step(float* __restrict__ param, const float* __restrict__ grad,
                                     float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq, long long n,
                                     float lr, float beta1, float beta2, float eps, float weight_decay,
                                     int decoupled, float step_size, float sqrt_bias_correction2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float p = param[i], g = grad[i];
        if (weight_decay != 0.0f) {
            if (decoupled) p *= 1.0f - lr * weight_decay;
            else g += weight_decay * p;
        }
        float m = beta1 * exp_avg[i] + (1.0f - beta1) * g;
        float v = beta2 * exp_avg_sq[i] + (1.0f - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = p - step_size * m / (sqrtf(v) / sqrt_bias_correction2 + eps);
    }
}
