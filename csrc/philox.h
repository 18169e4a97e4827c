// Counter-based Gumbel noise shared by the CPU and CUDA kernels (and mirrored by kernels/mixed_op.py).
//
// Philox4x32-10 (Salmon et al., SC'11) with key (seed_lo, seed_hi) and counter (c_lo, c_hi, 0, 0), where
// c = offset + i for the i-th logit in row-major order of log_alpha ([K] or [B, K]). Only the first output word
// r is used:  u = ((r >> 9) + 0.5) * 2^-23  lies strictly inside (0, 1) and is exact in float (24 bits), and
// g = -log(-log(u))
// computed in the accumulation type T (float, or double for float64 inputs).
// This is exactly what Triton's tl.randint(seed, offset + i) returns, so all backends draw the same noise.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SNAS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SNAS_HOST_DEVICE inline
#endif

namespace snas_fast {

SNAS_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// First output word of Philox4x32-10 for counter (c0, c1, 0, 0) and a 64-bit seed.
SNAS_HOST_DEVICE uint32_t philox_first_word(uint64_t seed, uint64_t counter) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mulhi32(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = mulhi32(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Gumbel(0, 1) sample number `index` of the stream (seed, offset), in T (float or double).
template <typename T>
SNAS_HOST_DEVICE T gumbel_noise(uint64_t seed, uint64_t offset, uint64_t index) {
  const uint32_t r = philox_first_word(seed, offset + index);
  const T u = (static_cast<T>(r >> 9) + T(0.5)) * T(1.1920928955078125e-07);  // 2^-23: u in [2^-24, 1 - 2^-24]
  // Each log in double, rounded once to T: the same value on the host, the device and Triton (which does the same),
  // whatever the accuracy of the platform's logf.
  const T l1 = static_cast<T>(log(static_cast<double>(u)));
  return -static_cast<T>(log(static_cast<double>(-l1)));
}

}  // namespace snas_fast
