// elementwise.cu: unary math and activations, binary arithmetic with numpy broadcasting (float32).
//
// unary_f32   out[i] = f(x[i]) for one op code (UNARY_* below); x, out contiguous, n elements.
// binary_f32  out[i] = a[ia] op b[ib] for one op code (BINARY_*), where out has shape
//             shape[0..ndim) (contiguous) and ia, ib come from per-operand element strides
//             (0 along a broadcast axis): the same index arithmetic numpy does.
// binary_same_f32    the common case, a and b of out's shape: out[i] = a[i] op b[i], no
//             strides to read and no divisions per element.
// binary_scalar_f32  one operand a number, passed by value (no array for it on the device):
//             out[i] = x[i] op s, or s op x[i] when scalar_first.
// dropout_mask_f32   out[i] = scale if u_i >= p else 0, u_i in [0, 1) the top 24 bits of
//             SplitMix64's i-th output for `seed`: counter-based, so every thread makes its own
//             number from (seed, i) and the mask needs no random numbers from the host.
// Launch: 1-D, 256 threads, grid-stride loop (any grid covers any n).
// Cost: memory-bound; 1 FLOP (a few for exp/tanh/erf) per 8 (unary) or 12 (binary) bytes moved.
// Test: pytest tests/test_emu_kernels.py -k "test_unary or test_binary or test_relu" and tests/test_cuda_shapes.py, on "emu"
//       and on "cuda" where a GPU is visible; tests/test_cuda_compile.py compiles it with NVRTC.

enum { UNARY_NEG, UNARY_EXP, UNARY_LOG, UNARY_SQRT, UNARY_ABS, UNARY_SIGN, UNARY_TANH,
       UNARY_SIGMOID, UNARY_RELU, UNARY_ERF };
enum { BINARY_ADD, BINARY_SUB, BINARY_MUL, BINARY_DIV, BINARY_MAX, BINARY_MIN, BINARY_POW, BINARY_RELU_BACKWARD };

__device__ float unary_op(int op, float x) {
    switch (op) {
        case UNARY_NEG: return -x;
        case UNARY_EXP: return expf(x);
        case UNARY_LOG: return logf(x);
        case UNARY_SQRT: return sqrtf(x);
        case UNARY_ABS: return fabsf(x);
        case UNARY_SIGN: return (float)((x > 0.0f) - (x < 0.0f));
        case UNARY_TANH: return tanhf(x);
        case UNARY_SIGMOID: {
            // 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) otherwise: exp never overflows.
            float e = expf(-fabsf(x));
            return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        }
        case UNARY_RELU: return x > 0.0f ? x : 0.0f;  // relu(NaN) stays NaN in numpy; here 0 (documented)
        case UNARY_ERF: return erff(x);
    }
    return x;
}

__device__ float binary_op(int op, float a, float b) {
    switch (op) {
        case BINARY_ADD: return a + b;
        case BINARY_SUB: return a - b;
        case BINARY_MUL: return a * b;
        case BINARY_DIV: return a / b;
        case BINARY_MAX: return (a != a || a > b) ? a : b;  // NaN wins, as in np.maximum
        case BINARY_MIN: return (a != a || a < b) ? a : b;
        case BINARY_POW: return powf(a, b);
        case BINARY_RELU_BACKWARD: return b > 0.0f ? a : 0.0f;  // a = the gradient, b = relu's output
    }
    return a;
}

extern "C" __global__ void unary_f32(int op, const float* __restrict__ x, float* __restrict__ out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = unary_op(op, x[i]);
}

extern "C" __global__ void binary_same_f32(int op, const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = binary_op(op, a[i], b[i]);
}

extern "C" __global__ void binary_scalar_f32(int op, const float* __restrict__ x, float s, int scalar_first,
                                             float* __restrict__ out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = scalar_first ? binary_op(op, s, x[i]) : binary_op(op, x[i], s);
}

// SplitMix64 (Steele, Lea, Flood 2014): its i-th output for a seed is this mix of seed + (i + 1) * golden.
__device__ unsigned long long splitmix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void dropout_mask_f32(float* __restrict__ out, long long n, unsigned long long seed, float p,
                                            float scale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned long long bits = splitmix64(seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull);
        float u = (float)(bits >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in a float
        out[i] = u >= p ? scale : 0.0f;
    }
}

// meta = [shape[0..ndim), a_strides[0..ndim), b_strides[0..ndim)], strides in elements.
extern "C" __global__ void binary_f32(int op, const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, long long n, int ndim,
                                      const long long* __restrict__ meta) {
    const long long* shape = meta;
    const long long* a_strides = meta + ndim;
    const long long* b_strides = meta + 2 * ndim;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long rest = i, ia = 0, ib = 0;
        for (int d = ndim - 1; d >= 0; --d) {  // peel off the coordinates, last axis first
            long long coord = rest % shape[d];
            rest /= shape[d];
            ia += coord * a_strides[d];
            ib += coord * b_strides[d];
        }
        out[i] = binary_op(op, a[ia], b[ib]);
    }
}
