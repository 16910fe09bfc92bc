// csrc/cpu/compiler.h — what every kernel file of csrc/cpu shares about the compiler: the index
// type, restrict, always_inline, the x86 clones of hot loops, and how a kernel template is
// compiled for the two dtypes minidl._C binds.
#pragma once
#include <cstdint>

namespace minidl {

// Sizes and offsets: 64-bit, so that a tensor may hold more than 2^31 elements.
using index_t = std::int64_t;

}  // namespace minidl

// `T* MINIDL_RESTRICT p`: p is the only way this function reaches that memory (no other
// pointer argument overlaps it), which lets GCC vectorise loops without overlap checks.
#define MINIDL_RESTRICT __restrict__

// Inline this function into its caller, always: a template called from a MINIDL_CLONES function
// must be inlined to be compiled for the clone's instruction set (see below).
#define MINIDL_INLINE inline __attribute__((always_inline))

// Portability: the build uses no -march flag (a wheel must run on any x86-64), so the hot
// loops are compiled several times -- AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and plain
// x86-64 -- and the loader picks the best one the CPU has (GCC's target_clones).  It applies to
// plain functions, not templates: hence the small wrappers, one per dtype, in the kernel files.
// MINIDL_X86_DISPATCH says whether the clones are made (matmul.cpp picks its own targets).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(MINIDL_NO_MULTIVERSION)
#define MINIDL_X86_DISPATCH 1
#define MINIDL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MINIDL_X86_DISPATCH 0
#define MINIDL_CLONES
#endif

// Compile the kernel template NAME for float32 and float64, the dtypes bindings.cpp binds (it
// declares NAME from its line there and picks one instantiation per call).
#define MINIDL_FLOAT_KERNEL(NAME)           \
    template decltype(NAME<float>) NAME<float>; \
    template decltype(NAME<double>) NAME<double>;
