// csrc/common/conv_geometry.h — the geometry of one 2-D convolution or pooling, NCHW: the one
// record every layer of minidl uses for it, with named fields.
//
//   minidl/backend/kernel_types.py  ConvGeometry, the same fields in the same order (a NamedTuple),
//                                   made by conv_geometry() / pool_geometry(), the one place that
//                                   computes OH and OW (numpy_ref.conv_out_size's formula)
//   minidl/ops/conv.py              checks a layer's arguments with it
//   minidl/backend/cpu.py           passes it to the C++ kernels (csrc/cpu: conv.cpp,
//                                   depthwise.cpp, pool.cpp) as ConvGeometryOf<std::int64_t>
//   minidl/backend/cuda.py          passes it to the CUDA kernels (csrc/cuda: conv.cu, pool.cu) as
//                                   ConvGeometryOf<int>, in an int32 array (GPUs index in 32 bits)
//
// Shared by C++ and CUDA (NVRTC, the emulator): plain C++, no headers.
// tests/test_kernel_types.py checks that the Python record lists these fields in this order.
#pragma once

template <typename Int>
struct ConvGeometryOf {
    Int N, C, H, W;  // the input, (N, C, H, W)
    Int O;           // output channels (pooling: C)
    Int kh, kw;      // kernel (window) height and width
    Int sh, sw;      // stride
    Int ph, pw;      // zero padding on each side
    Int dh, dw;      // dilation
    Int groups;      // (pooling: 1)
    Int OH, OW;      // the output's height and width (kernel_types.py: numpy_ref.conv_out_size)
};
