// csrc/cpu/exp_poly.h — e^x as plain arithmetic, which GCC vectorises: the exp of softmax.cpp
// and of the LSTM's sigmoid and tanh (lstm.cpp).
//
// Why our own exp: std::exp is a scalar libm call per element, and GCC only swaps in its
// vector math library (libmvec) under -ffast-math, which would also break the NaN and inf
// semantics every other kernel keeps.  numpy has a hand-vectorised AVX-512 exp, so with
// std::exp this file ran 1.2-1.8x *slower* than numpy.  exp_poly is plain
// arithmetic (no calls, no branches), which GCC vectorises like any other loop:
//
//   e^x = 2^n * e^r     n = round(x / ln 2),  r = x - n ln 2  in [-ln2/2, ln2/2]
//   e^r ~ the Taylor polynomial of degree 7 (float) or 13 (double), whose truncation
//         error r^(d+1)/(d+1)! at |r| = 0.347 is 5e-9 (float) / 4e-18 (double): below
//         half an ulp, so the result is within ~2 ulp of the exact e^x.
//   2^n  is built by writing n + bias into the exponent bits of a float.
//   round(x / ln 2) with the "shifter" trick: adding 1.5 * 2^23 (float) rounds to an
//         integer, and that integer is then the low bits of the sum's mantissa.
//   ln 2 is split into a short high part (n * ln2_hi is exact) and a low correction
//         (Cody and Waite's trick), so r loses no precision for large |x|.
// Results below the smallest normal float (x < -87.3; -708.3 for double) are flushed to 0
// (libm returns denormals there; softmax's outputs differ by < 1e-38 absolute).
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

namespace minidl {

template <typename T> struct ExpConsts;
template <> struct ExpConsts<float> {
    using Bits = std::int32_t;
    static constexpr int mantissa_bits = 23, bias = 127, degree = 7;
    static constexpr float shifter = 12582912.0f;                  // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    static constexpr float lo = -87.3f, hi = 88.0f;                // 2^n stays a normal float
};
template <> struct ExpConsts<double> {
    using Bits = std::int64_t;
    static constexpr int mantissa_bits = 52, bias = 1023, degree = 13;
    static constexpr double shifter = 6755399441055744.0;          // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static constexpr double lo = -708.3, hi = 709.0;
};

// The Taylor coefficients 1/k!, k = 0..D, computed at compile time.
template <typename T, int D>
struct InvFactorials {
    T c[D + 1];
    constexpr InvFactorials() : c() {
        c[0] = T(1);
        for (int k = 1; k <= D; ++k) c[k] = c[k - 1] / T(k);
    }
};

// e^x without a library call (see the header).  NaN in, NaN out; +inf and x > hi give inf.
template <typename T>
inline T exp_poly(T x) {
    using E = ExpConsts<T>;
    using Bits = typename E::Bits;
    const T xc = x < E::lo ? E::lo : (x > E::hi ? E::hi : x);      // NaN passes through
    const T t = xc * T(1.4426950408889634) + E::shifter;           // log2(e)
    const T n = t - E::shifter;                                    // round(x / ln 2)
    const T r = (xc - n * E::ln2_hi) - n * E::ln2_lo;
    static constexpr InvFactorials<T, E::degree> taylor{};
    T p = taylor.c[E::degree];                                     // Horner: sum_k r^k / k!
#pragma GCC unroll 16
    for (int k = E::degree - 1; k >= 0; --k) p = p * r + taylor.c[k];
    Bits tb, sb;
    std::memcpy(&tb, &t, sizeof t);
    const T shifter = E::shifter;
    std::memcpy(&sb, &shifter, sizeof sb);
    const Bits scale_bits = (tb - sb + E::bias) << E::mantissa_bits;  // the bits of 2^n
    T scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    const T y = p * scale;
    return x < E::lo ? T(0) : (x > E::hi ? std::numeric_limits<T>::infinity() : y);
}

}  // namespace minidl
