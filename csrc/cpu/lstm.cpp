// csrc/cpu/lstm.cpp — one LSTM layer over a whole sequence: the forward time loop and
// backpropagation through time, float32 and float64.
//
// What:   numpy_ref.lstm_forward and lstm_backward (the math is in their docstrings), time-major:
//         x (T, B, I), the states hs, cs (T+1, B, H), the gates (T, B, 4H) in PyTorch's order i, f, g, o.
//   forward:   gates = x W_ih^T                        one GEMM for all T steps (T*B rows)
//              per step t:  gates[t] += h_{t-1} W_hh^T  one GEMM (B rows)
//                           one fused pass over (B, H): bias, sigmoid / tanh, c_t, h_t
//   backward:  per step, t = T-1 down to 0:  one fused pass: dz_t (B, 4H) and dc
//                                            dh = dz_t W_hh    one GEMM (B rows)
//              then, over all steps at once: dx = dZ W_ih, dW_ih = dZ^T x, dW_hh = dZ^T h_{0..T-1}
//              (the weights' gradients summed over the steps: one GEMM each, T*B deep), dbias = sum dZ
// FLOPs:  forward 2*T*B*4H*(I + H), backward twice that, plus 5 (forward) or 1 (backward) exps per
//         element of (T, B, H).
// Bytes:  the step's GEMM reads all of W_hh (4H*H) for 2*B FLOPs per weight: at B = 32 and H = 1152
//         (AWD-LSTM) that is 21 MB (float32) per step, which stays in L3 (32 MiB) from step to step.
// Threads: OpenMP, inside each GEMM (matmul.cpp) and over the batch rows of each fused pass.
// Reference: `lstm_forward`, `lstm_backward` in minidl/backend/numpy_ref.py
// Test:   .venv/bin/python -m pytest -q tests/test_lstm_op.py
// Bench:  .venv/bin/python -m benchmarks.bench_lstm
//
// The time loop is the critical path: a step needs the h of the step before, so only the GEMMs'
// and the fused passes' own threads run at once.  Three things keep a step short:
//   * W_hh is packed once per call (PackedMatrix, matmul.cpp), not by the GEMM at every step: with
//     B = 32 rows, packing the 4H x H weights cost the step's GEMM about a quarter of its time.  The
//     threads then split W_hh's columns, not the batch's few rows.
//   * The gates' pass is one loop over j that GCC vectorises: sigmoid and tanh are built from
//     exp_poly (exp_poly.h), not from std::exp (a library call per element): 5 per element.
//   * Everything that does not depend on h (x W_ih^T, and in backward dx, dW_ih, dW_hh) runs as
//     one big GEMM outside the loop, at the GEMM's full speed.
//
// Measured (benchmarks/bench_lstm.py, AMD EPYC with AVX2, float32, batch 32-64, 70 steps, hidden
// 512-1152, 1-2 layers; nn.LSTM, so the op's layout changes included): against torch.nn.LSTM,
// forward 0.99-1.14x its speed on 1 and 2 threads, forward + backward 0.84-0.94x (what is behind:
// the steps' products, only B rows each; (32, 2048) @ (2048, 512) runs at 58 GFLOP/s a thread,
// torch's at 72, where the big products run at 72-85 in both); against the same LSTM composed
// of ops (autograd through every step), 2-4x faster.
#include "kernels.h"
#include "exp_poly.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace minidl {
namespace {

// s(z) = 1 / (1 + e^-z) and tanh(z) = 2 s(2z) - 1: 0 or 1 and -1 or 1 in the tails, NaN kept.
// (tanh near 0 is then off by up to an ulp of 1, absolutely: 1e-7 in float32, 1e-16 in float64.)
template <typename T>
MINIDL_INLINE T sigmoid(T z) { return T(1) / (T(1) + exp_poly(-z)); }
template <typename T>
MINIDL_INLINE T tanh_poly(T z) { return T(2) / (T(1) + exp_poly(T(-2) * z)) - T(1); }

// Step t's gates, rows [b0, b1) of the batch: z (B, 4H) holds the pre-activations less the bias on
// entry and the activated gates [i, f, g, o] on exit; c = f * c_prev + i * g, h = o * tanh(c).
template <typename T>
MINIDL_INLINE void gates_forward_rows(T* z, const T* bias, const T* c_prev, T* c, T* h, index_t b0, index_t b1,
                                      index_t H) {
    for (index_t b = b0; b < b1; ++b) {
        T *zi = z + b * 4 * H, *zf = zi + H, *zg = zf + H, *zo = zg + H;
        const T* cp = c_prev + b * H;
        T *cb = c + b * H, *hb = h + b * H;
#pragma omp simd
        for (index_t j = 0; j < H; ++j) {
            const T i = sigmoid(zi[j] + bias[j]), f = sigmoid(zf[j] + bias[H + j]);
            const T g = tanh_poly(zg[j] + bias[2 * H + j]), o = sigmoid(zo[j] + bias[3 * H + j]);
            const T cj = f * cp[j] + i * g;
            cb[j] = cj;
            hb[j] = o * tanh_poly(cj);
            zi[j] = i, zf[j] = f, zg[j] = g, zo[j] = o;
        }
    }
}

// Step t's gradients, rows [b0, b1): from the gates [i, f, g, o], c_{t-1}, c_t, the output's gradient
// d_out and dh (through W_hh from step t+1), dz (B, 4H) = dL/d(pre-activations); dc (B, H) holds what
// reaches c_t from step t+1 on entry and what reaches c_{t-1} on exit (numpy_ref.lstm_backward's walk).
template <typename T>
MINIDL_INLINE void gates_backward_rows(const T* gates, const T* c_prev, const T* c, const T* d_out, const T* dh,
                                       T* dc, T* dz, index_t b0, index_t b1, index_t H) {
    for (index_t b = b0; b < b1; ++b) {
        const T *gi = gates + b * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        T *dzi = dz + b * 4 * H, *dzf = dzi + H, *dzg = dzf + H, *dzo = dzg + H;
        const index_t r = b * H;
#pragma omp simd
        for (index_t j = 0; j < H; ++j) {
            const T i = gi[j], f = gf[j], g = gg[j], o = go[j];
            const T tanh_c = tanh_poly(c[r + j]);
            const T dhj = d_out[r + j] + dh[r + j];
            const T dcj = dc[r + j] + dhj * o * (T(1) - tanh_c * tanh_c);
            dzi[j] = dcj * g * i * (T(1) - i);
            dzf[j] = dcj * c_prev[r + j] * f * (T(1) - f);
            dzg[j] = dcj * i * (T(1) - g * g);
            dzo[j] = dhj * tanh_c * o * (T(1) - o);
            dc[r + j] = dcj * f;
        }
    }
}

// One function per dtype, compiled for AVX-512, AVX2 and x86-64 (compiler.h: target_clones).
#define MINIDL_GATES_FWD(T) T *z, const T *bias, const T *c_prev, T *c, T *h, index_t b0, index_t b1, index_t H
#define MINIDL_GATES_BWD(T) const T *gates, const T *c_prev, const T *c, const T *d_out, const T *dh, T *dc, T *dz, \
                            index_t b0, index_t b1, index_t H
MINIDL_CLONES void gates_forward_f32(MINIDL_GATES_FWD(float)) { gates_forward_rows(z, bias, c_prev, c, h, b0, b1, H); }
MINIDL_CLONES void gates_forward_f64(MINIDL_GATES_FWD(double)) { gates_forward_rows(z, bias, c_prev, c, h, b0, b1, H); }
MINIDL_CLONES void gates_backward_f32(MINIDL_GATES_BWD(float)) {
    gates_backward_rows(gates, c_prev, c, d_out, dh, dc, dz, b0, b1, H);
}
MINIDL_CLONES void gates_backward_f64(MINIDL_GATES_BWD(double)) {
    gates_backward_rows(gates, c_prev, c, d_out, dh, dc, dz, b0, b1, H);
}
void gates_forward(MINIDL_GATES_FWD(float)) { gates_forward_f32(z, bias, c_prev, c, h, b0, b1, H); }
void gates_forward(MINIDL_GATES_FWD(double)) { gates_forward_f64(z, bias, c_prev, c, h, b0, b1, H); }
void gates_backward(MINIDL_GATES_BWD(float)) { gates_backward_f32(gates, c_prev, c, d_out, dh, dc, dz, b0, b1, H); }
void gates_backward(MINIDL_GATES_BWD(double)) { gates_backward_f64(gates, c_prev, c, d_out, dh, dc, dz, b0, b1, H); }

// Run body(b0, b1) over the batch rows [0, B), one block of rows per thread; one thread for a small
// step (B * H below 4K elements), where waking the others costs more than the pass.
template <typename Body>
void over_rows(index_t B, index_t H, Body body) {
    const int threads = B * H >= 4096 && B > 1 ? std::min<index_t>(num_threads(), B) : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int k = 0; k < threads; ++k) body(B * k / threads, B * (k + 1) / threads);
}

// Row-major strides {batch, row, col} of a contiguous matrix with `cols` columns, and of its transpose.
Strides rows_of(index_t cols) { return {0, cols, 1}; }
Strides transpose_of(index_t cols) { return {0, 1, cols}; }

}  // namespace

template <typename T>
void lstm_forward(const T* x, const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* bias, T* hs, T* cs,
                  T* gates, index_t steps, index_t batch, index_t input_size, index_t hidden_size) {
    const index_t B = batch, I = input_size, H = hidden_size, G = 4 * H;
    std::memcpy(hs, h0, sizeof(T) * B * H);
    std::memcpy(cs, c0, sizeof(T) * B * H);
    matmul(x, rows_of(I), w_ih, transpose_of(I), gates, rows_of(G), 1, steps * B, G, I);  // gates = x W_ih^T
    const PackedMatrix<T> w_hh_t(w_hh, transpose_of(H), H, G);                             // W_hh^T (H, 4H)
    for (index_t t = 0; t < steps; ++t) {
        T* z = gates + t * B * G;
        const T *h_prev = hs + t * B * H, *c_prev = cs + t * B * H;
        T *c = cs + (t + 1) * B * H, *h = hs + (t + 1) * B * H;
        matmul(h_prev, rows_of(H), w_hh_t, z, G, B, /*accumulate=*/true);
        over_rows(B, H, [&](index_t b0, index_t b1) { gates_forward(z, bias, c_prev, c, h, b0, b1, H); });
    }
}
MINIDL_FLOAT_KERNEL(lstm_forward)

template <typename T>
void lstm_backward(const T* d_out, const T* d_cT, const T* x, const T* w_ih, const T* w_hh, const T* hs,
                   const T* cs, const T* gates, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias, index_t steps,
                   index_t batch, index_t input_size, index_t hidden_size) {
    const index_t B = batch, I = input_size, H = hidden_size, G = 4 * H, rows = steps * B;
    const std::unique_ptr<T[]> dZ(new T[rows * G]);   // (T, B, 4H): every step's dz
    const PackedMatrix<T> w_hh_packed(w_hh, rows_of(H), G, H);
    // dh0 and dc0 carry dh and dc down the steps, and end as what reaches h_0 and c_0.
    std::fill_n(dh0, B * H, T(0));
    std::memcpy(dc0, d_cT, sizeof(T) * B * H);
    for (index_t t = steps - 1; t >= 0; --t) {
        T* dz = dZ.get() + t * B * G;
        const T *g = gates + t * B * G, *c_prev = cs + t * B * H, *c = cs + (t + 1) * B * H, *dy = d_out + t * B * H;
        over_rows(B, H, [&](index_t b0, index_t b1) { gates_backward(g, c_prev, c, dy, dh0, dc0, dz, b0, b1, H); });
        matmul(dz, rows_of(G), w_hh_packed, dh0, H, B);                                    // dh = dz W_hh
    }
    matmul(dZ.get(), rows_of(G), w_ih, rows_of(I), dx, rows_of(I), 1, rows, I, G);          // dx = dZ W_ih
    matmul(dZ.get(), transpose_of(G), x, rows_of(I), dw_ih, rows_of(I), 1, G, I, rows);     // dW_ih = dZ^T x
    matmul(dZ.get(), transpose_of(G), hs, rows_of(H), dw_hh, rows_of(H), 1, G, H, rows);    // dW_hh = dZ^T h_{0..T-1}
    // dbias = the column sums of dZ: each thread sums a block of columns down all the rows.
    constexpr index_t cols = 256;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (rows * G >= (1 << 16))
    for (index_t j0 = 0; j0 < G; j0 += cols) {
        const index_t j1 = std::min(G, j0 + cols);
        std::fill(dbias + j0, dbias + j1, T(0));
        for (index_t r = 0; r < rows; ++r) {
            const T* row = dZ.get() + r * G;
#pragma omp simd
            for (index_t j = j0; j < j1; ++j) dbias[j] += row[j];
        }
    }
}
MINIDL_FLOAT_KERNEL(lstm_backward)

}  // namespace minidl
