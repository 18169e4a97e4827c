// CPU backend of the fused mixed op: at::vec::Vectorized inner loops, at::parallel_for over fixed chunks.
// Contract and shapes: csrc/mixed_op.h. Maths: docs/kernels.md.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include "../mixed_op.h"
#include "../philox.h"
#include "fmadd.h"

namespace snas_fast {
namespace {

using at::vec::Vectorized;

// Elements per task of the backward. Fixed (not derived from the thread count) so that the partial sums, and
// therefore the gradients, are bit-identical whatever the number of threads.
constexpr int64_t kChunk = 16384;

template <typename scalar_t>
constexpr bool kReduced = at::is_reduced_floating_point_v<scalar_t>;

// Outputs of a call that writes at least this many bytes are written with non-temporal (streaming) stores:
// they would not stay in the core's cache anyway, and streaming skips the read-for-ownership of every line.
constexpr int64_t kStreamBytes = 4 << 20;

#if defined(CPU_CAPABILITY_AVX2)
constexpr int64_t kStreamAlign = 32;  // bytes: _mm256_stream_* needs 32-byte aligned addresses
template <typename scalar_t>
inline void store_stream(scalar_t* p, const Vectorized<scalar_t>& v) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    _mm256_stream_ps(p, v);
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    _mm256_stream_pd(p, v);
  } else {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  }
}
inline void stream_fence() { _mm_sfence(); }
#else
constexpr int64_t kStreamAlign = 1;
template <typename scalar_t>
inline void store_stream(scalar_t* p, const Vectorized<scalar_t>& v) {
  v.store(p);
}
inline void stream_fence() {}
#endif

// Stores one vector: streaming when asked (p must then be kStreamAlign-aligned), else a plain store.
template <typename scalar_t>
inline void store(scalar_t* p, const Vectorized<scalar_t>& v, bool stream) {
  if (stream) {
    store_stream(p, v);
  } else {
    v.store(p);
  }
}

// Elements to handle one by one before p is aligned for streaming stores (0 when not streaming).
template <typename scalar_t>
inline int64_t stream_head(const scalar_t* p, int64_t n, bool stream) {
  if (!stream || kStreamAlign == 1) return 0;
  const auto misalign = reinterpret_cast<uintptr_t>(p) % kStreamAlign;
  if (misalign % sizeof(scalar_t) != 0) return n;  // never aligned: all scalar (cannot happen for torch tensors)
  return std::min<int64_t>(n, misalign ? (kStreamAlign - misalign) / sizeof(scalar_t) : 0);
}

// The weights each row applies, [R, K], in acc_t: the given weights, or z = softmax((logits + g) / tau) (then
// copied to z_out) and, when hard, one_hot(argmax z) with ties to the smallest index (all NaN if z has a NaN).
template <typename acc_t>
std::vector<acc_t> row_weights(const acc_t* logits, const acc_t* noise, int64_t R, int64_t K, bool softmax,
                               double tau, bool hard, uint64_t seed, uint64_t offset, acc_t* z_out) {
  std::vector<acc_t> w(logits, logits + R * K);
  if (!softmax && !hard) return w;
  for (int64_t r = 0; r < R; ++r) {
    acc_t* row = w.data() + r * K;
    if (softmax) {
      acc_t mx = -std::numeric_limits<acc_t>::infinity();
      for (int64_t k = 0; k < K; ++k) {
        const acc_t g = noise ? noise[r * K + k] : gumbel_noise<acc_t>(seed, offset, r * K + k);
        row[k] = (row[k] + g) / static_cast<acc_t>(tau);
        mx = std::max(mx, row[k]);
      }
      acc_t sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += (row[k] = std::exp(row[k] - mx));
      for (int64_t k = 0; k < K; ++k) row[k] /= sum;
      std::copy(row, row + K, z_out + r * K);
    }
    if (hard) {  // a NaN sample (NaN or all -inf logits) makes every weight NaN, as the reference's output is
      const bool nan = std::any_of(row, row + K, [](acc_t v) { return std::isnan(v); });
      const int64_t best = std::max_element(row, row + K) - row;  // first maximum
      std::fill(row, row + K, nan ? std::numeric_limits<acc_t>::quiet_NaN() : acc_t(0));
      row[best] = nan ? std::numeric_limits<acc_t>::quiet_NaN() : acc_t(1);
    }
  }
  return w;
}

template <typename scalar_t, typename acc_t>
inline void weighted_sum_scalar(const scalar_t* const* y, const acc_t* w, int64_t kl, int64_t from, int64_t to,
                                scalar_t* out) {
  for (int64_t i = from; i < to; ++i) {
    acc_t acc = 0;
    for (int64_t j = 0; j < kl; ++j) acc = fmadd_scalar(w[j], static_cast<acc_t>(y[j][i]), acc);
    out[i] = static_cast<scalar_t>(acc);
  }
}

// out = sum_j w_j * y_j over n elements. y: K' pointers to n elements, w: K' weights, out: n elements.
template <typename scalar_t, typename acc_t>
void weighted_sum(const scalar_t* const* y, const acc_t* w, int64_t kl, int64_t n, scalar_t* out, bool stream) {
  using aVec = Vectorized<acc_t>;
  int64_t i = stream_head(out, n, stream);
  weighted_sum_scalar(y, w, kl, 0, i, out);
  if constexpr (kReduced<scalar_t>) {
    using sVec = Vectorized<scalar_t>;
    for (; i + sVec::size() <= n; i += sVec::size()) {
      aVec lo(0), hi(0);
      for (int64_t j = 0; j < kl; ++j) {
        auto [a, b] = at::vec::convert_to_float<scalar_t>(sVec::loadu(y[j] + i));
        lo = at::vec::fmadd(aVec(w[j]), a, lo);
        hi = at::vec::fmadd(aVec(w[j]), b, hi);
      }
      store(out + i, at::vec::convert_from_float<scalar_t>(lo, hi), stream);
    }
  } else {
    for (; i + aVec::size() <= n; i += aVec::size()) {
      aVec acc(0);
      for (int64_t j = 0; j < kl; ++j) acc = at::vec::fmadd(aVec(w[j]), aVec::loadu(y[j] + i), acc);
      store(out + i, acc, stream);
    }
  }
  weighted_sum_scalar(y, w, kl, i, n, out);
}

// dy = w * g and returns <y, g>, over n elements.
template <typename scalar_t, typename acc_t>
inline acc_t scale_and_dot_scalar(const scalar_t* y, const scalar_t* g, acc_t w, int64_t from, int64_t to,
                                  scalar_t* dy) {
  acc_t total = 0;
  for (int64_t i = from; i < to; ++i) {
    const acc_t gi = static_cast<acc_t>(g[i]);
    dy[i] = static_cast<scalar_t>(w * gi);
    total = fmadd_scalar(static_cast<acc_t>(y[i]), gi, total);
  }
  return total;
}

template <typename scalar_t, typename acc_t>
acc_t scale_and_dot(const scalar_t* y, const scalar_t* g, acc_t w, int64_t n, scalar_t* dy, bool stream) {
  using aVec = Vectorized<acc_t>;
  aVec dot(0);
  int64_t i = stream_head(dy, n, stream);
  const acc_t head = scale_and_dot_scalar(y, g, w, 0, i, dy);
  if constexpr (kReduced<scalar_t>) {
    using sVec = Vectorized<scalar_t>;
    for (; i + sVec::size() <= n; i += sVec::size()) {
      auto [g0, g1] = at::vec::convert_to_float<scalar_t>(sVec::loadu(g + i));
      auto [y0, y1] = at::vec::convert_to_float<scalar_t>(sVec::loadu(y + i));
      store(dy + i, at::vec::convert_from_float<scalar_t>(g0 * aVec(w), g1 * aVec(w)), stream);
      dot = at::vec::fmadd(y0, g0, dot);
      dot = at::vec::fmadd(y1, g1, dot);
    }
  } else {
    for (; i + aVec::size() <= n; i += aVec::size()) {
      const aVec gv = aVec::loadu(g + i);
      store(dy + i, gv * aVec(w), stream);
      dot = at::vec::fmadd(aVec::loadu(y + i), gv, dot);
    }
  }
  const acc_t body = at::vec::vec_reduce_all<acc_t>([](aVec& a, aVec& b) { return a + b; }, dot);
  return head + body + scale_and_dot_scalar(y, g, w, i, n, dy);
}

template <typename scalar_t>
std::vector<const scalar_t*> data_ptrs(at::TensorList ys) {
  std::vector<const scalar_t*> p;
  for (const auto& y : ys) p.push_back(y.const_data_ptr<scalar_t>());
  return p;
}

}  // namespace

void mixed_op_fwd_cpu(at::TensorList ys, at::IntArrayRef live, const at::Tensor& logits, const at::Tensor& noise,
                      bool softmax, double tau, bool hard, uint64_t seed, uint64_t offset, const at::Tensor& out,
                      const at::Tensor& z_out) {
  const int64_t R = logits.size(0), K = logits.size(1), kl = ys.size(), N = ys[0].numel(), M = R ? N / R : 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys[0].scalar_type(), "mixed_op_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto w = row_weights<acc_t>(logits.const_data_ptr<acc_t>(),
                                      noise.defined() ? noise.const_data_ptr<acc_t>() : nullptr, R, K, softmax, tau,
                                      hard, seed, offset, softmax ? z_out.mutable_data_ptr<acc_t>() : nullptr);
    std::vector<acc_t> wl(R * kl);  // the live columns of w, [R, K']
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < kl; ++j) wl[r * kl + j] = w[r * K + live[j]];
    const auto y = data_ptrs<scalar_t>(ys);
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t per_row = (M + kChunk - 1) / kChunk;
    const bool stream = N * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamBytes;
    at::parallel_for(0, R * per_row, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> yc(kl);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t r = t / per_row, start = r * M + (t % per_row) * kChunk;
        const int64_t n = std::min(kChunk, (r + 1) * M - start);
        for (int64_t j = 0; j < kl; ++j) yc[j] = y[j] + start;
        weighted_sum<scalar_t, acc_t>(yc.data(), wl.data() + r * kl, kl, n, o + start, stream);
      }
      if (stream) stream_fence();
    });
  });
}

void mixed_op_bwd_cpu(at::TensorList ys, at::IntArrayRef live, const at::Tensor& w, const at::Tensor& grad_out,
                      const at::Tensor& grad_z, bool jacobian, double tau, bool hard, at::TensorList dys,
                      const at::Tensor& grad_w) {
  const int64_t R = w.size(0), K = w.size(1), kl = ys.size(), N = ys[0].numel(), M = R ? N / R : 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys[0].scalar_type(), "mixed_op_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* z = w.const_data_ptr<acc_t>();
    const auto used = row_weights<acc_t>(z, nullptr, R, K, false, tau, jacobian && hard, 0, 0, nullptr);
    const auto y = data_ptrs<scalar_t>(ys);
    std::vector<scalar_t*> dy;
    for (const auto& d : dys) dy.push_back(d.mutable_data_ptr<scalar_t>());
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const int64_t per_row = (M + kChunk - 1) / kChunk;
    std::vector<acc_t> partial(R * per_row * kl);  // <y_j, g> per task, [R * per_row, K']
    const bool stream = kl * N * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamBytes;
    at::parallel_for(0, R * per_row, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t r = t / per_row, start = r * M + (t % per_row) * kChunk;
        const int64_t n = std::min(kChunk, (r + 1) * M - start);
        for (int64_t j = 0; j < kl; ++j)
          partial[t * kl + j] =
              scale_and_dot<scalar_t, acc_t>(y[j] + start, g + start, used[r * K + live[j]], n, dy[j] + start, stream);
      }
      if (stream) stream_fence();
    });
    // Fixed-order reduction of the partials (in double), then the softmax Jacobian per row.
    acc_t* gw = grad_w.mutable_data_ptr<acc_t>();
    const acc_t* gz = grad_z.defined() ? grad_z.const_data_ptr<acc_t>() : nullptr;
    std::vector<double> dw(K);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t k = 0; k < K; ++k) dw[k] = gz ? static_cast<double>(gz[r * K + k]) : 0.0;
      for (int64_t c = 0; c < per_row; ++c)
        for (int64_t j = 0; j < kl; ++j) dw[live[j]] += partial[(r * per_row + c) * kl + j];
      double zdw = 0;
      if (jacobian)
        for (int64_t k = 0; k < K; ++k) zdw += z[r * K + k] * dw[k];
      for (int64_t k = 0; k < K; ++k)
        gw[r * K + k] = static_cast<acc_t>(jacobian ? z[r * K + k] * (dw[k] - zdw) / tau : dw[k]);
    }
  });
}

}  // namespace snas_fast
