// The backend contract of the deep-fused mixed edge (issue 5). csrc/mixed_edge.cpp declares the schemas, checks
// the arguments and calls one of these; csrc/cpu/mixed_edge_cpu.cpp and csrc/cuda/mixed_edge_cuda.cu implement
// them, and kernels/mixed_edge.py (Triton) implements the same two functions in Python. The eager oracle is
// snas_fast.reference.mixed_edge; docs/kernels.md has the maths.
//
// One edge of the DARTS/SNAS search space, with every candidate's tail folded in:
//
//   out = w[max] * maxpool3x3(x) + w[avg] * avgpool3x3(x) + w[id] * x
//       + sum_m w[bn_m] * (u_m - mean[m, c]) * rstd[m, c]
//
// x is the edge input; u_m is the pre-BatchNorm tensor of the m-th BatchNorm-ended candidate (a convolution's
// output before its affine-free BN); the pools (3x3, padding 1, stride s; max pads with -inf and sends its gradient
// to the first maximum of the window in row-major order, as at::max_pool2d; avg excludes the padding from its
// divisor, count_include_pad=False) and the identity are computed from x inside the kernel, never materialised.
//
// Shapes (B batch, C channels, H x W input, Ho = (H - 1) / s + 1, Wo likewise, s = stride in {1, 2}):
//   x         [B, C, H, W], dtype T in {f16, bf16, f32, f64}
//   us        0 <= M <= 8 tensors [B, C, Ho, Wo], T (M <= kMaxEdgeBn), all in one layout
//   w         [R, K] contiguous, acc_t (f32, or f64 when T is f64); R = 1 (one weight per candidate) or B
//   cols      EdgeCols: the column of w of each term; -1 marks an absent x-term; columns not named are zero ops
//   mean,rstd [M, C] acc_t: batch statistics (written by the forward when batch_stats) or given (eval mode)
//   running_mean, running_var   M tensors [C] acc_t, or empty lists (no running statistics)
//   out       [B, C, Ho, Wo] T
//   grad_out  [B, C, Ho, Wo] T, out's layout;  dx [B, C, H, W] T, x's layout;  dus M x [B, C, Ho, Wo] T, the us'
//   layout;  grad_w [R, K] acc_t
// Layouts: every [B, C, *, *] tensor is contiguous in NCHW or in channels_last (NHWC) and is read and written
// where it is, through its PlaneLayout (below): x, the us and out may each be in either (csrc/mixed_edge.cpp picks
// them, edge_format; outputs take the layout of the input they mirror).
// Accumulation in acc_t, every output rounded to T once. id is only allowed at stride 1 (checked upstream).
#pragma once
#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <vector>

namespace snas_fast {

// Where the (b, c) plane of a [B, C, H, W] tensor lies: its element i = h * W + w is at b * sB + c * sC + i * es.
// One formula for both layouts (NCHW: sC = H * W, es = 1; NHWC: sC = 1, es = C), because in either the H stride
// is W times the W stride.
struct PlaneLayout {
  int64_t sB, sC, es;
  C10_HOST_DEVICE int64_t at(int64_t b, int64_t c) const { return b * sB + c * sC; }
};

inline PlaneLayout plane_layout(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.size(3) > 1 ? t.stride(3) : t.stride(2)};
}

constexpr int64_t kMaxEdgeBn = 8;  // BatchNorm-ended candidates per edge

struct EdgeCols {
  int64_t max_col = -1;  // max_pool_3x3
  int64_t avg_col = -1;  // avg_pool_3x3
  int64_t id_col = -1;   // skip_connect at stride 1
  std::vector<int64_t> bn_cols;  // bn_cols[m]: the column of u_m
};

// Forward.
//   batch_stats == true: mean[m, c] and the biased variance var[m, c] over (B, Ho, Wo) of u_m, rstd = 1 /
//     sqrt(var + eps), written to mean and rstd; when the running lists are not empty, also
//     running_mean[m] = (1 - momentum) * running_mean[m] + momentum * mean[m]
//     running_var[m]  = (1 - momentum) * running_var[m]  + momentum * var[m] * n / (n - 1),  n = B * Ho * Wo
//     (exactly BatchNorm2d's update). Variances are computed without catastrophic cancellation (e.g. per-plane
//     mean and M2 combined with Chan's formula), in a fixed order: the statistics are deterministic.
//   batch_stats == false: mean and rstd are inputs (eval mode: from the running statistics).
//   out as above.
void mixed_edge_fwd_cpu(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                        int64_t stride, bool batch_stats, at::TensorList running_mean, at::TensorList running_var,
                        double momentum, double eps, const at::Tensor& out, const at::Tensor& mean,
                        const at::Tensor& rstd);

// Backward, G = grad_out, xhat_m = (u_m - mean) * rstd, w_b = w[b or 0, col]:
//   dx      = w_b[max] * maxpool_backward(G) + w_b[avg] * avgpool_backward(G) + w_b[id] * G   (zero if none)
//   batch_stats: dus[m] = rstd * (w_b[bn_m] G - S1[m, c] / n - xhat_m * S2[m, c] / n),
//                S1[m, c] = sum_{b,h,w} w_b[bn_m] G,  S2[m, c] = sum_{b,h,w} w_b[bn_m] G xhat_m
//   else:        dus[m] = rstd * w_b[bn_m] * G
//   grad_w[r, col] = <term of col, G> over the elements of row r (all elements when R = 1): <maxpool(x), G>,
//                    <avgpool(x), G>, <x, G>, <xhat_m, G>; 0 for the columns of zero ops.
// The reductions are deterministic: fixed partial sums in a fixed order, no atomics on the accumulators. At most
// two kernel launches on CUDA (a reduction pass, then an elementwise pass).
void mixed_edge_bwd_cpu(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                        int64_t stride, bool batch_stats, const at::Tensor& mean, const at::Tensor& rstd,
                        const at::Tensor& grad_out, const at::Tensor& dx, at::TensorList dus,
                        const at::Tensor& grad_w);

#ifdef SNAS_FAST_WITH_CUDA
// Same contract on CUDA tensors, on the current stream: the forward is a statistics launch (batch_stats only)
// and one elementwise launch; the backward a reduction launch and an elementwise launch.
void mixed_edge_fwd_cuda(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                         int64_t stride, bool batch_stats, at::TensorList running_mean, at::TensorList running_var,
                         double momentum, double eps, const at::Tensor& out, const at::Tensor& mean,
                         const at::Tensor& rstd);
void mixed_edge_bwd_cuda(const at::Tensor& x, at::TensorList us, const at::Tensor& w, const EdgeCols& cols,
                         int64_t stride, bool batch_stats, const at::Tensor& mean, const at::Tensor& rstd,
                         const at::Tensor& grad_out, const at::Tensor& dx, at::TensorList dus,
                         const at::Tensor& grad_w);
#endif

}  // namespace snas_fast
