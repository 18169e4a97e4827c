// CUDA backend of the fused mixed op: csrc/mixed_op.h has the contract, docs/snas.md ("The mixed op") the maths.
//
//   forward   out[b*M + m] = sum_j w[b, live[j]] * ys[j][b*M + m]
//   backward  dys[j] = w_used[b, live[j]] * G,   dw[b, k] = <ys[k], G>_row b (+ grad_z),   grad_w = dw or its VJP
//
// One kernel launch each, on the current stream. The candidates are read in place through a pointer array passed
// by value as a kernel argument (no stacking, no copies). The caller (csrc/mixed_op.cpp) has already checked the
// shapes, dtypes, devices and contiguity, and allocated every output; these functions only launch.
//
// Launch configuration (both kernels):
//   block      kThreads = 256 threads (8 warps)
//   grid       (chunks, min(R, 65535)); block (cx, cy) handles chunk cx of rows cy, cy + gridDim.y, ... (so any
//              R works; R > 65535 rows are folded onto gridDim.y), and inside a row a grid-stride loop over its
//              elements with stride chunks * kThreads.
//   chunks     min(ceil(units / kThreads), max(1, kBlocksPerSM * SMs / gridDim.y)), units = elements of one row
//              in vectors: a few blocks per SM in total, never more blocks than there is work, and at most
//              kBlocksPerSM * SMs chunks per row (which bounds the backward workspace and its final reduction).
//   vectors    16-byte loads/stores (VEC = 4 f32, 2 f64, 8 f16/bf16) when every pointer is 16-byte aligned and
//              every row starts on a vector boundary (R == 1 or M % VEC == 0); a scalar tail covers M % VEC
//              when R == 1. Otherwise the same kernel with VEC = 1.
//   buckets    the number of live candidates K' is rounded up to a compile-time bucket MAXC in {1,2,4,8,16,32} so
//              the per-candidate loops unroll and the backward dot accumulators stay in registers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "../mixed_op.h"
#include "../philox.h"

namespace snas_fast {
namespace {

constexpr int kThreads = 256;                 // threads per block
constexpr int kWarps = kThreads / 32;         // warps per block
constexpr int kMaxCands = 32;                 // max live candidates K' and max columns K (one warp covers a row)
constexpr int64_t kMaxGridY = 65535;          // CUDA limit on gridDim.y; more rows are folded (looped over)
constexpr int kBlocksPerSM = 4;               // blocks in flight per SM that the grid aims at

// Candidate pointers, passed by value in the kernel's parameter space (K' <= kMaxCands entries used).
template <typename T>
struct PtrArray {
  T* p[kMaxCands];
};
// live[j] = column of candidate j in [0, K).
struct LiveArray {
  int k[kMaxCands];
};

// N scalars loaded/stored as one (16-byte when N * sizeof(T) == 16) access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }

// Index of the largest of x[0..K) with ties to the smallest index (strict > keeps the first maximum).
template <typename acc_t>
__device__ __forceinline__ int argmax_first(const acc_t* x, int K) {
  int best = 0;
  acc_t bv = x[0];
  for (int k = 1; k < K; ++k) {
    if (x[k] > bv) {
      bv = x[k];
      best = k;
    }
  }
  return best;
}

// Candidate j's hard weight: one_hot(argmax x)[k], or NaN when a value of x is NaN (a NaN sample: NaN or all -inf
// logits), so that the output is NaN as the reference's is.
template <typename acc_t>
__device__ __forceinline__ acc_t hard_weight(const acc_t* x, int K, int k) {
  for (int i = 0; i < K; ++i) {
    if (isnan(x[i])) return x[i];
  }
  return k == argmax_first(x, K) ? acc_t(1) : acc_t(0);
}

// Deterministic sum over the 32 lanes of a warp (fixed shuffle tree); the result is valid in lane 0.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward.
//
// Per row r, warp 0 recomputes the K weights into shared memory (K <= 32, so one lane per column):
//   softmax == false:  w = logits[r]  (one_hot(argmax logits[r]) if hard, as in the CPU backend)
//   softmax == true:   x_k = (logits[r, k] + g_k) / tau, g_k = noise[r, k] or gumbel_noise(seed, offset, r*K + k);
//                      z = exp(x - max x) / sum_k exp(x_k - max x)   (max and sum taken serially by lane 0, k = 0..K-1)
//                      w = hard ? one_hot(argmax z) (ties -> smallest k) : z
//   blockIdx.x == 0 of the row writes z to z_out[r] (softmax only); then every thread streams its elements.
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int VEC, int MAXC>
__global__ void __launch_bounds__(kThreads)
mixed_op_fwd_kernel(PtrArray<const scalar_t> ys,  // K' pointers, each [N] = [R, M] contiguous
                    LiveArray live,               // [K'] column of each candidate
                    int nc,                       // K' (1 <= nc <= MAXC)
                    int K,                        // columns of logits (1 <= K <= kMaxCands)
                    const acc_t* __restrict__ logits,  // [R, K]
                    const acc_t* __restrict__ noise,   // [R, K], or nullptr -> Philox Gumbel noise
                    bool softmax, acc_t tau, bool hard, uint64_t seed, uint64_t offset,
                    scalar_t* __restrict__ out,        // [N] = [R, M]
                    acc_t* __restrict__ z_out,         // [R, K] (written when softmax; may be nullptr otherwise)
                    int64_t R, int64_t M) {
  using VecT = Vec<scalar_t, VEC>;
  __shared__ acc_t s_z[kMaxCands];   // soft z (or logits) of the current row
  __shared__ acc_t s_wl[kMaxCands];  // weight of candidate j: w[r, live[j]]
  __shared__ acc_t s_stat;           // row max, then row sum

  const int t = threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t nvec = M / VEC;  // whole vectors per row (every row starts on a vector boundary when VEC > 1)

  for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
    // ---- weights of row r (warp 0 only; the other warps wait at the barrier below) ----
    if (t < 32) {
      const acc_t* lrow = logits + r * K;
      if (!softmax) {
        if (t < K) s_z[t] = lrow[t];
        __syncwarp();
        if (t < nc) {
          if (hard) {  // not used by the ops (hard comes with softmax), kept to match the CPU backend
            s_wl[t] = hard_weight(s_z, K, live.k[t]);
          } else {
            s_wl[t] = s_z[live.k[t]];
          }
        }
      } else {
        if (t < K) {
          const acc_t g = noise != nullptr
                              ? noise[r * K + t]
                              : gumbel_noise<acc_t>(seed, offset, static_cast<uint64_t>(r) * K + t);
          s_z[t] = (lrow[t] + g) / tau;
        }
        __syncwarp();
        if (t == 0) {
          acc_t m = s_z[0];
          for (int k = 1; k < K; ++k) m = s_z[k] > m ? s_z[k] : m;
          s_stat = m;
        }
        __syncwarp();
        if (t < K) s_z[t] = acc_exp(s_z[t] - s_stat);
        __syncwarp();
        if (t == 0) {
          acc_t s = acc_t(0);
          for (int k = 0; k < K; ++k) s += s_z[k];
          s_stat = s;
        }
        __syncwarp();
        if (t < K) {
          const acc_t z = s_z[t] / s_stat;
          s_z[t] = z;
          if (blockIdx.x == 0) z_out[r * K + t] = z;  // exactly one block per row writes z
        }
        __syncwarp();
        if (t < nc) {
          if (hard) {
            s_wl[t] = hard_weight(s_z, K, live.k[t]);  // every lane reads the same row from shared memory
          } else {
            s_wl[t] = s_z[live.k[t]];
          }
        }
      }
    }
    __syncthreads();

    // ---- out = sum_j wl[j] * ys[j] over this block's elements of row r ----
    const int64_t base = r * M;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + t; i < nvec; i += stride) {
      acc_t acc[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[v] = acc_t(0);
#pragma unroll
      for (int j = 0; j < MAXC; ++j) {
        if (j < nc) {
          const VecT y = reinterpret_cast<const VecT*>(ys.p[j] + base)[i];
          const acc_t wj = s_wl[j];
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[v] += wj * static_cast<acc_t>(y.v[v]);
        }
      }
      VecT o;
#pragma unroll
      for (int v = 0; v < VEC; ++v) o.v[v] = static_cast<scalar_t>(acc[v]);
      reinterpret_cast<VecT*>(out + base)[i] = o;
    }
    if (VEC > 1) {  // scalar tail: M % VEC elements (only possible when R == 1)
      for (int64_t e = nvec * VEC + static_cast<int64_t>(blockIdx.x) * kThreads + t; e < M; e += stride) {
        acc_t acc = acc_t(0);
#pragma unroll
        for (int j = 0; j < MAXC; ++j) {
          if (j < nc) acc += s_wl[j] * static_cast<acc_t>(ys.p[j][base + e]);
        }
        out[base + e] = static_cast<scalar_t>(acc);
      }
    }
    __syncthreads();  // shared weights are rewritten for the next row
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward (vector-Jacobian product).
//
// Forward of one row (b dropped): out = sum_k w_k Y_k, with w = z (soft) or w = one_hot(argmax z) (hard, used
// straight-through), z = softmax(x), x = (a + g) / tau. With G = dL/dout:
//
//   dL/dY_k = w_k G                                        (dys[j] = w_used[live[j]] * G)
//   dL/dw_k = sum_m Y_k[m] G[m] = <Y_k, G>                 (0 for a dead column: Y_k = 0)
//   dw_k    = dL/dw_k + grad_z_k                           (grad_z: gradient that reached z_out directly)
//
// jacobian == false: w was a leaf for this op, grad_w = dw.
// jacobian == true: the straight-through estimator takes dL/dz = dw (hard or soft), and through the softmax
//   dz_i/dx_k = z_i (delta_ik - z_k),  dx_k/da_k = 1/tau  (g is a constant), so
//   dL/da_k = sum_i dw_i z_i (delta_ik - z_k) / tau = z_k (dw_k - sum_i z_i dw_i) / tau = z_k (dw_k - <z, dw>) / tau.
//
// Reduction of the dots (deterministic, no atomics on values): each thread accumulates its elements in a fixed
// order; a fixed shuffle tree reduces each warp; warps are summed in order 0..7 into one partial per (row, chunk,
// candidate), written to partials [R, chunks, K']. Each writer fences, then one atomicAdd per block on the row's
// completion counter; the block that brings it to `chunks` is the last of the row: it sums the row's partials over
// chunks in a fixed order (lane c takes chunks c, c+32, ...; then a fixed shuffle tree), applies grad_z and the
// Jacobian, writes grad_w[r], and resets the counter to 0, so the counters are all zero again when the kernel
// ends (self-resetting: no memset before the next launch). With chunks == 1 the block reduces directly and
// neither the workspace nor the counter is touched. As in the CPU backend, the per-element dots and the partials
// are acc_t and the final combination over chunks, grad_z and the Jacobian is done in double, rounded once.
// The grid depends only on (R, M, K', dtype, alignment, SM count), so on a given device the summation order, and
// hence every bit of grad_w, is the same from run to run.
// ---------------------------------------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int VEC, int MAXC>
__global__ void __launch_bounds__(kThreads)
mixed_op_bwd_kernel(PtrArray<const scalar_t> ys,  // K' pointers, each [N] = [R, M] contiguous
                    PtrArray<scalar_t> dys,       // K' pointers, each [N] = [R, M] contiguous (outputs)
                    LiveArray live,               // [K'] column of each candidate
                    int nc,                       // K' (1 <= nc <= MAXC)
                    int K,                        // columns of w (1 <= K <= kMaxCands)
                    const acc_t* __restrict__ w,        // [R, K] saved weights (jacobian == false) or soft z
                    const scalar_t* __restrict__ gout,  // [N] = [R, M] incoming gradient G
                    const acc_t* __restrict__ grad_z,   // [R, K] or nullptr
                    bool jacobian, double tau, bool hard,
                    acc_t* __restrict__ grad_w,         // [R, K] output
                    acc_t* partials,                    // [R, gridDim.x, K'] workspace (nullptr when gridDim.x == 1)
                    int* counters,                      // [>= R] 0 on entry and on exit (nullptr when gridDim.x == 1)
                    int64_t R, int64_t M) {
  using VecT = Vec<scalar_t, VEC>;
  __shared__ acc_t s_z[kMaxCands];          // w[r] (the soft z when jacobian)
  __shared__ acc_t s_wl[kMaxCands];         // w_used[r, live[j]]
  __shared__ acc_t s_red[kWarps][MAXC];     // per-warp dot sums
  __shared__ double s_dot[kMaxCands];       // row dots <ys[j], G>, in the last block of the row
  __shared__ double s_dw[kMaxCands];        // dw[r, k]
  __shared__ double s_stat;                 // <z, dw>
  __shared__ int s_last;

  const int t = threadIdx.x;
  const int lane = t & 31;
  const int warp = t >> 5;
  const int chunks = gridDim.x;
  const int64_t stride = static_cast<int64_t>(chunks) * kThreads;
  const int64_t nvec = M / VEC;

  for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
    // ---- w_used of row r ----
    if (t < 32) {
      if (t < K) s_z[t] = w[r * K + t];
      __syncwarp();
      if (t < nc) {
        if (jacobian && hard) {
          s_wl[t] = hard_weight(s_z, K, live.k[t]);
        } else {
          s_wl[t] = s_z[live.k[t]];
        }
      }
    }
    __syncthreads();

    // ---- dys[j] = wl[j] * G and the per-thread dots <ys[j], G> over this block's elements ----
    acc_t dot[MAXC];
#pragma unroll
    for (int j = 0; j < MAXC; ++j) dot[j] = acc_t(0);

    const int64_t base = r * M;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + t; i < nvec; i += stride) {
      const VecT gv = reinterpret_cast<const VecT*>(gout + base)[i];
      acc_t g[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) g[v] = static_cast<acc_t>(gv.v[v]);
      // All loads first, then all stores: dys may not be proven disjoint from ys, so a store between two loads
      // would serialise them; this way the K' loads of an iteration are all in flight together.
#pragma unroll
      for (int j = 0; j < MAXC; ++j) {
        if (j < nc) {
          const VecT y = reinterpret_cast<const VecT*>(ys.p[j] + base)[i];
#pragma unroll
          for (int v = 0; v < VEC; ++v) dot[j] += static_cast<acc_t>(y.v[v]) * g[v];
        }
      }
#pragma unroll
      for (int j = 0; j < MAXC; ++j) {
        if (j < nc) {
          const acc_t wj = s_wl[j];
          VecT d;
#pragma unroll
          for (int v = 0; v < VEC; ++v) d.v[v] = static_cast<scalar_t>(wj * g[v]);
          reinterpret_cast<VecT*>(dys.p[j] + base)[i] = d;
        }
      }
    }
    if (VEC > 1) {  // scalar tail: M % VEC elements (only possible when R == 1)
      for (int64_t e = nvec * VEC + static_cast<int64_t>(blockIdx.x) * kThreads + t; e < M; e += stride) {
        const acc_t g = static_cast<acc_t>(gout[base + e]);
#pragma unroll
        for (int j = 0; j < MAXC; ++j) {
          if (j < nc) {
            dot[j] += static_cast<acc_t>(ys.p[j][base + e]) * g;
            dys.p[j][base + e] = static_cast<scalar_t>(s_wl[j] * g);
          }
        }
      }
    }

    // ---- block reduction of the dots: fixed shuffle tree per warp, then warps in order ----
#pragma unroll
    for (int j = 0; j < MAXC; ++j) {
      if (j < nc) {
        const acc_t s = warp_sum(dot[j]);
        if (lane == 0) s_red[warp][j] = s;
      }
    }
    __syncthreads();

    bool last;
    if (chunks == 1) {
      if (t < nc) {
        acc_t s = acc_t(0);
#pragma unroll
        for (int q = 0; q < kWarps; ++q) s += s_red[q][t];
        s_dot[t] = static_cast<double>(s);
      }
      last = true;
    } else {
      if (t < nc) {
        acc_t s = acc_t(0);
#pragma unroll
        for (int q = 0; q < kWarps; ++q) s += s_red[q][t];
        partials[(r * chunks + blockIdx.x) * nc + t] = s;
        __threadfence();  // publish this block's partials before it is counted
      }
      __syncthreads();
      if (t == 0) {
        const int prev = atomicAdd(counters + r, 1);
        s_last = prev == chunks - 1;
      }
      __syncthreads();
      last = s_last != 0;
      if (last) {
        __threadfence();  // acquire side: the other blocks' partials are visible
        // Warp q sums candidates j = q, q + 8, ...: lane c takes chunks c, c + 32, ... in order, then a fixed tree.
        for (int j = warp; j < nc; j += kWarps) {
          double s = 0.0;
          for (int c = lane; c < chunks; c += 32) {
            s += static_cast<double>(__ldcg(partials + (r * chunks + c) * nc + j));
          }
          s = warp_sum(s);
          if (lane == 0) s_dot[j] = s;
        }
      }
    }

    // ---- last block of the row: dw, grad_z, Jacobian, grad_w, counter reset ----
    if (last) {
      __syncthreads();  // s_dot complete (block-uniform branch)
      if (t < 32) {
        if (t < K) s_dw[t] = 0.0;
        __syncwarp();
        if (t < nc) s_dw[live.k[t]] = s_dot[t];  // live columns are distinct
        __syncwarp();
        if (t < K && grad_z != nullptr) s_dw[t] = s_dw[t] + static_cast<double>(grad_z[r * K + t]);
        __syncwarp();
        if (jacobian) {
          if (t == 0) {
            double s = 0.0;
            for (int k = 0; k < K; ++k) s += static_cast<double>(s_z[k]) * s_dw[k];
            s_stat = s;
          }
          __syncwarp();
          if (t < K) grad_w[r * K + t] = static_cast<acc_t>(static_cast<double>(s_z[t]) * (s_dw[t] - s_stat) / tau);
        } else {
          if (t < K) grad_w[r * K + t] = static_cast<acc_t>(s_dw[t]);
        }
        if (t == 0 && chunks > 1) counters[r] = 0;  // every block of this row has arrived: reset for the next launch
      }
    }
    __syncthreads();  // shared state is rewritten for the next row
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, MAXC>) with the smallest bucket MAXC >= nc.
template <typename F>
void dispatch_cands(int nc, F&& f) {
  if (nc <= 1) {
    f(std::integral_constant<int, 1>{});
  } else if (nc <= 2) {
    f(std::integral_constant<int, 2>{});
  } else if (nc <= 4) {
    f(std::integral_constant<int, 4>{});
  } else if (nc <= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (nc <= 16) {
    f(std::integral_constant<int, 16>{});
  } else {
    f(std::integral_constant<int, 32>{});
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid for R rows of M elements, `units` work items (vectors or scalars) per row.
dim3 make_grid(int64_t R, int64_t units) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t rows_y = std::min(R, kMaxGridY);
  const int64_t needed = std::max<int64_t>(1, ceil_div(units, kThreads));
  const int64_t budget = std::max<int64_t>(1, kBlocksPerSM * sms / rows_y);
  const int64_t chunks = std::min(needed, budget);
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows_y), 1);
}

// Completion counters of the backward, one int per row, cached per (device, stream) and zeroed once when created
// (or grown). The kernel leaves them at zero (self-resetting), so the normal path launches no memset. One buffer per
// stream keeps backward launches on different streams of the same device from sharing counters. The tensor is
// returned (not a raw pointer) so a concurrent growth by another host thread cannot free it before the launch.
// Under CUDA-graph capture the cache is bypassed: fresh zeroed counters are allocated (their memset is captured,
// so every replay starts from zero) and the graph's private pool keeps them alive.
at::Tensor completion_counters(const at::Device& device, int64_t rows) {
  const auto options = at::TensorOptions().dtype(at::kInt).device(device);
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return at::zeros({rows}, options);
  }
  static std::mutex mu;
  // Intentionally leaked: the buffers must not be freed by static destructors after the CUDA allocator is gone.
  static auto* cache = new std::map<std::pair<int, int64_t>, at::Tensor>();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const std::pair<int, int64_t> key(static_cast<int>(device.index()), static_cast<int64_t>(stream.id()));
  std::lock_guard<std::mutex> lock(mu);
  at::Tensor& buf = (*cache)[key];
  if (!buf.defined() || buf.numel() < rows) {
    const int64_t cap = std::max<int64_t>(rows, buf.defined() ? 2 * buf.numel() : int64_t(1024));
    buf = at::zeros({cap}, options);  // once per growth
  }
  return buf;
}

void check_counts(int64_t nc, int64_t nlive, int64_t K, const char* fn) {
  TORCH_CHECK(nc >= 1 && nc <= kMaxCands, fn, ": the CUDA kernel supports 1 to ", kMaxCands,
              " live candidates (K'), got ", nc);
  TORCH_CHECK(nlive == nc, fn, ": live has ", nlive, " entries but there are ", nc, " candidate tensors");
  TORCH_CHECK(K >= 1 && K <= kMaxCands, fn, ": the CUDA kernel supports at most ", kMaxCands,
              " columns (K) in the weight table, got ", K);
}

}  // namespace

void mixed_op_fwd_cuda(at::TensorList ys, at::IntArrayRef live, const at::Tensor& logits, const at::Tensor& noise,
                       bool softmax, double tau, bool hard, uint64_t seed, uint64_t offset, const at::Tensor& out,
                       const at::Tensor& z_out) {
  const int64_t nc = static_cast<int64_t>(ys.size());
  TORCH_CHECK(nc >= 1, "mixed_op_fwd_cuda: at least one candidate is required");
  const int64_t R = logits.size(0), K = logits.size(1);
  check_counts(nc, static_cast<int64_t>(live.size()), K, "mixed_op_fwd_cuda");

  const c10::cuda::CUDAGuard guard(ys[0].device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t N = ys[0].numel();
  TORCH_CHECK(R >= 1 && N >= 1 && N % R == 0,
              "mixed_op_fwd_cuda: expected N >= 1 elements split evenly into R >= 1 rows, got N = ", N, ", R = ", R);
  const int64_t M = N / R;

  LiveArray lv{};
  for (int64_t j = 0; j < nc; ++j) lv.k[j] = static_cast<int>(live[j]);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys[0].scalar_type(), "mixed_op_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = 16 / sizeof(scalar_t);

    PtrArray<const scalar_t> yp{};
    bool vec_ok = (R == 1 || M % kVec == 0) && aligned16(out.data_ptr());
    for (int64_t j = 0; j < nc; ++j) {
      yp.p[j] = ys[j].data_ptr<scalar_t>();
      vec_ok = vec_ok && aligned16(yp.p[j]);
    }
    const acc_t* lp = logits.data_ptr<acc_t>();
    const acc_t* np = (softmax && noise.defined()) ? noise.data_ptr<acc_t>() : nullptr;
    acc_t* zp = (softmax && z_out.defined()) ? z_out.data_ptr<acc_t>() : nullptr;
    TORCH_CHECK(!softmax || zp != nullptr, "mixed_op_fwd_cuda: z_out must be defined when softmax is true");
    scalar_t* op = out.data_ptr<scalar_t>();
    const acc_t tau_a = static_cast<acc_t>(tau);

    dispatch_cands(static_cast<int>(nc), [&](auto tag) {
      constexpr int MAXC = decltype(tag)::value;
      if (vec_ok) {
        const dim3 grid = make_grid(R, ceil_div(M, kVec));
        mixed_op_fwd_kernel<scalar_t, acc_t, kVec, MAXC><<<grid, kThreads, 0, stream>>>(
            yp, lv, static_cast<int>(nc), static_cast<int>(K), lp, np, softmax, tau_a, hard, seed, offset, op, zp,
            R, M);
      } else {
        const dim3 grid = make_grid(R, M);
        mixed_op_fwd_kernel<scalar_t, acc_t, 1, MAXC><<<grid, kThreads, 0, stream>>>(
            yp, lv, static_cast<int>(nc), static_cast<int>(K), lp, np, softmax, tau_a, hard, seed, offset, op, zp,
            R, M);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void mixed_op_bwd_cuda(at::TensorList ys, at::IntArrayRef live, const at::Tensor& w, const at::Tensor& grad_out,
                       const at::Tensor& grad_z, bool jacobian, double tau, bool hard, at::TensorList dys,
                       const at::Tensor& grad_w) {
  const int64_t nc = static_cast<int64_t>(ys.size());
  TORCH_CHECK(nc >= 1, "mixed_op_bwd_cuda: at least one candidate is required");
  const int64_t R = w.size(0), K = w.size(1);
  check_counts(nc, static_cast<int64_t>(live.size()), K, "mixed_op_bwd_cuda");
  TORCH_CHECK(static_cast<int64_t>(dys.size()) == nc, "mixed_op_bwd_cuda: dys has ", dys.size(),
              " tensors but there are ", nc, " candidates");

  const c10::cuda::CUDAGuard guard(ys[0].device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t N = ys[0].numel();
  TORCH_CHECK(R >= 1 && N >= 1 && N % R == 0,
              "mixed_op_bwd_cuda: expected N >= 1 elements split evenly into R >= 1 rows, got N = ", N, ", R = ", R);
  const int64_t M = N / R;

  LiveArray lv{};
  for (int64_t j = 0; j < nc; ++j) lv.k[j] = static_cast<int>(live[j]);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys[0].scalar_type(), "mixed_op_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = 16 / sizeof(scalar_t);

    PtrArray<const scalar_t> yp{};
    PtrArray<scalar_t> dp{};
    const scalar_t* gp = grad_out.data_ptr<scalar_t>();
    bool vec_ok = (R == 1 || M % kVec == 0) && aligned16(gp);
    for (int64_t j = 0; j < nc; ++j) {
      yp.p[j] = ys[j].data_ptr<scalar_t>();
      dp.p[j] = dys[j].data_ptr<scalar_t>();
      vec_ok = vec_ok && aligned16(yp.p[j]) && aligned16(dp.p[j]);
    }
    const dim3 grid = vec_ok ? make_grid(R, ceil_div(M, kVec)) : make_grid(R, M);
    const int64_t chunks = grid.x;

    // Workspace and counters only when a row is split over several blocks. at::empty comes from the caching
    // allocator on this stream (no launch); the counters are created zeroed once and are self-resetting.
    at::Tensor ws, counters;
    acc_t* pp = nullptr;
    int* cp = nullptr;
    if (chunks > 1) {
      ws = at::empty({R * chunks * nc}, w.options());
      pp = ws.data_ptr<acc_t>();
      counters = completion_counters(ys[0].device(), R);
      cp = counters.data_ptr<int>();
    }
    const acc_t* wp = w.data_ptr<acc_t>();
    const acc_t* gzp = grad_z.defined() ? grad_z.data_ptr<acc_t>() : nullptr;
    acc_t* gwp = grad_w.data_ptr<acc_t>();

    dispatch_cands(static_cast<int>(nc), [&](auto tag) {
      constexpr int MAXC = decltype(tag)::value;
      if (vec_ok) {
        mixed_op_bwd_kernel<scalar_t, acc_t, kVec, MAXC><<<grid, kThreads, 0, stream>>>(
            yp, dp, lv, static_cast<int>(nc), static_cast<int>(K), wp, gp, gzp, jacobian, tau, hard, gwp, pp, cp,
            R, M);
      } else {
        mixed_op_bwd_kernel<scalar_t, acc_t, 1, MAXC><<<grid, kThreads, 0, stream>>>(
            yp, dp, lv, static_cast<int>(nc), static_cast<int>(K), wp, gp, gzp, jacobian, tau, hard, gwp, pp, cp,
            R, M);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace snas_fast
