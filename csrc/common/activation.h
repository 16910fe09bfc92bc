// csrc/common/activation.h — the activations a kernel applies after a per-channel affine map
// (batch norm in evaluation mode: channel_affine), and the gradient each lets through.  The one
// table of their codes and of what they compute, for C++ and CUDA:
//
//   csrc/cpu/batchnorm.cpp      channel_affine(_backward), compiled per activation (the templates)
//   csrc/cuda/batchnorm.cu      the same kernels on a GPU (the runtime switch)
//   minidl/backend/kernel_types.py   ACTIVATIONS, the names in code order (None is ACT_NONE);
//                               cpu.py and cuda.py pass activation_code(name) to the kernels
//
// tests/test_kernel_types.py checks that the Python names follow this enum.
#pragma once

enum Activation { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };

// Host and device code alike: nvcc / NVRTC define __CUDACC__, the emulator (csrc/emu/cuda_emu.h)
// defines __device__ itself (as static inline).
#if defined(__CUDACC__) || defined(__device__)
#define MINIDL_HOST_DEVICE __host__ __device__
#else
#define MINIDL_HOST_DEVICE inline
#endif

// act(v), NaN kept (as numpy's maximum and clip keep it).  Selects, not branches, so that the
// C++ loops over them vectorise.
template <int Act, typename T>
MINIDL_HOST_DEVICE T activate(T v) {
    if (Act == ACT_RELU) return v < T(0) ? T(0) : v;
    if (Act == ACT_RELU6) return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    return v;
}

// Whether the gradient passes, judged by the activation's output y: strictly inside its linear
// range (y > 0; 0 < y < 6 for ReLU6), as PyTorch's relu and hardtanh decide.
template <int Act, typename T>
MINIDL_HOST_DEVICE bool activation_passes(T y) {
    if (Act == ACT_RELU) return y > T(0);
    if (Act == ACT_RELU6) return (y > T(0)) & (y < T(6));  // & not &&: no branch, so it vectorises
    return true;
}

// The same, for an activation code known only at run time (a CUDA kernel's argument).
template <typename T>
MINIDL_HOST_DEVICE T activate(int act, T v) {
    return act == ACT_RELU ? activate<ACT_RELU>(v) : act == ACT_RELU6 ? activate<ACT_RELU6>(v) : v;
}
template <typename T>
MINIDL_HOST_DEVICE bool activation_passes(int act, T y) {
    return act == ACT_RELU ? activation_passes<ACT_RELU>(y) : act == ACT_RELU6 ? activation_passes<ACT_RELU6>(y) : true;
}

// Whether act is one of the codes above (the C++ kernels refuse others).
MINIDL_HOST_DEVICE bool is_activation(int act) { return act >= ACT_NONE && act <= ACT_RELU6; }
