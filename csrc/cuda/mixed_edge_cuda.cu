// CUDA backend of the deep-fused mixed edge (issue 5): csrc/mixed_edge.h has the contract, docs/kernels.md
// ("mixed_edge on CUDA") the design.
//
//   out = w[max] maxpool3x3(x) + w[avg] avgpool3x3(x) + w[id] x + sum_m w[bn_m] (u_m - mean[m, c]) rstd[m, c]
//
// Everything is organised by planes: plane p = b * C + c is x[b, c] (H x W) and the [Ho, Wo] slices
// out[b, c], us[m][b, c], grad_out[b, c], dus[m][b, c]. Every reduction of the op is per channel (BatchNorm
// statistics, S1/S2) or per row of the weight table (grad_w), so a plane is the natural unit of a partial sum:
// the first launch of each direction writes fixed per-plane partials to a small workspace, the second combines
// the B (or C, or B * C) partials it needs in a fixed order. No atomics anywhere, so every output is
// bit-identical from run to run (the launch configuration depends only on the shapes and the dtype).
//
//   forward    edge_stats_kernel       (batch_stats and M > 0)  plane mean and M2 of every u_m -> stats
//              edge_fwd_kernel         channel mean/rstd from stats (every block of channel c computes the same
//                                      numbers; block b == 0 writes mean/rstd and the running statistics), out
//   backward   edge_bwd_reduce_kernel  plane partials [sum G, <xhat_m, G>, <maxpool x, G>, <avgpool x, G>,
//                                      <x, G>] -> part
//              edge_bwd_kernel         S1/S2 of the channel from part, dus, dx (gather form), and grad_w (the
//                                      block of plane (r, 0) sums the C partials of row r; plane 0's block sums
//                                      all B * C when R = 1)
//
// Launch configuration (all four kernels):
//   grid       min(B * C, 2^31 - 1) blocks on x; a block takes planes blockIdx.x, blockIdx.x + gridDim.x, ...
//   block      64..256 threads (a multiple of 32): the plane's work rounded up to a warp, clamped; a thread takes
//              the plane's elements t, t + blockDim.x, ... Reductions: a fixed shuffle tree per warp, then the
//              warps in order 0, 1, ... (block_sum).
//   shared     the x plane (as acc_t) when a pool is present and it fits in kSmemBudget (else x is read from
//              global memory, L1-cached); the backward's elementwise kernel also keeps G (acc_t) and each
//              window's max-pool winner (1 byte) of the plane, or recomputes them from global memory when the
//              plane is too large.
// Layouts: each tensor's planes are addressed through its PlaneLayout (csrc/mixed_edge.h), so NCHW and
// channels_last tensors are read and written in place. A channels_last plane is strided by C: its loads are not
// coalesced (a block reads one element of each C-strided row). Not measured on a GPU yet.
// The caller (csrc/mixed_edge.cpp) has checked shapes, dtypes, devices and columns, put every input in NCHW or
// channels_last and allocated every output; these functions only allocate their workspace (at::empty, no launch)
// and launch.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../mixed_edge.h"

namespace snas_fast {
namespace {

constexpr int kMaxThreads = 256;                  // threads per block, at most (launch bounds)
constexpr int kMinThreads = 64;                   // threads per block, at least
constexpr int kMaxWarps = kMaxThreads / 32;       // warps per block, at most
constexpr int kMaxM = static_cast<int>(kMaxEdgeBn);  // BatchNorm-ended candidates (pointer slots)
constexpr int64_t kMaxGridX = INT_MAX;            // CUDA limit on gridDim.x; more planes are looped over
constexpr int64_t kSmemBudget = 40 * 1024;        // dynamic shared memory per block, under the 48 KiB default
                                                  // (static shared memory, < 1 KiB, counts against it too)

// The geometry and inputs of one call, passed by value in the kernels' parameter space.
template <typename scalar_t, typename acc_t>
struct EdgeArgs {
  const scalar_t* x;         // [B, C, H, W]
  const scalar_t* u[kMaxM];  // M pointers, each [B, C, Ho, Wo]
  PlaneLayout lx, lu, lo;    // where the planes of x (and dx), of the us (and dus), of out (or grad_out) lie
  const acc_t* w;            // [R, K], R = B (per_row) or 1
  int64_t planes;            // B * C
  int B, C, H, W, Ho, Wo;
  int stride;                // 1 or 2
  int M;                     // 0 <= M <= kMaxM
  int K;                     // columns of w
  bool per_row;              // R > 1: row b of w weighs the elements of example b
  int max_col, avg_col, id_col;  // -1: absent term
  int bn_col[kMaxM];             // column of u_m
};

// M output/running-statistics pointers, by value.
template <typename T>
struct PtrArray {
  T* p[kMaxM];
};

// Dynamic shared memory of the block (16-byte aligned).
template <typename T>
__device__ __forceinline__ T* dyn_smem() {
  extern __shared__ __align__(16) unsigned char edge_smem[];
  return reinterpret_cast<T*>(edge_smem);
}

// ---------------------------------------------------------------------------------------------------------------
// Device helpers.
// ---------------------------------------------------------------------------------------------------------------

// Deterministic sum over the 32 lanes of a warp (fixed shuffle tree); the result is valid in lane 0.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sums v[0..n) (n <= N <= blockDim.x) over the block: each warp by warp_sum, then the warps in order 0, 1, ...
// On return s_out[0..n) holds the sums, visible to every thread. Every thread of the block must call it.
//   s_red  shared [kMaxWarps * N];  s_out  shared [N]
template <typename acc_t, int N>
__device__ __forceinline__ void block_sum(const acc_t (&v)[N], int n, acc_t* s_red, acc_t* s_out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (j < n) {
      const acc_t s = warp_sum(v[j]);
      if (lane == 0) s_red[warp * N + j] = s;
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < n) {
    acc_t s = acc_t(0);
    for (int q = 0; q < nwarps; ++q) s += s_red[q * N + threadIdx.x];
    s_out[threadIdx.x] = s;
  }
  __syncthreads();
}

template <typename acc_t>
__device__ __forceinline__ bool is_nan(acc_t v) {
  return v != v;
}

// The x plane: its shared-memory copy when there is one, else global memory.
template <typename scalar_t, typename acc_t>
struct PlaneIn {
  const acc_t* s;     // shared [H * W] or nullptr
  const scalar_t* g;  // global: element i at g[i * es]
  int64_t es;
  __device__ __forceinline__ acc_t operator[](int i) const {
    return s != nullptr ? s[i] : static_cast<acc_t>(g[i * es]);
  }
};

// The 3x3 window of output (ho, wo), padding 1: top-left tap (hs, ws) and the in-bounds rows [h0, h1), cols
// [w0, w1) (never empty: the centre tap (ho * s, wo * s) is in bounds).
struct Window {
  int hs, ws, h0, h1, w0, w1;
};

__host__ __device__ __forceinline__ Window window_of(int ho, int wo, int s, int H, int W) {
  Window r;
  r.hs = ho * s - 1;
  r.ws = wo * s - 1;
  r.h0 = r.hs < 0 ? 0 : r.hs;
  r.h1 = r.hs + 3 > H ? H : r.hs + 3;
  r.w0 = r.ws < 0 ? 0 : r.ws;
  r.w1 = r.ws + 3 > W ? W : r.ws + 3;
  return r;
}

template <typename acc_t>
struct MaxTap {
  acc_t v;  // the maximum
  int tap;  // its tap, (h - hs) * 3 + (w - ws) in 0..8
};

// Max over the window as at::max_pool2d: row-major scan, a tap replaces the running maximum when it is strictly
// greater or NaN; the initial winner is the first in-bounds tap (value -inf, so an all -inf window picks it).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ MaxTap<acc_t> window_max(const PlaneIn<scalar_t, acc_t>& x, const Window& win, int W) {
  MaxTap<acc_t> r{static_cast<acc_t>(-INFINITY), (win.h0 - win.hs) * 3 + (win.w0 - win.ws)};
  for (int h = win.h0; h < win.h1; ++h) {
    for (int w = win.w0; w < win.w1; ++w) {
      const acc_t v = x[h * W + w];
      if (v > r.v || is_nan(v)) {
        r.v = v;
        r.tap = (h - win.hs) * 3 + (w - win.ws);
      }
    }
  }
  return r;
}

// Number of in-bounds taps: the divisor of avg_pool2d(count_include_pad=False).
__device__ __forceinline__ int window_count(const Window& win) { return (win.h1 - win.h0) * (win.w1 - win.w0); }

// Mean of the in-bounds taps (row-major sum, then one division, as at::avg_pool2d).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t window_avg(const PlaneIn<scalar_t, acc_t>& x, const Window& win, int W) {
  acc_t s = acc_t(0);
  for (int h = win.h0; h < win.h1; ++h) {
    for (int w = win.w0; w < win.w1; ++w) s += x[h * W + w];
  }
  return s / static_cast<acc_t>(window_count(win));
}

// w[row, col] of the term in column col (0 for an absent term, which is never used).
template <typename acc_t>
__device__ __forceinline__ acc_t weight_of(const acc_t* w, int K, int row, int col) {
  return col >= 0 ? w[static_cast<int64_t>(row) * K + col] : acc_t(0);
}

// Dynamic shared memory of edge_bwd_kernel: [x plane (acc_t, H * W) if max] [G (acc_t, Ho * Wo)] [max-pool
// winner tap (uint8, Ho * Wo) if max], each part 16-byte aligned. Offsets in bytes; total = bytes needed.
struct BwdSmemLayout {
  int64_t x_off, g_off, tap_off, total;
};

__host__ __device__ __forceinline__ int64_t align16(int64_t n) { return (n + 15) / 16 * 16; }

__host__ __device__ __forceinline__ BwdSmemLayout bwd_smem_layout(int64_t hw, int64_t p, bool has_max,
                                                                  int64_t acc_size) {
  BwdSmemLayout l;
  l.x_off = 0;
  l.g_off = has_max ? align16(hw * acc_size) : 0;
  l.tap_off = l.g_off + align16(p * acc_size);
  l.total = l.tap_off + (has_max ? align16(p) : 0);
  return l;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward, launch 1 (batch_stats and M > 0): per plane and per u_m, the plane mean and M2 (sum of squared
// deviations from the plane mean), in two passes over the plane (the second mostly from L1/L2).
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int MAXM>
__global__ void __launch_bounds__(kMaxThreads)
edge_stats_kernel(EdgeArgs<scalar_t, acc_t> a,
                  acc_t* __restrict__ stats) {  // [B * C, MAXM, 2] (plane mean, plane M2) of each u_m; m < M used
  __shared__ acc_t s_red[kMaxWarps * MAXM];
  __shared__ acc_t s_sum[MAXM];
  __shared__ acc_t s_m2[MAXM];
  const int t = threadIdx.x, nt = blockDim.x;
  const int P = a.Ho * a.Wo;
  const acc_t Pa = static_cast<acc_t>(P);

  for (int64_t plane = blockIdx.x; plane < a.planes; plane += gridDim.x) {
    const int64_t ob = a.lu.at(plane / a.C, plane % a.C), es = a.lu.es;
    acc_t v[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) v[m] = acc_t(0);
    for (int i = t; i < P; i += nt) {
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.M) v[m] += static_cast<acc_t>(a.u[m][ob + i * es]);
      }
    }
    block_sum(v, a.M, s_red, s_sum);

    acc_t mu[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      mu[m] = m < a.M ? s_sum[m] / Pa : acc_t(0);
      v[m] = acc_t(0);
    }
    for (int i = t; i < P; i += nt) {
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.M) {
          const acc_t d = static_cast<acc_t>(a.u[m][ob + i * es]) - mu[m];
          v[m] += d * d;
        }
      }
    }
    block_sum(v, a.M, s_red, s_m2);

    if (t < a.M) {
      stats[(plane * MAXM + t) * 2] = s_sum[t] / Pa;  // the same division as mu[t] above
      stats[(plane * MAXM + t) * 2 + 1] = s_m2[t];
    }
    __syncthreads();  // s_sum / s_m2 are rewritten for the next plane
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward, launch 2: one block per plane (b, c).
//
// batch_stats: the channel statistics of u_m from the B plane partials (mean_b, M2_b), each of count P = Ho * Wo
// (Chan's parallel formula for equal counts): mean = (1/B) sum_b mean_b, M2 = sum_b M2_b + P sum_b (mean_b -
// mean)^2, var = M2 / n (biased, n = B * P), rstd = 1 / sqrt(var + eps). Warp q combines m = q, q + warps, ...:
// lane l takes b = l, l + 32, ... in order, then warp_sum. Every block of channel c computes the same bits; the
// block with b == 0 writes mean/rstd and updates the running statistics (BatchNorm2d's update, unbiased
// variance M2 / (n - 1)). rstd and the running updates are computed in double and rounded once.
// Otherwise mean/rstd are inputs.
// Then out[b, c] = w[max] maxpool + w[avg] avgpool + w[id] x + sum_m w[bn_m] (u_m - mean) rstd, in acc_t.
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int MAXM>
__global__ void __launch_bounds__(kMaxThreads)
edge_fwd_kernel(EdgeArgs<scalar_t, acc_t> a,
                const acc_t* __restrict__ stats,  // [B * C, MAXM, 2] from edge_stats_kernel, or nullptr (eval)
                acc_t* __restrict__ mean,         // [M, C]: written when stats != nullptr, else read
                acc_t* __restrict__ rstd,         // [M, C]: likewise
                PtrArray<acc_t> run_mean,         // M pointers [C], updated when update
                PtrArray<acc_t> run_var,          // M pointers [C], updated when update
                bool update, double momentum, double eps,
                bool x_in_smem,                   // the x plane is staged in dynamic shared memory [H * W] acc_t
                scalar_t* __restrict__ out) {     // [B, C, Ho, Wo]
  __shared__ acc_t s_mean[MAXM];
  __shared__ acc_t s_rstd[MAXM];
  acc_t* s_x = dyn_smem<acc_t>();
  const int t = threadIdx.x, nt = blockDim.x;
  const int lane = t & 31, warp = t >> 5, nwarps = nt >> 5;
  const int HW = a.H * a.W, P = a.Ho * a.Wo;
  const bool pools = a.max_col >= 0 || a.avg_col >= 0;
  const bool staged = pools && x_in_smem;

  for (int64_t plane = blockIdx.x; plane < a.planes; plane += gridDim.x) {
    const int b = static_cast<int>(plane / a.C), c = static_cast<int>(plane % a.C);
    const int row = a.per_row ? b : 0;

    // ---- channel statistics ----
    if (stats != nullptr) {
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {  // warp q takes m = q, q + warps, ... (m compile-time: no local copies)
        if (m >= a.M || m % nwarps != warp) continue;
        acc_t s = acc_t(0);
        for (int bb = lane; bb < a.B; bb += 32) s += stats[((static_cast<int64_t>(bb) * a.C + c) * MAXM + m) * 2];
        s = warp_sum(s);
        const acc_t mu = __shfl_sync(0xffffffffu, s, 0) / static_cast<acc_t>(a.B);
        acc_t m2 = acc_t(0), dev = acc_t(0);
        for (int bb = lane; bb < a.B; bb += 32) {
          const acc_t* ps = stats + ((static_cast<int64_t>(bb) * a.C + c) * MAXM + m) * 2;
          const acc_t d = ps[0] - mu;
          dev += d * d;
          m2 += ps[1];
        }
        m2 = warp_sum(m2);
        dev = warp_sum(dev);
        if (lane == 0) {
          const int64_t n = static_cast<int64_t>(a.B) * P;
          const acc_t M2 = m2 + static_cast<acc_t>(P) * dev;
          const acc_t var = M2 / static_cast<acc_t>(n);
          const acc_t r = static_cast<acc_t>(1.0 / ::sqrt(static_cast<double>(var) + eps));
          s_mean[m] = mu;
          s_rstd[m] = r;
          if (b == 0) {
            mean[static_cast<int64_t>(m) * a.C + c] = mu;
            rstd[static_cast<int64_t>(m) * a.C + c] = r;
            if (update) {
              acc_t* rm = run_mean.p[m] + c;
              acc_t* rv = run_var.p[m] + c;
              const double unbiased = static_cast<double>(M2) / static_cast<double>(n - 1);  // n > 1 (checked)
              *rm = static_cast<acc_t>((1.0 - momentum) * static_cast<double>(*rm) + momentum * static_cast<double>(mu));
              *rv = static_cast<acc_t>((1.0 - momentum) * static_cast<double>(*rv) + momentum * unbiased);
            }
          }
        }
      }
    } else if (t < a.M) {
      s_mean[t] = mean[static_cast<int64_t>(t) * a.C + c];
      s_rstd[t] = rstd[static_cast<int64_t>(t) * a.C + c];
    }

    // ---- stage the x plane ----
    const scalar_t* xg = a.x + a.lx.at(b, c);
    if (staged) {
      for (int i = t; i < HW; i += nt) s_x[i] = static_cast<acc_t>(xg[i * a.lx.es]);
    }
    __syncthreads();

    const PlaneIn<scalar_t, acc_t> X{staged ? s_x : nullptr, xg, a.lx.es};
    const acc_t w_max = weight_of(a.w, a.K, row, a.max_col);
    const acc_t w_avg = weight_of(a.w, a.K, row, a.avg_col);
    const acc_t w_id = weight_of(a.w, a.K, row, a.id_col);
    acc_t w_bn[MAXM], mu[MAXM], rs[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      const bool live = m < a.M;
      w_bn[m] = live ? weight_of(a.w, a.K, row, a.bn_col[m]) : acc_t(0);
      mu[m] = live ? s_mean[m] : acc_t(0);
      rs[m] = live ? s_rstd[m] : acc_t(0);
    }

    // ---- out ----
    const int64_t ub = a.lu.at(b, c), ob = a.lo.at(b, c);
    for (int i = t; i < P; i += nt) {
      acc_t acc = acc_t(0);
      if (pools) {
        const int ho = i / a.Wo, wo = i - ho * a.Wo;
        const Window win = window_of(ho, wo, a.stride, a.H, a.W);
        if (a.max_col >= 0) acc += w_max * window_max(X, win, a.W).v;
        if (a.avg_col >= 0) acc += w_avg * window_avg(X, win, a.W);
      }
      if (a.id_col >= 0) acc += w_id * X[i];  // stride 1: output i is input i
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.M) acc += w_bn[m] * ((static_cast<acc_t>(a.u[m][ub + i * a.lu.es]) - mu[m]) * rs[m]);
      }
      out[ob + i * a.lo.es] = static_cast<scalar_t>(acc);
    }
    __syncthreads();  // shared state is rewritten for the next plane
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward (vector-Jacobian product). G = grad_out, n = B * Ho * Wo, w_b = w[b or 0, col], per channel c:
//
//   out = sum_t w_b[t] Y_t,  Y_max = maxpool(x), Y_avg = avgpool(x), Y_id = x, Y_m = xhat_m = (u_m - mean) rstd
//   dL/dY_t  = w_b[t] G
//   dL/dx    = w_b[max] maxpool^T(G) + w_b[avg] avgpool^T(G) + w_b[id] G
//              maxpool^T: each output's G goes to its window's winner; avgpool^T: G / count to every in-bounds tap
//   dL/dw[r, t] = <Y_t, G> over the elements of row r (every element when R = 1)
//   BatchNorm (batch_stats), dy = w_b[bn_m] G:  dL/du = rstd (dy - mean_c(dy) - xhat mean_c(dy xhat))
//              = rstd (w_b G - S1 / n - xhat S2 / n),  S1 = sum_{b,h,w} w_b G,  S2 = sum_{b,h,w} w_b G xhat
//              (mean and var depend on u_m; this is the usual BatchNorm backward with dy in place of G)
//   eval (statistics are constants): dL/du = rstd w_b G
//
// Launch 1 writes the per-plane partials part[p] = [sum G, <xhat_0, G> .. <xhat_{MAXM-1}, G>, <maxpool x, G>,
// <avgpool x, G>, <x, G>] (NV = MAXM + 4 acc_t, unused entries 0). Launch 2 needs, for its plane (b, c):
// S1[m] = sum_b' w_b'[bn_m] P[b', c] and S2[m] = sum_b' w_b'[bn_m] Q_m[b', c] (warp per m, lanes over b' in order,
// warp_sum), and grad_w row r = sum of the row's partials (a fixed strided sum per thread, then block_sum).
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int MAXM>
__global__ void __launch_bounds__(kMaxThreads)
edge_bwd_reduce_kernel(EdgeArgs<scalar_t, acc_t> a,
                       const acc_t* __restrict__ mean,     // [M, C]
                       const acc_t* __restrict__ rstd,     // [M, C]
                       const scalar_t* __restrict__ gout,  // [B, C, Ho, Wo]
                       bool x_in_smem,                     // the x plane is staged in shared memory [H * W] acc_t
                       acc_t* __restrict__ part) {         // [B * C, MAXM + 4] plane partials (output)
  constexpr int NV = MAXM + 4;
  __shared__ acc_t s_red[kMaxWarps * NV];
  __shared__ acc_t s_tot[NV];
  acc_t* s_x = dyn_smem<acc_t>();
  const int t = threadIdx.x, nt = blockDim.x;
  const int HW = a.H * a.W, P = a.Ho * a.Wo;
  const bool pools = a.max_col >= 0 || a.avg_col >= 0;
  const bool staged = pools && x_in_smem;

  for (int64_t plane = blockIdx.x; plane < a.planes; plane += gridDim.x) {
    const int b = static_cast<int>(plane / a.C), c = static_cast<int>(plane % a.C);
    const scalar_t* xg = a.x + a.lx.at(b, c);
    if (staged) {
      for (int i = t; i < HW; i += nt) s_x[i] = static_cast<acc_t>(xg[i * a.lx.es]);
    }
    __syncthreads();
    const PlaneIn<scalar_t, acc_t> X{staged ? s_x : nullptr, xg, a.lx.es};
    acc_t mu[MAXM], rs[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      mu[m] = m < a.M ? mean[static_cast<int64_t>(m) * a.C + c] : acc_t(0);
      rs[m] = m < a.M ? rstd[static_cast<int64_t>(m) * a.C + c] : acc_t(0);
    }

    acc_t v[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j) v[j] = acc_t(0);
    const int64_t ub = a.lu.at(b, c), gb = a.lo.at(b, c);
    for (int i = t; i < P; i += nt) {
      const acc_t g = static_cast<acc_t>(gout[gb + i * a.lo.es]);
      v[0] += g;
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.M) v[1 + m] += g * ((static_cast<acc_t>(a.u[m][ub + i * a.lu.es]) - mu[m]) * rs[m]);
      }
      if (pools) {
        const int ho = i / a.Wo, wo = i - ho * a.Wo;
        const Window win = window_of(ho, wo, a.stride, a.H, a.W);
        if (a.max_col >= 0) v[MAXM + 1] += window_max(X, win, a.W).v * g;
        if (a.avg_col >= 0) v[MAXM + 2] += window_avg(X, win, a.W) * g;
      }
      if (a.id_col >= 0) v[MAXM + 3] += X[i] * g;  // stride 1: output i is input i
    }
    block_sum(v, NV, s_red, s_tot);
    if (t < NV) part[plane * NV + t] = s_tot[t];
    // block_sum ended with a barrier: every thread is done with s_x, and s_tot is only rewritten after the next
    // plane's first barrier (which every reader of s_tot reaches after reading it).
  }
}

template <typename scalar_t, typename acc_t, int MAXM>
__global__ void __launch_bounds__(kMaxThreads)
edge_bwd_kernel(EdgeArgs<scalar_t, acc_t> a,
                const acc_t* __restrict__ mean,     // [M, C]
                const acc_t* __restrict__ rstd,     // [M, C]
                bool batch_stats,
                const scalar_t* __restrict__ gout,  // [B, C, Ho, Wo]
                const acc_t* __restrict__ part,     // [B * C, MAXM + 4] from edge_bwd_reduce_kernel
                bool staged,                        // pools present and bwd_smem_layout(...) in dynamic shared memory
                PtrArray<scalar_t> dus,             // M pointers [B, C, Ho, Wo] (outputs)
                scalar_t* __restrict__ dx,          // [B, C, H, W] (output)
                acc_t* __restrict__ grad_w) {       // [R, K] (output)
  constexpr int NV = MAXM + 4;
  __shared__ acc_t s_red[kMaxWarps * NV];
  __shared__ acc_t s_tot[NV];
  __shared__ acc_t s_c1[MAXM];  // S1 / n
  __shared__ acc_t s_c2[MAXM];  // S2 / n
  const int t = threadIdx.x, nt = blockDim.x;
  const int lane = t & 31, warp = t >> 5, nwarps = nt >> 5;
  const int HW = a.H * a.W, P = a.Ho * a.Wo;
  const bool has_max = a.max_col >= 0, has_avg = a.avg_col >= 0, has_id = a.id_col >= 0;
  const bool pools = has_max || has_avg;
  const BwdSmemLayout lay = bwd_smem_layout(HW, P, has_max, sizeof(acc_t));
  unsigned char* smem = dyn_smem<unsigned char>();
  acc_t* s_x = reinterpret_cast<acc_t*>(smem + lay.x_off);
  acc_t* s_g = reinterpret_cast<acc_t*>(smem + lay.g_off);
  uint8_t* s_tap = reinterpret_cast<uint8_t*>(smem + lay.tap_off);
  const acc_t n = static_cast<acc_t>(static_cast<int64_t>(a.B) * P);

  for (int64_t plane = blockIdx.x; plane < a.planes; plane += gridDim.x) {
    const int b = static_cast<int>(plane / a.C), c = static_cast<int>(plane % a.C);
    const int row = a.per_row ? b : 0;
    const int64_t ub = a.lu.at(b, c), xb = a.lx.at(b, c), ues = a.lu.es, xes = a.lx.es, ges = a.lo.es;
    const scalar_t* xg = a.x + xb;
    const scalar_t* gp = gout + a.lo.at(b, c);

    // ---- S1 / n, S2 / n of channel c (batch_stats) ----
    if (batch_stats) {
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {  // warp q takes m = q, q + warps, ... (m compile-time: no local copies)
        if (m >= a.M || m % nwarps != warp) continue;
        acc_t s1 = acc_t(0), s2 = acc_t(0);
        for (int bb = lane; bb < a.B; bb += 32) {
          const acc_t wb = weight_of(a.w, a.K, a.per_row ? bb : 0, a.bn_col[m]);
          const acc_t* pp = part + (static_cast<int64_t>(bb) * a.C + c) * NV;
          s1 += wb * pp[0];
          s2 += wb * pp[1 + m];
        }
        s1 = warp_sum(s1);
        s2 = warp_sum(s2);
        if (lane == 0) {
          s_c1[m] = s1 / n;
          s_c2[m] = s2 / n;
        }
      }
    }
    // ---- stage the x plane (max pool only: the argmax needs x) ----
    if (staged && has_max) {
      for (int i = t; i < HW; i += nt) s_x[i] = static_cast<acc_t>(xg[i * xes]);
    }
    __syncthreads();

    const acc_t w_max = weight_of(a.w, a.K, row, a.max_col);
    const acc_t w_avg = weight_of(a.w, a.K, row, a.avg_col);
    const acc_t w_id = weight_of(a.w, a.K, row, a.id_col);
    acc_t w_bn[MAXM], mu[MAXM], rs[MAXM], c1[MAXM], c2[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      const bool live = m < a.M;
      w_bn[m] = live ? weight_of(a.w, a.K, row, a.bn_col[m]) : acc_t(0);
      mu[m] = live ? mean[static_cast<int64_t>(m) * a.C + c] : acc_t(0);
      rs[m] = live ? rstd[static_cast<int64_t>(m) * a.C + c] : acc_t(0);
      c1[m] = live && batch_stats ? s_c1[m] : acc_t(0);
      c2[m] = live && batch_stats ? s_c2[m] : acc_t(0);
    }

    // ---- dus, and G / winner taps of the plane into shared memory ----
    const PlaneIn<scalar_t, acc_t> X{staged && has_max ? s_x : nullptr, xg, xes};
    for (int i = t; i < P; i += nt) {
      const acc_t g = static_cast<acc_t>(gp[i * ges]);
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.M) {
          const acc_t wg = w_bn[m] * g;
          acc_t d;
          if (batch_stats) {
            const acc_t xhat = (static_cast<acc_t>(a.u[m][ub + i * ues]) - mu[m]) * rs[m];
            d = rs[m] * (wg - c1[m] - xhat * c2[m]);
          } else {
            d = rs[m] * wg;
          }
          dus.p[m][ub + i * ues] = static_cast<scalar_t>(d);  // dus have the us' strides
        }
      }
      if (staged) {
        s_g[i] = g;
        if (has_max) {
          const int ho = i / a.Wo, wo = i - ho * a.Wo;
          s_tap[i] = static_cast<uint8_t>(window_max(X, window_of(ho, wo, a.stride, a.H, a.W), a.W).tap);
        }
      }
    }
    __syncthreads();

    // ---- dx in gather form: input (h, w) lies in the windows of outputs ho in [ceil((h - 1) / s),
    // floor((h + 1) / s)] (clipped to [0, Ho)), likewise wo; summed in row-major order of (ho, wo) ----
    for (int q = t; q < HW; q += nt) {
      acc_t d = acc_t(0);
      if (pools) {
        const int h = q / a.W, wi = q - h * a.W;
        const int s = a.stride;
        const int ho_lo = h == 0 ? 0 : (h - 1 + s - 1) / s;
        const int ho_hi = (h + 1) / s < a.Ho - 1 ? (h + 1) / s : a.Ho - 1;
        const int wo_lo = wi == 0 ? 0 : (wi - 1 + s - 1) / s;
        const int wo_hi = (wi + 1) / s < a.Wo - 1 ? (wi + 1) / s : a.Wo - 1;
        acc_t smax = acc_t(0), savg = acc_t(0);
        for (int ho = ho_lo; ho <= ho_hi; ++ho) {
          for (int wo = wo_lo; wo <= wo_hi; ++wo) {
            const int o = ho * a.Wo + wo;
            const Window win = window_of(ho, wo, s, a.H, a.W);
            const acc_t g = staged ? s_g[o] : static_cast<acc_t>(gp[o * ges]);
            if (has_max) {
              const int tap = staged ? static_cast<int>(s_tap[o]) : window_max(X, win, a.W).tap;
              if (tap == (h - win.hs) * 3 + (wi - win.ws)) smax += g;
            }
            if (has_avg) savg += g / static_cast<acc_t>(window_count(win));
          }
        }
        if (has_max) d += w_max * smax;
        if (has_avg) d += w_avg * savg;
      }
      if (has_id) d += w_id * (staged ? s_g[q] : static_cast<acc_t>(gp[q * ges]));  // stride 1: input q is output q
      dx[xb + q * xes] = static_cast<scalar_t>(d);  // dx has x's strides
    }

    // ---- grad_w: row r is summed by the block of plane (r, 0) (plane 0 sums everything when R == 1) ----
    const bool owner = a.per_row ? c == 0 : plane == 0;
    if (owner) {
      const int64_t first = a.per_row ? plane : 0;
      const int64_t count = a.per_row ? a.C : a.planes;
      acc_t v[NV];
#pragma unroll
      for (int j = 0; j < NV; ++j) v[j] = acc_t(0);
      for (int64_t k = t; k < count; k += nt) {
        const acc_t* pp = part + (first + k) * NV;
#pragma unroll
        for (int j = 0; j < NV; ++j) v[j] += pp[j];
      }
      block_sum(v, NV, s_red, s_tot);
      for (int k = t; k < a.K; k += nt) {
        acc_t g = acc_t(0);  // zero ops
        if (k == a.max_col) g = s_tot[MAXM + 1];
        if (k == a.avg_col) g = s_tot[MAXM + 2];
        if (k == a.id_col) g = s_tot[MAXM + 3];
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
          if (m < a.M && k == a.bn_col[m]) g = s_tot[1 + m];
        }
        grad_w[static_cast<int64_t>(row) * a.K + k] = g;
      }
    }
    __syncthreads();  // shared state is rewritten for the next plane
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, MAXM>) with the smallest bucket MAXM in {1, 2, 4, 8} >= M.
template <typename F>
void dispatch_m(int64_t M, F&& f) {
  if (M <= 1) {
    f(std::integral_constant<int, 1>{});
  } else if (M <= 2) {
    f(std::integral_constant<int, 2>{});
  } else if (M <= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, kMaxM>{});
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads per block for `work` items per plane: whole warps, clamped to [kMinThreads, kMaxThreads].
int threads_for(int64_t work) {
  return static_cast<int>(std::min<int64_t>(kMaxThreads, std::max<int64_t>(kMinThreads, ceil_div(work, 32) * 32)));
}

dim3 grid_for(int64_t planes) { return dim3(static_cast<unsigned>(std::min(planes, kMaxGridX))); }

template <typename scalar_t, typename acc_t>
EdgeArgs<scalar_t, acc_t> make_args(const at::Tensor& x, at::TensorList us, const at::Tensor& w,
                                    const EdgeCols& cols, int64_t stride, const char* fn) {
  const int64_t M = static_cast<int64_t>(us.size());
  TORCH_CHECK(M <= kMaxEdgeBn, fn, ": at most ", kMaxEdgeBn, " BatchNorm-ended candidates, got ", M);
  TORCH_CHECK(static_cast<int64_t>(cols.bn_cols.size()) == M, fn, ": expected ", M, " BatchNorm columns, got ",
              cols.bn_cols.size());
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": expected stride 1 or 2, got ", stride);
  TORCH_CHECK(stride == 1 || cols.id_col < 0, fn, ": the identity term needs stride 1");
  TORCH_CHECK(x.dim() == 4, fn, ": expected x [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), fn, ": expected a contiguous weight table [R, K], got ", w.sizes());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(B <= INT_MAX && C <= INT_MAX && H * W <= INT_MAX, fn,
              ": expected B, C and H * W below 2^31, got x of shape ", x.sizes());
  TORCH_CHECK(w.size(0) == 1 || w.size(0) == B, fn, ": expected a weight table of 1 or B = ", B, " rows, got ",
              w.sizes());
  TORCH_CHECK(w.size(1) <= INT_MAX, fn, ": too many weight columns: ", w.size(1));
  EdgeArgs<scalar_t, acc_t> a{};
  a.x = x.data_ptr<scalar_t>();
  a.lx = plane_layout(x);
  a.lu = M > 0 ? plane_layout(us[0]) : a.lx;
  for (int64_t m = 0; m < M; ++m) {
    TORCH_CHECK(us[m].strides() == us[0].strides(), fn, ": us[", m, "] must have the strides of us[0]");
    a.u[m] = us[m].data_ptr<scalar_t>();
    a.bn_col[m] = static_cast<int>(cols.bn_cols[m]);
  }
  a.w = w.data_ptr<acc_t>();
  a.planes = B * C;
  a.B = static_cast<int>(B);
  a.C = static_cast<int>(C);
  a.H = static_cast<int>(H);
  a.W = static_cast<int>(W);
  a.Ho = static_cast<int>((H - 1) / stride + 1);
  a.Wo = static_cast<int>((W - 1) / stride + 1);
  a.stride = static_cast<int>(stride);
  a.M = static_cast<int>(M);
  a.K = static_cast<int>(w.size(1));
  a.per_row = w.size(0) > 1;
  a.max_col = static_cast<int>(cols.max_col);
  a.avg_col = static_cast<int>(cols.avg_col);
  a.id_col = static_cast<int>(cols.id_col);
  return a;
}

}  // namespace

void mixed_edge_fwd_cuda(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                         int64_t stride, bool batch_stats, at::TensorList running_mean, at::TensorList running_var,
                         double momentum, double eps, const at::Tensor& out, const at::Tensor& mean,
                         const at::Tensor& rstd) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t M = static_cast<int64_t>(us.size());
  const bool update = batch_stats && !running_mean.empty();
  TORCH_CHECK(!update || (static_cast<int64_t>(running_mean.size()) == M &&
                          static_cast<int64_t>(running_var.size()) == M),
              "mixed_edge_fwd_cuda: expected ", M, " running_mean and running_var tensors, got ",
              running_mean.size(), " and ", running_var.size());
  if (out.numel() == 0) return;  // the caller handles empty outputs; nothing to launch

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mixed_edge_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto a = make_args<scalar_t, acc_t>(x, us, w, cols, stride, "mixed_edge_fwd_cuda");
    a.lo = plane_layout(out);
    PtrArray<acc_t> rm{}, rv{};
    if (update) {
      for (int64_t m = 0; m < M; ++m) {
        rm.p[m] = running_mean[m].data_ptr<acc_t>();
        rv.p[m] = running_var[m].data_ptr<acc_t>();
      }
    }
    acc_t* mp = M > 0 ? mean.data_ptr<acc_t>() : nullptr;
    acc_t* rp = M > 0 ? rstd.data_ptr<acc_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t HW = static_cast<int64_t>(a.H) * a.W, P = static_cast<int64_t>(a.Ho) * a.Wo;
    const bool pools = a.max_col >= 0 || a.avg_col >= 0;
    const int64_t x_bytes = HW * static_cast<int64_t>(sizeof(acc_t));
    const bool x_in_smem = pools && x_bytes <= kSmemBudget;
    const size_t smem = x_in_smem ? static_cast<size_t>(x_bytes) : 0;
    const dim3 grid = grid_for(a.planes);
    const int threads = threads_for(pools ? std::max(P, HW) : P);

    dispatch_m(M, [&](auto tag) {
      constexpr int MAXM = decltype(tag)::value;
      at::Tensor stats;
      const acc_t* sp = nullptr;
      if (batch_stats && M > 0) {
        stats = at::empty({a.planes * MAXM * 2}, w.options());  // caching allocator, current stream: no launch
        edge_stats_kernel<scalar_t, acc_t, MAXM><<<grid, threads_for(P), 0, stream>>>(a, stats.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        sp = stats.data_ptr<acc_t>();
      }
      edge_fwd_kernel<scalar_t, acc_t, MAXM><<<grid, threads, smem, stream>>>(
          a, sp, mp, rp, rm, rv, update, momentum, eps, x_in_smem, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void mixed_edge_bwd_cuda(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                         int64_t stride, bool batch_stats, const at::Tensor& mean, const at::Tensor& rstd,
                         const at::Tensor& grad_out, const at::Tensor& dx, at::TensorList dus,
                         const at::Tensor& grad_w) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t M = static_cast<int64_t>(us.size());
  TORCH_CHECK(static_cast<int64_t>(dus.size()) == M, "mixed_edge_bwd_cuda: expected ", M, " dus tensors, got ",
              dus.size());
  TORCH_CHECK(dx.strides() == x.strides() && grad_w.is_contiguous(),
              "mixed_edge_bwd_cuda: dx must have the strides of x, grad_w must be contiguous");
  if (grad_out.numel() == 0) return;  // the caller handles empty gradients; nothing to launch

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mixed_edge_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto a = make_args<scalar_t, acc_t>(x, us, w, cols, stride, "mixed_edge_bwd_cuda");
    a.lo = plane_layout(grad_out);
    PtrArray<scalar_t> dp{};
    for (int64_t m = 0; m < M; ++m) {
      TORCH_CHECK(dus[m].strides() == us[m].strides(), "mixed_edge_bwd_cuda: dus[", m, "] must have the strides of us[", m, "]");
      dp.p[m] = dus[m].data_ptr<scalar_t>();
    }
    const acc_t* mp = M > 0 ? mean.data_ptr<acc_t>() : nullptr;
    const acc_t* rp = M > 0 ? rstd.data_ptr<acc_t>() : nullptr;
    const scalar_t* gp = grad_out.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    acc_t* gwp = grad_w.data_ptr<acc_t>();
    const int64_t HW = static_cast<int64_t>(a.H) * a.W, P = static_cast<int64_t>(a.Ho) * a.Wo;
    const bool has_max = a.max_col >= 0;
    const bool pools = has_max || a.avg_col >= 0;
    const int64_t x_bytes = HW * static_cast<int64_t>(sizeof(acc_t));
    const bool x_in_smem = pools && x_bytes <= kSmemBudget;  // launch 1
    const BwdSmemLayout lay = bwd_smem_layout(HW, P, has_max, sizeof(acc_t));
    const bool staged = pools && lay.total <= kSmemBudget;  // launch 2
    const dim3 grid = grid_for(a.planes);

    dispatch_m(M, [&](auto tag) {
      constexpr int MAXM = decltype(tag)::value;
      const at::Tensor part = at::empty({a.planes * (MAXM + 4)}, w.options());  // no launch
      acc_t* pp = part.data_ptr<acc_t>();
      edge_bwd_reduce_kernel<scalar_t, acc_t, MAXM>
          <<<grid, threads_for(pools ? std::max(P, HW) : P), x_in_smem ? static_cast<size_t>(x_bytes) : 0,
             stream>>>(a, mp, rp, gp, x_in_smem, pp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      edge_bwd_kernel<scalar_t, acc_t, MAXM>
          <<<grid, threads_for(HW), staged ? static_cast<size_t>(lay.total) : 0, stream>>>(
              a, mp, rp, batch_stats, gp, pp, staged, dp, dxp, gwp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace snas_fast
