// CPU backend of the deep-fused mixed edge. Contract and shapes: csrc/mixed_edge.h. Maths: docs/kernels.md.
//
// Two paths, one arithmetic. The plane path works per (b, c) plane of the output: the pools, the identity and the
// normalisation of a plane need only that plane of x and of each u_m, so at::parallel_for hands out whole planes
// and no two tasks write the same element. NCHW planes are used in place; a call whose tensors are not all
// channels-contiguous (an edge with x and the u_m in different layouts, or the strided output of partial
// channels) has its NHWC planes transposed into a task's buffer and back (PlaneReader, PlaneWriter). The NHWC
// path (every tensor channels-contiguous: a channels_last network) reads and writes in place, its loops innermost
// over channels, an example (or an output row) per task, and repeats per channel the plane path's operations in
// the same order: an NHWC call and an NCHW call give the same bits. The cross-plane reductions (batch statistics
// per channel, S1/S2 of the BatchNorm backward, the dot products of grad_w) are made of one partial per plane,
// combined afterwards in a fixed order: the results are bit-identical whatever the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../mixed_edge.h"

namespace snas_fast {
namespace {

using at::vec::Vectorized;

// Output elements per parallel task (whole planes): small planes are grouped so a task is worth its overhead.
constexpr int64_t kTaskElems = 8192;

struct Geometry {
  int64_t B, C, H, W, Ho, Wo, stride, K, R;
  int64_t plane_in() const { return H * W; }
  int64_t plane_out() const { return Ho * Wo; }
  int64_t grain() const { return std::max<int64_t>(1, kTaskElems / std::max<int64_t>(1, plane_out())); }
};

Geometry geometry(const at::Tensor& x, const at::Tensor& w, int64_t stride) {
  Geometry g;
  g.B = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.stride = stride;
  g.Ho = (g.H - 1) / stride + 1;
  g.Wo = (g.W - 1) / stride + 1;
  g.K = w.size(1);
  g.R = w.size(0);
  return g;
}

// The planes a task reads of one tensor, as contiguous runs of n elements. NCHW planes are used in place. An NHWC
// tensor's planes are strided (element stride C), so the task's planes of one example are transposed into a buffer
// together (reading runs of adjacent channels), on the first get() of that run; get(b, c, c_end): plane (b, c),
// c_end = the end of the task's run of channels of example b.
constexpr int64_t kTile = 64;  // pixels per tile of the NHWC transposes (64: 1.5x the NCHW edge time, a whole plane 2x)

// dst[i * di + k * dk] = src[i * si + k * sk] for n pixels i and nc channels k, a tile of pixels at a time (the tile
// stays in L1 across the channels): the transpose both ways between an NHWC run of planes and its buffer.
template <typename T>
void transpose_run(const T* src, int64_t si, int64_t sk, T* dst, int64_t di, int64_t dk, int64_t n, int64_t nc) {
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t i1 = std::min(n, i0 + kTile);
    for (int64_t k = 0; k < nc; ++k) {
      for (int64_t i = i0; i < i1; ++i) dst[i * di + k * dk] = src[i * si + k * sk];
    }
  }
}

template <typename T>
class PlaneReader {
 public:
  PlaneReader(const T* base, const PlaneLayout& l, int64_t n) : base_(base), l_(l), n_(n) {}
  const T* get(int64_t b, int64_t c, int64_t c_end) {
    if (l_.es == 1) return base_ + l_.at(b, c);
    if (b != b_ || c < c0_ || c >= c1_) {
      b_ = b;
      c0_ = c;
      c1_ = c_end;
      buf_.resize(static_cast<size_t>((c1_ - c0_) * n_));
      transpose_run(base_ + l_.at(b, c0_), l_.es, l_.sC, buf_.data(), 1, n_, n_, c1_ - c0_);
    }
    return buf_.data() + (c - c0_) * n_;
  }

 private:
  const T* base_;
  PlaneLayout l_;
  int64_t n_, b_ = -1, c0_ = 0, c1_ = 0;
  std::vector<T> buf_;
};

// The writing twin: an NHWC run of planes is written into a buffer and transposed into place when the task moves
// to another run, or ends (every plane of a run is written before that: tasks take their planes in order).
template <typename T>
class PlaneWriter {
 public:
  PlaneWriter(T* base, const PlaneLayout& l, int64_t n) : base_(base), l_(l), n_(n) {}
  PlaneWriter(const PlaneWriter&) = delete;
  PlaneWriter(PlaneWriter&& o) noexcept = default;
  ~PlaneWriter() { flush(); }
  T* get(int64_t b, int64_t c, int64_t c_end) {
    if (l_.es == 1) return base_ + l_.at(b, c);
    if (b != b_ || c < c0_ || c >= c1_) {
      flush();
      b_ = b;
      c0_ = c;
      c1_ = c_end;
      buf_.resize(static_cast<size_t>((c1_ - c0_) * n_));
    }
    return buf_.data() + (c - c0_) * n_;
  }
  void flush() {
    if (b_ < 0) return;
    transpose_run(buf_.data(), 1, n_, base_ + l_.at(b_, c0_), l_.es, l_.sC, n_, c1_ - c0_);
    b_ = -1;
  }

 private:
  T* base_;
  PlaneLayout l_;
  int64_t n_, b_ = -1, c0_ = 0, c1_ = 0;
  std::vector<T> buf_;
};

// Output i of a 3x3 window with padding 1 and stride s covers inputs [i*s - 1, i*s + 2) clipped to [0, n).
inline int64_t lo(int64_t i, int64_t s) { return std::max<int64_t>(i * s - 1, 0); }
inline int64_t hi(int64_t i, int64_t s, int64_t n) { return std::min<int64_t>(i * s + 2, n); }

// 1 / the in-bounds inputs of each output's window along one axis (n inputs, n_out outputs): the avg pool's divisors.
template <typename acc_t>
std::vector<acc_t> inv_counts(int64_t n_out, int64_t stride, int64_t n) {
  std::vector<acc_t> inv(static_cast<size_t>(n_out));
  for (int64_t i = 0; i < n_out; ++i) inv[i] = acc_t(1) / static_cast<acc_t>(hi(i, stride, n) - lo(i, stride));
  return inv;
}

// Per-task scratch for the pools of one plane (nothing leaves the task). The plane is copied into a buffer with a
// one-element border (-inf for the max, 0 for the sum), so the window loops need no bounds checks; pooled
// positions use padded coordinates (Wp = W + 2 columns).
template <typename acc_t>
struct PoolScratch {
  int64_t Wp;
  std::vector<acc_t> xmax, xsum;        // [H + 2, Wp] padded plane
  std::vector<acc_t> hmax, hsum;        // [H + 2, Wo] horizontal window max / sum of each padded row
  std::vector<int32_t> harg;            // [H + 2, Wo] padded column of the row maximum
  std::vector<acc_t> maxv, avgv;        // [Ho, Wo] pooled values (avgv is reused for the avg backward's A)
  std::vector<int32_t> arg;             // [Ho, Wo] padded index of the window maximum
  std::vector<acc_t> inv_rows, inv_cols;  // 1 / in-bounds rows of output row i, 1 / in-bounds columns of j
  std::vector<acc_t> tmp;               // [Ho, Wp] (avg backward)
  explicit PoolScratch(const Geometry& g)
      : Wp(g.W + 2), xmax((g.H + 2) * Wp, -std::numeric_limits<acc_t>::infinity()), xsum((g.H + 2) * Wp, acc_t(0)),
        hmax((g.H + 2) * g.Wo), hsum((g.H + 2) * g.Wo), harg((g.H + 2) * g.Wo), maxv(g.plane_out()),
        avgv(g.plane_out()), arg(g.plane_out()), inv_rows(inv_counts<acc_t>(g.Ho, g.stride, g.H)),
        inv_cols(inv_counts<acc_t>(g.Wo, g.stride, g.W)), tmp(g.Ho * Wp) {}
};

// Both pools of one plane, separably: a horizontal pass per padded row, then a vertical pass per output row.
// Max pool is at::max_pool2d's: the first maximum of the window in row-major order (strictly greater wins, a NaN
// always wins, and a window of -inf picks its first in-bounds element). Separably: the first maximum of each row,
// then the first row whose maximum is strictly greater -- the same element. The branch-free form below (strictly
// greater wins, starting from -inf at the first in-bounds position) is exact when the plane has no NaN; a plane
// with a NaN takes pool_plane_nan. Average pool divides by the in-bounds count (count_include_pad=False).
template <typename scalar_t, typename acc_t>
void pool_plane_nan(const scalar_t* xp, const Geometry& g, PoolScratch<acc_t>& s);

template <int ST, bool ARG, typename scalar_t, typename acc_t>
void pool_plane_st(const scalar_t* xp, const Geometry& g, bool want_max, bool want_avg, PoolScratch<acc_t>& s) {
  const int64_t Wp = s.Wp, Wo = g.Wo;
  bool nan = false;
  for (int64_t r = 0; r < g.H; ++r) {
    const scalar_t* row = xp + r * g.W;
    acc_t* pm = &s.xmax[(r + 1) * Wp + 1];
    acc_t* ps = &s.xsum[(r + 1) * Wp + 1];
    for (int64_t c = 0; c < g.W; ++c) {
      const acc_t v = static_cast<acc_t>(row[c]);
      nan |= v != v;
      pm[c] = v;
      ps[c] = v;
    }
  }
  // A plane holding a NaN takes the exact scan for its max pool (pool_plane_nan); its average pool stays separable,
  // so every plane's averages are summed in one order (the NHWC kernel's order too).
  const bool sep_max = want_max && !nan;
  const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  // Each loop below runs over j with a constant stride: the compiler vectorises them (selects, no branches).
  for (int64_t r = 0; r < g.H + 2; ++r) {
    const acc_t* pm = &s.xmax[r * Wp];
    const acc_t* ps = &s.xsum[r * Wp];
    acc_t* __restrict__ hm = &s.hmax[r * Wo];
    acc_t* __restrict__ hs = &s.hsum[r * Wo];
    int32_t* __restrict__ ha = &s.harg[r * Wo];
    if (sep_max) {
      for (int64_t j = 0; j < Wo; ++j) {
        hm[j] = ninf;
        if (ARG) ha[j] = static_cast<int32_t>(j == 0 ? 1 : j * ST);  // the first in-bounds column (padded)
      }
      for (int d = 0; d < 3; ++d) {
        for (int64_t j = 0; j < Wo; ++j) {
          const acc_t v = pm[j * ST + d];
          const bool t = v > hm[j];
          hm[j] = t ? v : hm[j];
          if (ARG) ha[j] = t ? static_cast<int32_t>(j * ST + d) : ha[j];
        }
      }
    }
    if (want_avg) {
      for (int64_t j = 0; j < Wo; ++j) hs[j] = ps[j * ST] + ps[j * ST + 1] + ps[j * ST + 2];
    }
  }
  for (int64_t i = 0; i < g.Ho; ++i) {
    const int64_t r = i * ST;  // padded rows r, r + 1, r + 2
    const int64_t first = r == 0 ? 1 : r;  // the first in-bounds padded row
    if (sep_max) {
      acc_t* __restrict__ mv = &s.maxv[i * Wo];
      int32_t* __restrict__ ma = &s.arg[i * Wo];
      for (int64_t j = 0; j < Wo; ++j) {
        mv[j] = ninf;
        if (ARG) ma[j] = static_cast<int32_t>(first * Wp) + s.harg[first * Wo + j];
      }
      for (int d = 0; d < 3; ++d) {
        const acc_t* hm = &s.hmax[(r + d) * Wo];
        const int32_t* ha = &s.harg[(r + d) * Wo];
        const int32_t base = static_cast<int32_t>((r + d) * Wp);
        for (int64_t j = 0; j < Wo; ++j) {
          const bool t = hm[j] > mv[j];
          mv[j] = t ? hm[j] : mv[j];
          if (ARG) ma[j] = t ? base + ha[j] : ma[j];
        }
      }
    }
    if (want_avg) {
      acc_t* __restrict__ av = &s.avgv[i * Wo];
      const acc_t ir = s.inv_rows[i];
      const acc_t* h0 = &s.hsum[r * Wo];
      const acc_t* h1 = h0 + Wo;
      const acc_t* h2 = h1 + Wo;
      for (int64_t j = 0; j < Wo; ++j) av[j] = (h0[j] + h1[j] + h2[j]) * (ir * s.inv_cols[j]);
    }
  }
  if (want_max && nan) pool_plane_nan(xp, g, s);
}

template <bool ARG, typename scalar_t, typename acc_t>
void pool_plane(const scalar_t* xp, const Geometry& g, bool want_max, bool want_avg, PoolScratch<acc_t>& s) {
  if (g.stride == 1) {
    pool_plane_st<1, ARG>(xp, g, want_max, want_avg, s);
  } else {
    pool_plane_st<2, ARG>(xp, g, want_max, want_avg, s);
  }
}

// The exact scan of at::max_pool2d for a plane holding a NaN (a NaN always wins, so the last NaN of the window in
// row-major order is the maximum); same outputs and padded coordinates as pool_plane's max.
template <typename scalar_t, typename acc_t>
void pool_plane_nan(const scalar_t* xp, const Geometry& g, PoolScratch<acc_t>& s) {
  const int64_t st = g.stride;
  for (int64_t i = 0; i < g.Ho; ++i) {
    for (int64_t j = 0; j < g.Wo; ++j) {
      const int64_t r0 = lo(i, st), r1 = hi(i, st, g.H), c0 = lo(j, st), c1 = hi(j, st, g.W);
      acc_t best = -std::numeric_limits<acc_t>::infinity();
      int64_t arg = r0 * g.W + c0;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          const acc_t v = static_cast<acc_t>(xp[r * g.W + c]);
          if (v > best || std::isnan(v)) {
            best = v;
            arg = r * g.W + c;
          }
        }
      }
      s.maxv[i * g.Wo + j] = best;
      s.arg[i * g.Wo + j] = static_cast<int32_t>((arg / g.W + 1) * s.Wp + arg % g.W + 1);
    }
  }
}

// dxp (padded, [H + 2, Wp]) += the average pool's backward of A (A[o] = weight * G[o] / count(o), in s.avgv).
template <int ST, typename acc_t>
void avg_pool_backward_st(const Geometry& g, PoolScratch<acc_t>& s, acc_t* dxp) {
  const int64_t Wp = s.Wp, Wo = g.Wo;
  std::fill(s.tmp.begin(), s.tmp.end(), acc_t(0));
  for (int64_t i = 0; i < g.Ho; ++i) {  // columns: tmp[i, c'] = sum of A[i, j] over the windows covering c'
    const acc_t* a = &s.avgv[i * Wo];
    acc_t* t = &s.tmp[i * Wp];
    for (int d = 0; d < 3; ++d) {
      for (int64_t j = 0; j < Wo; ++j) t[j * ST + d] += a[j];
    }
  }
  for (int64_t i = 0; i < g.Ho; ++i) {  // rows
    const acc_t* t = &s.tmp[i * Wp];
    for (int d = 0; d < 3; ++d) {
      acc_t* __restrict__ out = dxp + (i * ST + d) * Wp;
      for (int64_t c = 0; c < Wp; ++c) out[c] += t[c];
    }
  }
}

template <typename acc_t>
void avg_pool_backward(const Geometry& g, PoolScratch<acc_t>& s, acc_t* dxp) {
  if (g.stride == 1) {
    avg_pool_backward_st<1>(g, s, dxp);
  } else {
    avg_pool_backward_st<2>(g, s, dxp);
  }
}

// Reductions over a plane in acc_t: sum_i f(a_i, b_i) for f in {a, (a - mu)^2, a * b, (a - mu) * b}. Float and
// double inputs use one vector accumulator (its lanes summed in a fixed order at the end); reduced types
// convert element by element. The order depends on n only, never on the thread count.
enum class Red { Sum, M2, Dot, CDot };

// One element's term of a reduction, the same expression on both paths (plane and NHWC).
template <Red kind, typename acc_t>
inline acc_t red_term(acc_t x, acc_t y, acc_t mu) {
  if constexpr (kind == Red::Sum) return x;
  if constexpr (kind == Red::M2) return (x - mu) * (x - mu);
  if constexpr (kind == Red::Dot) return x * y;
  return (x - mu) * y;
}

// One vector step of a reduction: acc + the term of the lanes x (and y), at::vec::fmadd where a product is added.
template <Red kind, typename V>
inline V red_step(V acc, V x, V y, V mu) {
  if constexpr (kind == Red::Sum) return acc + x;
  if constexpr (kind == Red::M2) return at::vec::fmadd(x - mu, x - mu, acc);
  if constexpr (kind == Red::Dot) return at::vec::fmadd(x, y, acc);
  return at::vec::fmadd(x - mu, y, acc);
}

template <Red kind, typename scalar_t, typename acc_t>
inline acc_t reduce_plane(const scalar_t* a, const scalar_t* b, acc_t mu, int64_t n) {
  acc_t total = 0;
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using V = Vectorized<acc_t>;
    constexpr int64_t L = V::size();
    V acc(0), vmu(mu);
    for (; i + L <= n; i += L) {
      const V y = (kind == Red::Dot || kind == Red::CDot) ? V::loadu(b + i) : V(0);
      acc = red_step<kind>(acc, V::loadu(a + i), y, vmu);
    }
    acc_t lanes[L];
    acc.store(lanes);
    for (int64_t l = 0; l < L; ++l) total += lanes[l];
  }
  for (; i < n; ++i) total += red_term<kind>(static_cast<acc_t>(a[i]), b ? static_cast<acc_t>(b[i]) : acc_t(0), mu);
  return total;
}

// Weight of column col for example b (0 for an absent term).
template <typename acc_t>
inline acc_t weight(const acc_t* w, const Geometry& g, int64_t b, int64_t col) {
  return col < 0 ? acc_t(0) : w[(g.R == 1 ? 0 : b) * g.K + col];
}


// The BatchNorm backward of u_m per channel, du = a G + k u + k0 (batch statistics; rstd * (wb G - S1 / n - xhat * S2
// / n), xhat = (u - mu) * rstd), or du = a G (given statistics): one formula for both paths.
template <typename acc_t>
inline void bn_coefs(acc_t r, acc_t mu, acc_t wb, acc_t s1, acc_t s2, acc_t inv_n, bool batch_stats, acc_t& a,
                     acc_t& k, acc_t& k0) {
  a = r * wb;
  k = batch_stats ? -r * r * s2 * inv_n : acc_t(0);
  k0 = batch_stats ? -r * s1 * inv_n - k * mu : acc_t(0);
}

// ---------------------------------------------------------------------------------------------------------------
// The NHWC path: every [B, C, *, *] tensor of the call channels-contiguous (PlaneLayout sC == 1), read and written in
// place, the loops innermost over channels (vectorised by the compiler; Vectorized<acc_t> where the plane path uses
// it). Each loop repeats, per channel, the plane path's operations in the plane path's order (the padded pool
// buffers, the reductions' vector lanes, the scatter of the max pool's gradient, the avg pool's backward by columns
// then rows), so both paths give the same bits. Tasks take whole examples (or output rows of one example).
// ---------------------------------------------------------------------------------------------------------------

// Every layout dense channels_last (channels contiguous, pixels C apart), and more than one channel (with one,
// both layouts are the plane path's).
inline bool nhwc_native(const Geometry& g, std::initializer_list<PlaneLayout> layouts) {
  if (g.C < 2) return false;
  for (const auto& l : layouts) {
    if (l.sC != 1 || l.es != g.C) return false;
  }
  return true;
}

// out[c] = reduce_plane<kind>(plane c of a, plane c of b, mu[c], n) for the C channels of one example: pixel i of
// channel c at a[i * ea + c] (b[i * eb + c]). reduce_plane's vector lanes are kept per channel, a block of L
// channels at a time in L registers: lane l takes the pixels i = l (mod L) below n - n % L, in order; then lanes
// 0..L-1 are added in order, then the tail.
template <Red kind, typename scalar_t, typename acc_t>
void reduce_channels(const scalar_t* a, int64_t ea, const scalar_t* b, int64_t eb, const acc_t* mu, int64_t n,
                     int64_t C, acc_t* out) {
  constexpr bool two = kind == Red::Dot || kind == Red::CDot;
  constexpr bool centred = kind == Red::M2 || kind == Red::CDot;
  std::fill(out, out + C, acc_t(0));
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using V = Vectorized<acc_t>;
    constexpr int64_t L = V::size();
    const int64_t n_vec = n - n % L;
    for (int64_t c0 = 0; c0 < C; c0 += L) {
      const int64_t k = std::min<int64_t>(L, C - c0);
      auto load = [k](const acc_t* p) { return k == L ? V::loadu(p) : V::loadu(p, k); };
      const V m = centred ? load(mu + c0) : V(0);
      V acc[L];
      for (int64_t l = 0; l < L; ++l) acc[l] = V(0);
      for (int64_t i0 = 0; i0 < n_vec; i0 += L) {
        for (int64_t l = 0; l < L; ++l) {
          const V y = two ? load(b + (i0 + l) * eb + c0) : V(0);
          acc[l] = red_step<kind>(acc[l], load(a + (i0 + l) * ea + c0), y, m);
        }
      }
      acc_t lanes[L][L];
      for (int64_t l = 0; l < L; ++l) acc[l].store(lanes[l]);
      for (int64_t c = 0; c < k; ++c) {
        acc_t total = 0;
        for (int64_t l = 0; l < L; ++l) total += lanes[l][c];
        out[c0 + c] = total;
      }
    }
    i = n_vec;
  }
  for (; i < n; ++i) {
    const scalar_t* ai = a + i * ea;
    const scalar_t* bi = two ? b + i * eb : ai;
    for (int64_t c = 0; c < C; ++c) {
      out[c] += red_term<kind>(static_cast<acc_t>(ai[c]), two ? static_cast<acc_t>(bi[c]) : acc_t(0),
                               centred ? mu[c] : acc_t(0));
    }
  }
}

// Per-task scratch of pool_row_nhwc for one geometry: padded input rows and the three rows' horizontal windows.
template <typename acc_t>
struct RowPoolScratch {
  int64_t E;                           // Wo * C: an output row
  std::vector<acc_t> xpm, xps;         // [W + 2, C] an input row, padded with -inf (max) and 0 (sum)
  std::vector<acc_t> hm, hs;           // [3, Wo, C] each padded row's horizontal window max and sum
  std::vector<int32_t> ha;             // [3, Wo, C] the padded column of the row maximum
  std::vector<int32_t> col0, first;    // [Wo, C] the window's first padded column; its first in-bounds one
  std::vector<acc_t> icol;             // [Wo, C] 1 / the window's in-bounds columns
  RowPoolScratch(const Geometry& g, const std::vector<acc_t>& inv_cols)
      : E(g.Wo * g.C), xpm((g.W + 2) * g.C, -std::numeric_limits<acc_t>::infinity()), xps((g.W + 2) * g.C, acc_t(0)),
        hm(3 * E), hs(3 * E), ha(3 * E), col0(E), first(E), icol(E) {
    for (int64_t j = 0; j < g.Wo; ++j) {
      for (int64_t c = 0; c < g.C; ++c) {
        col0[j * g.C + c] = static_cast<int32_t>(j * g.stride);
        first[j * g.C + c] = static_cast<int32_t>(j == 0 ? 1 : j * g.stride);
        icol[j * g.C + c] = inv_cols[j];
      }
    }
  }
};

// The pools of output row i of one example (x at xb, dense channels_last) for all channels, as pool_plane computes
// them per plane: maxv, arg (the padded index of the window maximum) and avgv, each [Wo, C]. Separably: each of
// the window's three padded rows gets its horizontal windows (strictly greater wins; a NaN always wins, which is
// pool_plane_nan's element: the last NaN of the window in row-major order), then the rows are combined in order;
// the average adds the padded window by rows of three, then the three rows, the padding as zeros.
template <bool ARG, typename scalar_t, typename acc_t>
void pool_row_nhwc(const scalar_t* xb, const Geometry& g, int64_t i, bool want_max, bool want_avg, acc_t ir,
                   acc_t* maxv, int32_t* arg, acc_t* avgv, RowPoolScratch<acc_t>& s) {
  const int64_t C = g.C, st = g.stride, E = s.E, Wp = g.W + 2, WC = g.W * C;
  const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  bool live[3];
  for (int d = 0; d < 3; ++d) {
    const int64_t r = i * st - 1 + d;  // padded row i * st + d
    live[d] = r >= 0 && r < g.H;
    acc_t* __restrict__ hm = &s.hm[d * E];
    acc_t* __restrict__ hs = &s.hs[d * E];
    int32_t* __restrict__ ha = &s.ha[d * E];
    if (!live[d]) {
      if (want_avg) std::fill(hs, hs + E, acc_t(0));  // a row of padding sums to 0
      continue;
    }
    const scalar_t* xr = xb + r * WC;
    acc_t* __restrict__ pm = &s.xpm[C];
    acc_t* __restrict__ ps = &s.xps[C];
    for (int64_t e = 0; e < WC; ++e) {
      const acc_t v = static_cast<acc_t>(xr[e]);
      if (want_max) pm[e] = v;
      if (want_avg) ps[e] = v;
    }
    if (want_max) {
      const int32_t* first = s.first.data();
      const int32_t* col0 = s.col0.data();
      for (int64_t e = 0; e < E; ++e) {
        hm[e] = ninf;
        if (ARG) ha[e] = first[e];
      }
      for (int64_t dc = 0; dc < 3; ++dc) {
        if (st == 1) {
          const acc_t* src = &s.xpm[dc * C];
          for (int64_t e = 0; e < E; ++e) {
            const acc_t v = src[e];
            const bool t = v > hm[e] || v != v;
            hm[e] = t ? v : hm[e];
            if (ARG) ha[e] = t ? col0[e] + static_cast<int32_t>(dc) : ha[e];
          }
        } else {
          for (int64_t j = 0; j < g.Wo; ++j) {
            const acc_t* src = &s.xpm[(j * st + dc) * C];
            for (int64_t c = 0; c < C; ++c) {
              const int64_t e = j * C + c;
              const acc_t v = src[c];
              const bool t = v > hm[e] || v != v;
              hm[e] = t ? v : hm[e];
              if (ARG) ha[e] = t ? col0[e] + static_cast<int32_t>(dc) : ha[e];
            }
          }
        }
      }
    }
    if (want_avg) {
      const acc_t* x0 = s.xps.data();
      if (st == 1) {
        for (int64_t e = 0; e < E; ++e) hs[e] = x0[e] + x0[e + C] + x0[e + 2 * C];
      } else {
        for (int64_t j = 0; j < g.Wo; ++j) {
          const acc_t* src = x0 + j * st * C;
          for (int64_t c = 0; c < C; ++c) hs[j * C + c] = src[c] + src[C + c] + src[2 * C + c];
        }
      }
    }
  }
  if (want_max) {
    const int64_t top = live[0] ? 0 : 1;  // the first in-bounds padded row of the window
    const int32_t base0 = static_cast<int32_t>((i * st + top) * Wp);
    for (int64_t e = 0; e < E; ++e) {
      maxv[e] = ninf;
      if (ARG) arg[e] = base0 + s.ha[top * E + e];
    }
    for (int d = 0; d < 3; ++d) {
      if (!live[d]) continue;  // a row of padding (-inf) never wins
      const acc_t* hm = &s.hm[d * E];
      const int32_t* ha = &s.ha[d * E];
      const int32_t base = static_cast<int32_t>((i * st + d) * Wp);
      for (int64_t e = 0; e < E; ++e) {
        const bool t = hm[e] > maxv[e] || hm[e] != hm[e];
        maxv[e] = t ? hm[e] : maxv[e];
        if (ARG) arg[e] = t ? base + ha[e] : arg[e];
      }
    }
  }
  if (want_avg) {
    const acc_t* h0 = s.hs.data();
    const acc_t* h1 = h0 + E;
    const acc_t* h2 = h1 + E;
    for (int64_t e = 0; e < E; ++e) avgv[e] = (h0[e] + h1[e] + h2[e]) * (ir * s.icol[e]);
  }
}

// Forward pass 1: the plane mean and M2 of every u_m, part[(m * P + b * C + c) * 2 + {0, 1}].
template <typename scalar_t, typename acc_t>
void stats_nhwc(const std::vector<const scalar_t*>& u, const PlaneLayout& lu, const Geometry& g, acc_t* part) {
  const int64_t M = static_cast<int64_t>(u.size()), P = g.B * g.C, C = g.C, npl = g.plane_out();
  at::parallel_for(0, g.B, std::max<int64_t>(1, kTaskElems / (npl * C)), [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> mu(C), m2(C);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t m = 0; m < M; ++m) {
        const scalar_t* ub = u[m] + b * lu.sB;
        reduce_channels<Red::Sum>(ub, lu.es, ub, lu.es, static_cast<const acc_t*>(nullptr), npl, C, mu.data());
        for (int64_t c = 0; c < C; ++c) mu[c] = mu[c] / static_cast<acc_t>(npl);
        reduce_channels<Red::M2>(ub, lu.es, ub, lu.es, mu.data(), npl, C, m2.data());
        for (int64_t c = 0; c < C; ++c) {
          part[(m * P + b * C + c) * 2] = mu[c];
          part[(m * P + b * C + c) * 2 + 1] = m2[c];
        }
      }
    }
  });
}

// Forward pass 2: the weighted sum, an output row of one example per step.
template <typename scalar_t, typename acc_t>
void mix_nhwc(const scalar_t* xd, const PlaneLayout& lx, const std::vector<const scalar_t*>& u, const PlaneLayout& lu,
              scalar_t* od, const PlaneLayout& lout, const acc_t* w, const EdgeCols& cols, const acc_t* mean,
              const acc_t* rstd, const Geometry& g) {
  const int64_t M = static_cast<int64_t>(u.size()), C = g.C, Wo = g.Wo;
  const bool has_max = cols.max_col >= 0, has_avg = cols.avg_col >= 0, has_id = cols.id_col >= 0;
  const std::vector<acc_t> inv_rows = inv_counts<acc_t>(g.Ho, g.stride, g.H);
  const std::vector<acc_t> inv_cols = inv_counts<acc_t>(Wo, g.stride, g.W);
  const int64_t E = Wo * C;  // an output row (pixels are C apart: nhwc_native): the loops below run over it flat
  at::parallel_for(0, g.B * g.Ho, std::max<int64_t>(1, kTaskElems / E), [&](int64_t q0, int64_t q1) {
    // a, shift: the normalised u-terms' w * (u - mean) * rstd = a * u + shift, repeated along a row ([M, Wo, C])
    std::vector<acc_t> acc(E), maxv(E), avgv(E), a(M * E), shift(M * E);
    RowPoolScratch<acc_t> pool(g, inv_cols);
    int64_t b_coef = -1;
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / g.Ho, i = q % g.Ho;
      const acc_t w_max = weight(w, g, b, cols.max_col), w_avg = weight(w, g, b, cols.avg_col);
      const acc_t w_id = weight(w, g, b, cols.id_col);
      if (b != b_coef) {
        for (int64_t m = 0; m < M; ++m) {
          const acc_t wm = weight(w, g, b, cols.bn_cols[m]);
          for (int64_t c = 0; c < C; ++c) {
            a[m * E + c] = wm * rstd[m * C + c];
            shift[m * E + c] = -a[m * E + c] * mean[m * C + c];
          }
          for (int64_t j = 1; j < Wo; ++j) {
            std::copy(&a[m * E], &a[m * E] + C, &a[m * E + j * C]);
            std::copy(&shift[m * E], &shift[m * E] + C, &shift[m * E + j * C]);
          }
        }
        b_coef = b;
      }
      const scalar_t* xb = xd + b * lx.sB;
      acc_t* __restrict__ ac = acc.data();
      if (has_max || has_avg) {
        pool_row_nhwc<false>(xb, g, i, has_max, has_avg, inv_rows[i], maxv.data(), static_cast<int32_t*>(nullptr),
                             avgv.data(), pool);
        const acc_t* mv = maxv.data();
        const acc_t* av = avgv.data();
        if (has_max && has_avg) {
          for (int64_t e = 0; e < E; ++e) ac[e] = w_max * mv[e] + w_avg * av[e];
        } else if (has_max) {
          for (int64_t e = 0; e < E; ++e) ac[e] = w_max * mv[e] + acc_t(0);
        } else {
          for (int64_t e = 0; e < E; ++e) ac[e] = acc_t(0) + w_avg * av[e];
        }
      } else {
        std::fill(acc.begin(), acc.end(), acc_t(0));
      }
      if (has_id) {  // stride 1: row i of x is row i of out
        const scalar_t* xr = xb + i * E;
        for (int64_t e = 0; e < E; ++e) ac[e] += w_id * static_cast<acc_t>(xr[e]);
      }
      for (int64_t m = 0; m < M; ++m) {
        const acc_t* am = &a[m * E];
        const acc_t* sm = &shift[m * E];
        const scalar_t* ur = u[m] + b * lu.sB + i * E;
        for (int64_t e = 0; e < E; ++e) ac[e] += am[e] * static_cast<acc_t>(ur[e]) + sm[e];
      }
      scalar_t* orow = od + b * lout.sB + i * E;
      for (int64_t e = 0; e < E; ++e) orow[e] = static_cast<scalar_t>(ac[e]);
    }
  });
}

// Backward pass 1, an example per step: the plane partials (the slots of bwd_impl) and dx, in the padded buffer
// dxa ([H + 2, W + 2, C]) as the plane path builds it: the identity's term, the max pool's gradient scattered in
// output order, then the avg pool's backward.
template <typename scalar_t, typename acc_t>
void bwd_partials_nhwc(const scalar_t* xd, const PlaneLayout& lx, const std::vector<const scalar_t*>& u,
                       const PlaneLayout& lu, const scalar_t* gd, const PlaneLayout& lg, scalar_t* dxd,
                       const acc_t* w, const EdgeCols& cols, const acc_t* mean, const acc_t* rstd, const Geometry& g,
                       acc_t* part) {
  const int64_t M = static_cast<int64_t>(u.size()), C = g.C, S = M + 4, Wo = g.Wo, Wp = g.W + 2;
  const int64_t npl = g.plane_out(), st = g.stride;
  const bool has_max = cols.max_col >= 0, has_avg = cols.avg_col >= 0, has_id = cols.id_col >= 0;
  const std::vector<acc_t> inv_rows = inv_counts<acc_t>(g.Ho, st, g.H), inv_cols = inv_counts<acc_t>(Wo, st, g.W);
  at::parallel_for(0, g.B, std::max<int64_t>(1, kTaskElems / (npl * C)), [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> red(C), smax(C), savg(C), maxv(Wo * C), A(npl * C);
    RowPoolScratch<acc_t> pool(g, inv_cols);
    std::vector<int32_t> arg(Wo * C);
    std::vector<acc_t> dxa((g.H + 2) * Wp * C), tmp(g.Ho * Wp * C);
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* gb = gd + b * lg.sB;
      const scalar_t* xb = xd + b * lx.sB;
      acc_t* pp = &part[b * C * S];  // pp[c * S + slot]
      reduce_channels<Red::Sum>(gb, lg.es, gb, lg.es, static_cast<const acc_t*>(nullptr), npl, C, red.data());
      for (int64_t c = 0; c < C; ++c) pp[c * S] = red[c];
      for (int64_t m = 0; m < M; ++m) {
        reduce_channels<Red::CDot>(u[m] + b * lu.sB, lu.es, gb, lg.es, mean + m * C, npl, C, red.data());
        for (int64_t c = 0; c < C; ++c) pp[c * S + 1 + m] = red[c] * rstd[m * C + c];
      }
      const acc_t w_max = weight(w, g, b, cols.max_col), w_avg = weight(w, g, b, cols.avg_col);
      const acc_t w_id = weight(w, g, b, cols.id_col);
      std::fill(dxa.begin(), dxa.end(), acc_t(0));
      if (has_id) {
        reduce_channels<Red::Dot>(xb, lx.es, gb, lg.es, static_cast<const acc_t*>(nullptr), npl, C, red.data());
        for (int64_t c = 0; c < C; ++c) pp[c * S + M + 3] = red[c];
        for (int64_t r = 0; r < g.H; ++r) {
          for (int64_t cc = 0; cc < g.W; ++cc) {
            acc_t* d = &dxa[((r + 1) * Wp + cc + 1) * C];
            const scalar_t* gv = gb + (r * g.W + cc) * lg.es;
            for (int64_t c = 0; c < C; ++c) d[c] = w_id * static_cast<acc_t>(gv[c]);
          }
        }
      }
      if (has_max || has_avg) {
        std::fill(smax.begin(), smax.end(), acc_t(0));
        std::fill(savg.begin(), savg.end(), acc_t(0));
        for (int64_t i = 0; i < g.Ho; ++i) {
          pool_row_nhwc<true>(xb, g, i, has_max, has_avg, inv_rows[i], maxv.data(), arg.data(), &A[i * Wo * C], pool);
          const acc_t wr = w_avg * inv_rows[i];
          for (int64_t j = 0; j < Wo; ++j) {
            const scalar_t* gv = gb + (i * Wo + j) * lg.es;
            if (has_max) {
              const acc_t* mv = &maxv[j * C];
              const int32_t* ma = &arg[j * C];
              for (int64_t c = 0; c < C; ++c) {
                const acc_t gc = static_cast<acc_t>(gv[c]);
                smax[c] += mv[c] * gc;
                dxa[ma[c] * C + c] += w_max * gc;
              }
            }
            if (has_avg) {
              acc_t* av = &A[(i * Wo + j) * C];
              for (int64_t c = 0; c < C; ++c) {
                const acc_t gc = static_cast<acc_t>(gv[c]);
                savg[c] += av[c] * gc;
                av[c] = wr * inv_cols[j] * gc;  // A[o] = w_avg * G[o] / count(o)
              }
            }
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          if (has_max) pp[c * S + M + 1] = smax[c];
          if (has_avg) pp[c * S + M + 2] = savg[c];
        }
        if (has_avg) {  // avg_pool_backward_st, per channel: by columns into tmp, then by rows into dxa
          std::fill(tmp.begin(), tmp.end(), acc_t(0));
          for (int64_t i = 0; i < g.Ho; ++i) {
            for (int d = 0; d < 3; ++d) {
              for (int64_t j = 0; j < Wo; ++j) {
                acc_t* t = &tmp[(i * Wp + j * st + d) * C];
                const acc_t* av = &A[(i * Wo + j) * C];
                for (int64_t c = 0; c < C; ++c) t[c] += av[c];
              }
            }
          }
          for (int64_t i = 0; i < g.Ho; ++i) {
            for (int d = 0; d < 3; ++d) {
              acc_t* out = &dxa[(i * st + d) * Wp * C];
              const acc_t* t = &tmp[i * Wp * C];
              for (int64_t e = 0; e < Wp * C; ++e) out[e] += t[e];
            }
          }
        }
      }
      scalar_t* dxb = dxd + b * lx.sB;
      for (int64_t r = 0; r < g.H; ++r) {
        for (int64_t cc = 0; cc < g.W; ++cc) {
          const acc_t* d = &dxa[((r + 1) * Wp + cc + 1) * C];
          scalar_t* dv = dxb + (r * g.W + cc) * lx.es;
          for (int64_t c = 0; c < C; ++c) dv[c] = static_cast<scalar_t>(d[c]);
        }
      }
    }
  });
}

// Backward pass 2: dus, elementwise, an example per step, in flat runs of `run` pixels (the coefficients a, k, k0 of
// bn_coefs per channel, repeated along the run).
template <typename scalar_t, typename acc_t>
void dus_nhwc(const std::vector<const scalar_t*>& u, const PlaneLayout& lu, const std::vector<scalar_t*>& du,
              const scalar_t* gd, const PlaneLayout& lg, const acc_t* w, const EdgeCols& cols, const acc_t* mean,
              const acc_t* rstd, const acc_t* s1, const acc_t* s2, bool batch_stats, const Geometry& g) {
  const int64_t M = static_cast<int64_t>(u.size()), C = g.C, npl = g.plane_out();
  const int64_t run = std::max<int64_t>(1, 1024 / C);  // pixels per run
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(g.B * npl);
  at::parallel_for(0, g.B, std::max<int64_t>(1, kTaskElems / (npl * C)), [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> a(run * C), k(run * C), k0(run * C);
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* gb = gd + b * lg.sB;
      for (int64_t m = 0; m < M; ++m) {
        const acc_t wb = weight(w, g, b, cols.bn_cols[m]);
        for (int64_t c = 0; c < C; ++c) {
          bn_coefs(rstd[m * C + c], mean[m * C + c], wb, s1[m * C + c], s2[m * C + c], inv_n, batch_stats, a[c], k[c],
                   k0[c]);
        }
        for (int64_t j = 1; j < run; ++j) {
          std::copy(&a[0], &a[C], &a[j * C]);
          std::copy(&k[0], &k[C], &k[j * C]);
          std::copy(&k0[0], &k0[C], &k0[j * C]);
        }
        const scalar_t* ub = u[m] + b * lu.sB;
        scalar_t* db = du[m] + b * lu.sB;
        for (int64_t p0 = 0; p0 < npl; p0 += run) {
          const int64_t n = std::min(run, npl - p0) * C;
          const scalar_t* gr = gb + p0 * C;
          const scalar_t* ur = ub + p0 * C;
          scalar_t* dr = db + p0 * C;
          if (batch_stats) {
            for (int64_t e = 0; e < n; ++e) {
              const acc_t ge = static_cast<acc_t>(gr[e]), ue = static_cast<acc_t>(ur[e]);
              dr[e] = static_cast<scalar_t>(a[e] * ge + k[e] * ue + k0[e]);
            }
          } else {
            for (int64_t e = 0; e < n; ++e) dr[e] = static_cast<scalar_t>(a[e] * static_cast<acc_t>(gr[e]));
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t>
void fwd_impl(const at::Tensor& x, at::TensorList us, const at::Tensor& w_t, const EdgeCols& cols, int64_t stride,
              bool batch_stats, at::TensorList running_mean, at::TensorList running_var, double momentum, double eps,
              const at::Tensor& out, const at::Tensor& mean_t, const at::Tensor& rstd_t) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g = geometry(x, w_t, stride);
  const int64_t M = static_cast<int64_t>(us.size());
  const int64_t P = g.B * g.C, npl = g.plane_out();
  std::vector<const scalar_t*> u(M);
  for (int64_t m = 0; m < M; ++m) u[m] = us[m].const_data_ptr<scalar_t>();
  const PlaneLayout lx = plane_layout(x), lu = M ? plane_layout(us[0]) : lx, lout = plane_layout(out);
  acc_t* mean = mean_t.data_ptr<acc_t>();
  acc_t* rstd = rstd_t.data_ptr<acc_t>();

  const bool nhwc = M > 0 ? nhwc_native(g, {lx, lu, lout}) : nhwc_native(g, {lx, lout});
  if (batch_stats && M > 0) {
    // Pass 1: plane mean and M2 (sum of squared deviations from the plane mean) of every u_m.
    std::vector<acc_t> part(static_cast<size_t>(M * P * 2));
    if (nhwc) stats_nhwc(u, lu, g, part.data());
    else at::parallel_for(0, P, g.grain(), [&](int64_t p0, int64_t p1) {
      std::vector<PlaneReader<scalar_t>> ur;
      for (int64_t m = 0; m < M; ++m) ur.emplace_back(u[m], lu, npl);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / g.C, c = p % g.C, c_end = std::min(g.C, p1 - b * g.C);
        for (int64_t m = 0; m < M; ++m) {
          const scalar_t* up = ur[m].get(b, c, c_end);
          const acc_t mu = reduce_plane<Red::Sum>(up, up, acc_t(0), npl) / static_cast<acc_t>(npl);
          part[(m * P + p) * 2] = mu;
          part[(m * P + p) * 2 + 1] = reduce_plane<Red::M2>(up, up, mu, npl);
        }
      }
    });
    // Combine the B planes of each channel (Chan et al.), b = 0 .. B-1, and update the running statistics.
    const acc_t n_total = static_cast<acc_t>(g.B * npl);
    for (int64_t m = 0; m < M; ++m) {
      acc_t* rm = running_mean.empty() ? nullptr : running_mean[m].data_ptr<acc_t>();
      acc_t* rv = running_var.empty() ? nullptr : running_var[m].data_ptr<acc_t>();
      for (int64_t c = 0; c < g.C; ++c) {
        acc_t n_a = 0, mu_a = 0, m2_a = 0;
        for (int64_t b = 0; b < g.B; ++b) {
          const acc_t* pp = &part[(m * P + b * g.C + c) * 2];
          const acc_t n_b = static_cast<acc_t>(npl), n = n_a + n_b;
          const acc_t delta = pp[0] - mu_a;
          mu_a += delta * (n_b / n);
          m2_a += pp[1] + delta * (delta * (n_a * n_b / n));  // not (delta * delta) * 0: inf * 0 when n_a = 0
          n_a = n;
        }
        const acc_t var = m2_a / n_total;
        mean[m * g.C + c] = mu_a;
        rstd[m * g.C + c] = acc_t(1) / std::sqrt(var + static_cast<acc_t>(eps));
        if (rm != nullptr) {
          const acc_t mom = static_cast<acc_t>(momentum);
          rm[c] = (acc_t(1) - mom) * rm[c] + mom * mu_a;
          rv[c] = (acc_t(1) - mom) * rv[c] + mom * var * n_total / (n_total - acc_t(1));
        }
      }
    }
  }

  // Pass 2: the weighted sum, plane by plane.
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const acc_t* w = w_t.const_data_ptr<acc_t>();
  scalar_t* od = out.data_ptr<scalar_t>();
  if (nhwc) return mix_nhwc(xd, lx, u, lu, od, lout, w, cols, mean, rstd, g);
  const bool has_max = cols.max_col >= 0, has_avg = cols.avg_col >= 0;
  at::parallel_for(0, P, g.grain(), [&](int64_t p0, int64_t p1) {
    std::vector<acc_t> acc(static_cast<size_t>(npl));
    PoolScratch<acc_t> scratch(g);
    PlaneReader<scalar_t> xr(xd, lx, g.plane_in());
    PlaneWriter<scalar_t> ow(od, lout, npl);
    std::vector<PlaneReader<scalar_t>> ur;
    for (int64_t m = 0; m < M; ++m) ur.emplace_back(u[m], lu, npl);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / g.C, c = p % g.C, c_end = std::min(g.C, p1 - b * g.C);
      const scalar_t* xp = xr.get(b, c, c_end);
      const acc_t w_max = weight(w, g, b, cols.max_col), w_avg = weight(w, g, b, cols.avg_col);
      const acc_t w_id = weight(w, g, b, cols.id_col);
      // x-terms
      if (has_max || has_avg) {
        pool_plane<false>(xp, g, has_max, has_avg, scratch);
        for (int64_t i = 0; i < npl; ++i) {
          acc[i] = (has_max ? w_max * scratch.maxv[i] : acc_t(0)) + (has_avg ? w_avg * scratch.avgv[i] : acc_t(0));
        }
      } else {
        std::fill(acc.begin(), acc.end(), acc_t(0));
      }
      if (cols.id_col >= 0) {  // stride 1: the plane of x is the plane of out
        for (int64_t i = 0; i < npl; ++i) acc[i] += w_id * static_cast<acc_t>(xp[i]);
      }
      // normalised u-terms: w * (u - mean) * rstd = a * u + shift
      for (int64_t m = 0; m < M; ++m) {
        const acc_t wm = weight(w, g, b, cols.bn_cols[m]);
        const acc_t a = wm * rstd[m * g.C + c];
        const acc_t shift = -a * mean[m * g.C + c];
        const scalar_t* up = ur[m].get(b, c, c_end);
        for (int64_t i = 0; i < npl; ++i) acc[i] += a * static_cast<acc_t>(up[i]) + shift;
      }
      scalar_t* op = ow.get(b, c, c_end);
      for (int64_t i = 0; i < npl; ++i) op[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t>
void bwd_impl(const at::Tensor& x, at::TensorList us, const at::Tensor& w_t, const EdgeCols& cols, int64_t stride,
              bool batch_stats, const at::Tensor& mean_t, const at::Tensor& rstd_t, const at::Tensor& grad_out,
              const at::Tensor& dx_t, at::TensorList dus, const at::Tensor& grad_w_t) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g = geometry(x, w_t, stride);
  const int64_t M = static_cast<int64_t>(us.size());
  const int64_t P = g.B * g.C, npl = g.plane_out(), nin = g.plane_in();
  std::vector<const scalar_t*> u(M);
  std::vector<scalar_t*> du(M);
  for (int64_t m = 0; m < M; ++m) {
    u[m] = us[m].const_data_ptr<scalar_t>();
    du[m] = dus[m].data_ptr<scalar_t>();
  }
  // dx has x's strides and each du its u's (csrc/mixed_edge.cpp allocates them with empty_like)
  const PlaneLayout lx = plane_layout(x), lu = M ? plane_layout(us[0]) : lx, lg = plane_layout(grad_out);
  const acc_t* mean = mean_t.const_data_ptr<acc_t>();
  const acc_t* rstd = rstd_t.const_data_ptr<acc_t>();
  const acc_t* w = w_t.const_data_ptr<acc_t>();
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* gd = grad_out.const_data_ptr<scalar_t>();
  const bool has_max = cols.max_col >= 0, has_avg = cols.avg_col >= 0, has_id = cols.id_col >= 0;

  // Pass 1, per plane: the plane partials of the reductions -- slot 0: sum G; 1 + m: <xhat_m, G>;
  // M + 1: <maxpool(x), G>; M + 2: <avgpool(x), G>; M + 3: <x, G> -- and dx, which needs nothing global.
  const int64_t S = M + 4;
  std::vector<acc_t> part(static_cast<size_t>(P * S), acc_t(0));
  scalar_t* dxd = dx_t.data_ptr<scalar_t>();
  const bool nhwc = M > 0 ? nhwc_native(g, {lx, lu, lg}) : nhwc_native(g, {lx, lg});
  if (nhwc) bwd_partials_nhwc(xd, lx, u, lu, gd, lg, dxd, w, cols, mean, rstd, g, part.data());
  else at::parallel_for(0, P, g.grain(), [&](int64_t p0, int64_t p1) {
    PoolScratch<acc_t> scratch(g);
    const int64_t Wp = scratch.Wp;
    std::vector<acc_t> dxa(static_cast<size_t>((g.H + 2) * Wp));  // padded: the pools' scatters need no checks
    PlaneReader<scalar_t> gr(gd, lg, npl), xr(xd, lx, nin);
    PlaneWriter<scalar_t> dxw(dxd, lx, nin);
    std::vector<PlaneReader<scalar_t>> ur;
    for (int64_t m = 0; m < M; ++m) ur.emplace_back(u[m], lu, npl);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / g.C, c = p % g.C, c_end = std::min(g.C, p1 - b * g.C);
      const scalar_t* gp = gr.get(b, c, c_end);
      const scalar_t* xp = xr.get(b, c, c_end);
      acc_t* pp = &part[p * S];
      pp[0] = reduce_plane<Red::Sum>(gp, gp, acc_t(0), npl);
      for (int64_t m = 0; m < M; ++m) {
        const scalar_t* up = ur[m].get(b, c, c_end);
        pp[1 + m] = reduce_plane<Red::CDot>(up, gp, mean[m * g.C + c], npl) * rstd[m * g.C + c];
      }
      const acc_t w_max = weight(w, g, b, cols.max_col), w_avg = weight(w, g, b, cols.avg_col);
      const acc_t w_id = weight(w, g, b, cols.id_col);
      std::fill(dxa.begin(), dxa.end(), acc_t(0));
      if (has_id) {
        pp[M + 3] = reduce_plane<Red::Dot>(xp, gp, acc_t(0), npl);
        for (int64_t r = 0; r < g.H; ++r) {
          acc_t* d = &dxa[(r + 1) * Wp + 1];
          const scalar_t* gr = gp + r * g.W;
          for (int64_t cc = 0; cc < g.W; ++cc) d[cc] = w_id * static_cast<acc_t>(gr[cc]);
        }
      }
      if (has_max || has_avg) {
        pool_plane<true>(xp, g, has_max, has_avg, scratch);
        if (has_max) {
          acc_t smax = 0;
          for (int64_t o = 0; o < npl; ++o) {
            const acc_t gv = static_cast<acc_t>(gp[o]);
            smax += scratch.maxv[o] * gv;
            dxa[scratch.arg[o]] += w_max * gv;
          }
          pp[M + 1] = smax;
        }
        if (has_avg) {
          acc_t savg = 0;
          for (int64_t i = 0; i < g.Ho; ++i) {
            const acc_t wr = w_avg * scratch.inv_rows[i];
            for (int64_t j = 0; j < g.Wo; ++j) {
              const int64_t o = i * g.Wo + j;
              const acc_t gv = static_cast<acc_t>(gp[o]);
              savg += scratch.avgv[o] * gv;
              scratch.avgv[o] = wr * scratch.inv_cols[j] * gv;  // A[o] = w_avg * G[o] / count(o)
            }
          }
          pp[M + 2] = savg;
          avg_pool_backward(g, scratch, dxa.data());
        }
      }
      scalar_t* dxp = dxw.get(b, c, c_end);
      for (int64_t r = 0; r < g.H; ++r) {
        const acc_t* d = &dxa[(r + 1) * Wp + 1];
        for (int64_t cc = 0; cc < g.W; ++cc) dxp[r * g.W + cc] = static_cast<scalar_t>(d[cc]);
      }
    }
  });

  // Combine: grad_w, and S1/S2 per (m, c), in a fixed order.
  acc_t* gw = grad_w_t.data_ptr<acc_t>();
  std::fill(gw, gw + g.R * g.K, acc_t(0));
  auto add_col = [&](int64_t col, int64_t slot) {
    if (col < 0) return;
    for (int64_t b = 0; b < g.B; ++b) {
      acc_t s = 0;
      for (int64_t c = 0; c < g.C; ++c) s += part[(b * g.C + c) * S + slot];
      gw[(g.R == 1 ? 0 : b) * g.K + col] += s;
    }
  };
  for (int64_t m = 0; m < M; ++m) add_col(cols.bn_cols[m], 1 + m);
  add_col(cols.max_col, M + 1);
  add_col(cols.avg_col, M + 2);
  add_col(cols.id_col, M + 3);
  std::vector<acc_t> s1(static_cast<size_t>(M * g.C), acc_t(0)), s2(static_cast<size_t>(M * g.C), acc_t(0));
  if (batch_stats) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t c = 0; c < g.C; ++c) {
        acc_t a = 0, q = 0;
        for (int64_t b = 0; b < g.B; ++b) {
          const acc_t wb = weight(w, g, b, cols.bn_cols[m]);
          a += wb * part[(b * g.C + c) * S];
          q += wb * part[(b * g.C + c) * S + 1 + m];
        }
        s1[m * g.C + c] = a;
        s2[m * g.C + c] = q;
      }
    }
  }

  // Pass 2, per plane: dus.
  if (M == 0) return;
  if (nhwc) return dus_nhwc(u, lu, du, gd, lg, w, cols, mean, rstd, s1.data(), s2.data(), batch_stats, g);
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(g.B * npl);
  at::parallel_for(0, P, g.grain(), [&](int64_t p0, int64_t p1) {
    PlaneReader<scalar_t> gr(gd, lg, npl);
    std::vector<PlaneReader<scalar_t>> ur;
    std::vector<PlaneWriter<scalar_t>> dw;
    for (int64_t m = 0; m < M; ++m) {
      ur.emplace_back(u[m], lu, npl);
      dw.emplace_back(du[m], lu, npl);
    }
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / g.C, c = p % g.C, c_end = std::min(g.C, p1 - b * g.C);
      const scalar_t* gp = gr.get(b, c, c_end);
      for (int64_t m = 0; m < M; ++m) {
        const acc_t wb = weight(w, g, b, cols.bn_cols[m]);
        const acc_t r = rstd[m * g.C + c], mu = mean[m * g.C + c];
        const scalar_t* up = ur[m].get(b, c, c_end);
        scalar_t* dp = dw[m].get(b, c, c_end);
        acc_t a, k, k0;
        bn_coefs(r, mu, wb, s1[m * g.C + c], s2[m * g.C + c], inv_n, batch_stats, a, k, k0);
        if (batch_stats) {
          for (int64_t i = 0; i < npl; ++i) {
            dp[i] = static_cast<scalar_t>(a * static_cast<acc_t>(gp[i]) + k * static_cast<acc_t>(up[i]) + k0);
          }
        } else {
          for (int64_t i = 0; i < npl; ++i) dp[i] = static_cast<scalar_t>(a * static_cast<acc_t>(gp[i]));
        }
      }
    }
  });
}

}  // namespace

void mixed_edge_fwd_cpu(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                        int64_t stride, bool batch_stats, at::TensorList running_mean, at::TensorList running_var,
                        double momentum, double eps, const at::Tensor& out, const at::Tensor& mean,
                        const at::Tensor& rstd) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mixed_edge_fwd_cpu", [&] {
    fwd_impl<scalar_t>(x, us, w, cols, stride, batch_stats, running_mean, running_var, momentum, eps, out, mean,
                       rstd);
  });
}

void mixed_edge_bwd_cpu(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                        int64_t stride, bool batch_stats, const at::Tensor& mean, const at::Tensor& rstd,
                        const at::Tensor& grad_out, const at::Tensor& dx, at::TensorList dus,
                        const at::Tensor& grad_w) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mixed_edge_bwd_cpu", [&] {
    bwd_impl<scalar_t>(x, us, w, cols, stride, batch_stats, mean, rstd, grad_out, dx, dus, grad_w);
  });
}

}  // namespace snas_fast
