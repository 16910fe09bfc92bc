// csrc/cpu/conv.h — what the convolution and pooling files (conv.cpp, depthwise.cpp,
// pool.cpp) share: the window arithmetic, and the depthwise kernels conv.cpp hands
// groups == C == O over to.  The geometry itself is csrc/common/conv_geometry.h (ConvGeometry,
// kernels.h), computed by minidl/backend/kernel_types.py.
#pragma once
#include <algorithm>

#include "kernels.h"

namespace minidl {

// The output columns xo whose input column xo*stride + off lies in [0, W): [lo, hi).
inline void valid_range(index_t off, index_t stride, index_t W, index_t OW, index_t& lo, index_t& hi) {
    lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    hi = (W - 1 - off) < 0 ? 0 : std::min(OW, (W - 1 - off) / stride + 1);
    lo = std::min(lo, OW);
    if (hi < lo) hi = lo;
}

// Whether a pass over the input and output is worth an OpenMP region (tiny layers run on
// the calling thread: waking the workers costs more).
inline bool big(const ConvGeometry& s) { return s.N * s.C * (s.H * s.W + s.OH * s.OW) >= (1 << 15); }

// A depthwise convolution: one input channel per output channel (depthwise.cpp).
inline bool is_depthwise(const ConvGeometry& s) { return s.groups == s.C && s.O == s.C && s.groups > 1; }

// conv2d and its two backward passes for is_depthwise(s) (depthwise.cpp).
template <typename T>
void depthwise_conv2d(const T* x, const T* w, T* out, const ConvGeometry& s);
template <typename T>
void depthwise_conv2d_backward_data(const T* grad, const T* w, T* dx, const ConvGeometry& s);
template <typename T>
void depthwise_conv2d_backward_weight(const T* grad, const T* x, T* dw, const ConvGeometry& s);

}  // namespace minidl
