// The backend contract of the fused mixed op. csrc/mixed_op.cpp declares the schemas, checks the arguments
// and calls one of these; csrc/cpu/mixed_op_cpu.cpp and csrc/cuda/mixed_op_cuda.cu implement them, and
// kernels/mixed_op.py (Triton) implements the same two functions in Python. docs/kernels.md has the maths.
//
// Shapes (N = numel of one candidate = B * M):
//   ys      K' tensors of N elements each, same dtype (f16, bf16, f32 or f64), K' >= 1, N >= 1, in one shared
//           dense layout read in memory order (contiguous, or channels_last, ...; row b is one block of M)
//   live    K' distinct column indices in [0, K): ys[j] is candidate live[j]; the other columns are zero ops
//   logits  [R, K] contiguous, dtype acc_t (f32, or f64 when ys are f64); R is 1 (one row for all
//           elements) or B (row b weights the M consecutive elements b*M .. b*M+M-1)
//   noise   [R, K] acc_t, or undefined: then Gumbel noise is drawn from (seed, offset), see csrc/philox.h
//   out     [N] ys dtype;  z_out [R, K] acc_t (written only when softmax)
//   grad_out [N] ys dtype, in the ys' layout;  grad_z [R, K] acc_t or undefined;  dys K' x [N] in the ys' layout;
//   grad_w [R, K] acc_t
#pragma once
#include <ATen/ATen.h>

namespace snas_fast {

// Forward.
//   softmax == false: w = logits (the weights are given);
//   softmax == true:  z = softmax((logits + g) / tau) per row, written to z_out; w = hard ? one_hot(argmax z) : z.
//   out[b*M + m] = sum_j w[b, live[j]] * ys[j][b*M + m]       (accumulated in acc_t, rounded once)
void mixed_op_fwd_cpu(at::TensorList ys, at::IntArrayRef live, const at::Tensor& logits, const at::Tensor& noise,
                      bool softmax, double tau, bool hard, uint64_t seed, uint64_t offset, const at::Tensor& out,
                      const at::Tensor& z_out);

// Backward. w is the [R, K] tensor saved by the forward: the weights themselves (jacobian == false) or the soft
// sample z (jacobian == true, where the forward used hard ? one_hot(argmax z) : z).
//   dys[j] = w_used[b, live[j]] * grad_out
//   dw[b, k] = <ys[k], grad_out> over row b  (0 for dead k)  (+ grad_z[b, k] when grad_z is defined)
//   jacobian == false: grad_w = dw;   jacobian == true: grad_w = z * (dw - <z, dw>_row) / tau
// The reductions are deterministic: fixed partial sums in a fixed order, no atomics on the accumulators.
void mixed_op_bwd_cpu(at::TensorList ys, at::IntArrayRef live, const at::Tensor& w, const at::Tensor& grad_out,
                      const at::Tensor& grad_z, bool jacobian, double tau, bool hard, at::TensorList dys,
                      const at::Tensor& grad_w);

#ifdef SNAS_FAST_WITH_CUDA
// Same contract on CUDA tensors: exactly one kernel launch each, on the current stream.
void mixed_op_fwd_cuda(at::TensorList ys, at::IntArrayRef live, const at::Tensor& logits, const at::Tensor& noise,
                       bool softmax, double tau, bool hard, uint64_t seed, uint64_t offset, const at::Tensor& out,
                       const at::Tensor& z_out);
void mixed_op_bwd_cuda(at::TensorList ys, at::IntArrayRef live, const at::Tensor& w, const at::Tensor& grad_out,
                       const at::Tensor& grad_z, bool jacobian, double tau, bool hard, at::TensorList dys,
                       const at::Tensor& grad_w);
#endif

}  // namespace snas_fast
