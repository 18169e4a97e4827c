// The scalar twin of at::vec::fmadd. The extension is compiled with -ffp-contract=off (setup.py), so a * b + c in
// scalar code rounds twice, as written, on every path; where a loop's vector body uses at::vec::fmadd (one rounding
// on AVX2 and AVX-512, two on the default ISA), its scalar head and tail call fmadd_scalar so that every element
// rounds as the vector body would round it. An element then gets the same bits whichever part of a loop it falls
// in, which is what makes an NHWC call and an NCHW call of the same op equal bit for bit.
#pragma once
#include <cmath>

namespace snas_fast {

template <typename T>
inline T fmadd_scalar(T a, T b, T c) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

}  // namespace snas_fast
