// Schemas of the deep-fused mixed edge (issue 5), their device routing and their autograd. The op checks its
// arguments (naming the argument, what was expected and what came), makes the tensors the kernels expect
// (csrc/mixed_edge.h) and calls the backend of the device: csrc/cpu/mixed_edge_cpu.cpp or
// csrc/cuda/mixed_edge_cuda.cu. The fake (meta) kernels are registered from Python, in snas_fast/_ops.py.
// Autograd is registered in C++ for the reason given in csrc/mixed_op.cpp (per-call overhead).
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "mixed_edge.h"

namespace snas_fast {
namespace {

using FwdFn = void (*)(const at::Tensor&, at::TensorList, const at::Tensor&, const EdgeCols&, int64_t, bool,
                       at::TensorList, at::TensorList, double, double, const at::Tensor&, const at::Tensor&,
                       const at::Tensor&);
using BwdFn = void (*)(const at::Tensor&, at::TensorList, const at::Tensor&, const EdgeCols&, int64_t, bool,
                       const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList,
                       const at::Tensor&);

#ifdef SNAS_FAST_WITH_CUDA
constexpr FwdFn kFwdCuda = &mixed_edge_fwd_cuda;
constexpr BwdFn kBwdCuda = &mixed_edge_bwd_cuda;
#else
constexpr FwdFn kFwdCuda = nullptr;
constexpr BwdFn kBwdCuda = nullptr;
#endif

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

int64_t pooled(int64_t n, int64_t stride) { return (n - 1) / stride + 1; }

// The layout a [B, C, *, *] tensor is read in: channels_last when it is contiguous in it (and not in NCHW), else
// NCHW (a copy when it is in neither). Outputs are allocated in the layout of the input they mirror. The Python
// twin: snas_fast/ops/registry.py, edge_format.
at::MemoryFormat edge_format(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast) ? at::MemoryFormat::ChannelsLast
                                                                               : at::MemoryFormat::Contiguous;
}

// The checked geometry of one call. With partial channels (groups k > 1) the kernels see the first C / k channels
// of x (a view of x_all) and write the output's channels 0, k, 2k, ... (a view of the output): see write_bypass.
struct Edge {
  at::Tensor x_all;            // in edge_format(x)
  at::Tensor x;                // x_all, or its first C channels (groups > 1)
  std::vector<at::Tensor> us;  // all in edge_format(us[0])
  at::Tensor table;            // [R, K] acc
  EdgeCols cols;
  int64_t B, C, Ho, Wo;        // C: the mixed channels, x_all.size(1) / groups
  int64_t groups;
};

Edge check_edge(const at::Tensor& x, at::TensorList us, const at::Tensor& weights, at::IntArrayRef cols,
                int64_t stride, int64_t groups) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x: expected the edge input [B, C, H, W], got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "x: expected a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(stride == 1 || stride == 2, "stride: expected 1 or 2, got ", stride);
  TORCH_CHECK_VALUE(static_cast<int64_t>(us.size()) <= kMaxEdgeBn, "us: at most ", kMaxEdgeBn,
                    " BatchNorm-ended candidates per edge, got ", us.size());
  TORCH_CHECK_VALUE(groups >= 1 && x.size(1) % groups == 0, "groups: expected a divisor of x's channel count ",
                    x.size(1), " (the candidates see C / groups channels), got ", groups);
  Edge e;
  e.groups = groups;
  e.B = x.size(0);
  e.C = x.size(1) / groups;
  e.Ho = pooled(x.size(2), stride);
  e.Wo = pooled(x.size(3), stride);
  TORCH_CHECK_VALUE(x.size(2) >= 1 && x.size(3) >= 1, "x: expected H and W >= 1, got shape ", x.sizes());
  const std::vector<int64_t> out_shape{e.B, e.C, e.Ho, e.Wo};
  for (size_t m = 0; m < us.size(); ++m) {
    TORCH_CHECK_VALUE(us[m].sizes() == at::IntArrayRef(out_shape), "us[", m, "]: expected shape ", at::IntArrayRef(out_shape),
                      " (the edge output for x of shape ", x.sizes(), " at stride ", stride, " with groups ", groups,
                      "), got ", us[m].sizes());
    TORCH_CHECK_TYPE(us[m].scalar_type() == x.scalar_type(), "us[", m, "]: expected dtype ", x.scalar_type(),
                     " like x, got ", us[m].scalar_type());
    TORCH_CHECK_VALUE(us[m].device() == x.device(), "us[", m, "]: expected a tensor on ", x.device(), " like x, got ",
                      us[m].device());
  }
  TORCH_CHECK_VALUE(weights.dim() == 1 || weights.dim() == 2, "weights: expected shape [K] or [B, K], got ",
                    weights.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(weights.scalar_type()), "weights: expected a floating-point tensor, got ",
                   weights.scalar_type());
  TORCH_CHECK_VALUE(weights.device() == x.device(), "weights: expected a tensor on ", x.device(), ", got ",
                    weights.device());
  TORCH_CHECK_VALUE(weights.dim() == 1 || weights.size(0) == e.B, "weights: a [B, K] table needs B = ", e.B,
                    " (the batch of x), got shape ", weights.sizes());
  const int64_t K = weights.size(-1);
  TORCH_CHECK_VALUE(static_cast<int64_t>(cols.size()) == 3 + static_cast<int64_t>(us.size()),
                    "cols: expected 3 + len(us) = ", 3 + us.size(), " column indices [max, avg, id, bn_0, ...], got ",
                    cols.size());
  std::vector<bool> seen(K, false);
  for (size_t i = 0; i < cols.size(); ++i) {
    const int64_t c = cols[i];
    if (c == -1 && i < 3) continue;
    TORCH_CHECK_VALUE(c >= 0 && c < K && !seen[c], "cols: expected distinct columns in [0, ", K,
                      ") (-1 for an absent pool or identity), got ", cols);
    seen[c] = true;
  }
  TORCH_CHECK_VALUE(stride == 1 || cols[2] == -1, "cols: the identity term (cols[2] = ", cols[2],
                    ") needs stride 1; at stride 2 skip_connect is FactorizedReduce, a BatchNorm-ended candidate");
  e.cols.max_col = cols[0];
  e.cols.avg_col = cols[1];
  e.cols.id_col = cols[2];
  e.cols.bn_cols.assign(cols.begin() + 3, cols.end());
  e.x_all = x.contiguous(edge_format(x));
  e.x = groups == 1 ? e.x_all : e.x_all.narrow(1, 0, e.C);
  for (const auto& u : us) e.us.push_back(u.contiguous(edge_format(us[0])));
  e.table = weights.to(acc_type(x.scalar_type())).contiguous().view({-1, K});
  return e;
}

// Partial channels (PC-DARTS): the channels of x after the first C / k bypass the candidates (max-pooled 2x2 at
// stride 2 with ceil_mode, as snas_fast.reference.partial_channel_edge) and the output is
// channel_shuffle(cat(mixed, bypass), k): output channel j * k is mixed channel j (the kernels write it through the
// strided view out_all[:, ::k]) and output channel j * k + g (g >= 1) is bypass channel (g - 1) * C / k + j.
// shuffled_bypass is the view of those places as [B, k - 1, C / k, Ho, Wo], indexed like the bypass channels.
at::Tensor shuffled_bypass(const at::Tensor& all, int64_t k) {
  return all.unflatten(1, {all.size(1) / k, k}).narrow(2, 1, k - 1).transpose(1, 2);
}

at::Tensor bypass_input(const Edge& e) { return e.x_all.narrow(1, e.C, e.x_all.size(1) - e.C); }

void write_bypass(const Edge& e, int64_t stride, const at::Tensor& out_all) {
  auto xb = bypass_input(e);
  if (stride == 2) xb = at::max_pool2d(xb, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true);
  shuffled_bypass(out_all, e.groups).copy_(xb.unflatten(1, {e.groups - 1, e.C}));
}

// dx of the bypass channels from grad_all (the whole output's gradient).
void bypass_backward(const Edge& e, int64_t stride, const at::Tensor& grad_all, const at::Tensor& dx_all) {
  const auto g = shuffled_bypass(grad_all, e.groups);
  auto dxb = dx_all.narrow(1, e.C, dx_all.size(1) - e.C);
  if (stride == 1) {
    dxb.unflatten(1, {e.groups - 1, e.C}).copy_(g);
    return;
  }
  const auto xb = bypass_input(e);
  const auto pooled = at::max_pool2d_with_indices(xb, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true);
  dxb.copy_(at::max_pool2d_with_indices_backward(g.flatten(1, 2), xb, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true,
                                                 std::get<1>(pooled)));
}

void check_stats_list(const char* name, at::TensorList list, const Edge& e) {
  TORCH_CHECK_VALUE(list.empty() || list.size() == e.us.size(), name, ": expected an empty list or one tensor per "
                    "BatchNorm-ended candidate (", e.us.size(), "), got ", list.size());
  for (size_t m = 0; m < list.size(); ++m) {
    TORCH_CHECK_VALUE(list[m].dim() == 1 && list[m].size(0) == e.C, name, "[", m, "]: expected shape [", e.C,
                      "], got ", list[m].sizes());
    TORCH_CHECK_TYPE(at::isFloatingType(list[m].scalar_type()), name, "[", m, "]: expected a floating-point tensor, got ",
                     list[m].scalar_type());
    TORCH_CHECK_VALUE(list[m].device() == e.x.device(), name, "[", m, "]: expected a tensor on ", e.x.device(), ", got ",
                      list[m].device());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixed_edge_fwd(const at::Tensor& x, at::TensorList us,
                                                              const at::Tensor& weights, at::IntArrayRef cols,
                                                              int64_t stride, bool batch_stats,
                                                              at::TensorList running_mean,
                                                              at::TensorList running_var, double momentum,
                                                              double eps, int64_t groups) {
  const Edge e = check_edge(x, us, weights, cols, stride, groups);
  check_stats_list("running_mean", running_mean, e);
  check_stats_list("running_var", running_var, e);
  TORCH_CHECK_VALUE(running_mean.size() == running_var.size(), "running_var: expected as many tensors as running_mean (",
                    running_mean.size(), "), got ", running_var.size());
  TORCH_CHECK_VALUE(std::isfinite(momentum) && momentum >= 0 && momentum <= 1, "momentum: expected a number in [0, 1], got ",
                    momentum);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "eps: expected a finite number > 0, got ", eps);
  const int64_t M = static_cast<int64_t>(e.us.size());
  const auto acc = acc_type(x.scalar_type());
  const auto acc_opts = e.x.options().dtype(acc);
  auto out_all = at::empty({e.B, e.C * groups, e.Ho, e.Wo}, e.x.options().memory_format(edge_format(e.x_all)));
  auto out = groups == 1 ? out_all : out_all.slice(1, 0, e.C * groups, groups);
  at::Tensor mean, rstd;
  if (batch_stats) {
    const int64_t n = e.B * e.Ho * e.Wo;
    TORCH_CHECK_VALUE(M == 0 || n != 1, "us: batch statistics need more than 1 value per channel, got B * Ho * Wo = ", n,
                      " (input shape ", x.sizes(), ")");
    mean = at::empty({M, e.C}, acc_opts);
    rstd = at::empty({M, e.C}, acc_opts);
  } else {
    TORCH_CHECK_VALUE(M == 0 || !running_mean.empty(), "running_mean: eval mode (batch_stats=False) needs the running "
                      "statistics of the ", M, " BatchNorm-ended candidates, got an empty list");
    mean = M ? at::stack(running_mean).to(acc).contiguous() : at::empty({0, e.C}, acc_opts);
    rstd = M ? at::stack(running_var).to(acc).add(eps).rsqrt().contiguous() : at::empty({0, e.C}, acc_opts);
  }
  if (out.numel() == 0) {  // nothing to normalise or sum; the statistics of an empty batch are not defined
    if (batch_stats) {
      mean.zero_();
      rstd.fill_(1.0 / std::sqrt(eps));
    }
    return {out_all, mean, rstd};
  }
  // The kernels update running statistics held in acc_t; other dtypes go through a copy.
  std::vector<at::Tensor> rm, rv;
  const bool update = batch_stats && !running_mean.empty();
  bool copied = false;
  if (update) {
    for (size_t m = 0; m < running_mean.size(); ++m) {
      const bool direct = running_mean[m].scalar_type() == acc && running_var[m].scalar_type() == acc &&
                          running_mean[m].is_contiguous() && running_var[m].is_contiguous();
      copied |= !direct;
      rm.push_back(direct ? running_mean[m] : running_mean[m].to(acc).contiguous());
      rv.push_back(direct ? running_var[m] : running_var[m].to(acc).contiguous());
    }
  }
  (e.x.is_cuda() ? kFwdCuda : &mixed_edge_fwd_cpu)(e.x, e.us, e.table, e.cols, stride, batch_stats, rm, rv,
                                                   momentum, eps, out, mean, rstd);
  if (copied) {
    for (size_t m = 0; m < running_mean.size(); ++m) {
      if (!rm[m].is_same(running_mean[m])) running_mean[m].copy_(rm[m]);
      if (!rv[m].is_same(running_var[m])) running_var[m].copy_(rv[m]);
    }
  }
  if (groups > 1) write_bypass(e, stride, out_all);
  return {out_all, mean, rstd};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mixed_edge_bwd(
    const at::Tensor& x, at::TensorList us, const at::Tensor& weights, at::IntArrayRef cols, int64_t stride,
    bool batch_stats, const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& grad_out_in,
    int64_t groups) {
  const Edge e = check_edge(x, us, weights, cols, stride, groups);
  const int64_t M = static_cast<int64_t>(e.us.size());
  const auto acc = acc_type(x.scalar_type());
  TORCH_CHECK_VALUE(mean.sizes() == at::IntArrayRef({M, e.C}) && rstd.sizes() == mean.sizes(),
                    "mean, rstd: expected shape [", M, ", ", e.C, "] (the forward's statistics), got ", mean.sizes(),
                    " and ", rstd.sizes());
  const std::vector<int64_t> out_shape{e.B, e.C * groups, e.Ho, e.Wo};
  TORCH_CHECK_VALUE(grad_out_in.sizes() == at::IntArrayRef(out_shape), "grad_out: expected shape ",
                    at::IntArrayRef(out_shape), ", got ", grad_out_in.sizes());
  TORCH_CHECK_VALUE(grad_out_in.device() == x.device(), "grad_out: expected a tensor on ", x.device(), ", got ",
                    grad_out_in.device());
  // out's layout (stride-0 grads are materialised)
  const auto grad_all = grad_out_in.to(x.scalar_type()).contiguous(edge_format(e.x_all));
  const auto grad_out = groups == 1 ? grad_all : grad_all.slice(1, 0, e.C * groups, groups);
  const auto mean_acc = mean.to(acc).contiguous(), rstd_acc = rstd.to(acc).contiguous();
  auto dx_all = at::empty_like(e.x_all);  // x's strides: the kernels address x and dx with one PlaneLayout
  auto dx = groups == 1 ? dx_all : dx_all.narrow(1, 0, e.C);
  std::vector<at::Tensor> dus;
  for (const auto& u : e.us) dus.push_back(at::empty_like(u));  // likewise the us and dus
  auto grad_w = at::empty(e.table.sizes(), e.table.options());
  if (grad_out.numel() == 0) {
    dx_all.zero_();
    grad_w.zero_();
  } else {
    (e.x.is_cuda() ? kBwdCuda : &mixed_edge_bwd_cpu)(e.x, e.us, e.table, e.cols, stride, batch_stats, mean_acc,
                                                     rstd_acc, grad_out, dx, dus, grad_w);
    if (groups > 1) bypass_backward(e, stride, grad_all, dx_all);
  }
  return {dx_all, dus, grad_w.view(weights.sizes()).to(weights.scalar_type())};
}

// ---------------------------------------------------------------------------------------------------------
// Autograd: the forward's backward is the registered backward op, called through the dispatcher.
// ---------------------------------------------------------------------------------------------------------
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class MixedEdgeFunction : public torch::autograd::Function<MixedEdgeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList us,
                               const at::Tensor& weights, at::IntArrayRef cols, int64_t stride, bool batch_stats,
                               at::TensorList running_mean, at::TensorList running_var, double momentum,
                               double eps, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::mixed_edge_fwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, at::TensorList, const at::Tensor&, at::IntArrayRef, int64_t, bool,
                             at::TensorList, at::TensorList, double, double, int64_t)>();
    auto [out, mean, rstd] = op.call(x, us, weights, cols, stride, batch_stats, running_mean, running_var,
                                     momentum, eps, groups);
    if (batch_stats) {  // the running statistics changed in place below autograd: say so to the version counters
      for (const auto& t : running_mean) torch::autograd::impl::bump_version(t);
      for (const auto& t : running_var) torch::autograd::impl::bump_version(t);
    }
    std::vector<at::Tensor> saved{x, weights, mean, rstd};
    saved.insert(saved.end(), us.begin(), us.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["cols"] = cols.vec();
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["batch_stats"] = batch_stats;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["stats_lists"] = static_cast<int64_t>(running_mean.size() + running_var.size());
    ctx->mark_non_differentiable({mean, rstd});
    return {out, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::mixed_edge_bwd", "")
                         .typed<std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor>(
                             const at::Tensor&, at::TensorList, const at::Tensor&, at::IntArrayRef, int64_t, bool,
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
    auto saved = ctx->get_saved_variables();
    const auto x = saved[0], weights = saved[1], mean = saved[2], rstd = saved[3];
    std::vector<at::Tensor> us(saved.begin() + 4, saved.end());
    auto [dx, dus, dw] = op.call(x, us, weights, ctx->saved_data["cols"].toIntVector(),
                                 ctx->saved_data["stride"].toInt(), ctx->saved_data["batch_stats"].toBool(), mean,
                                 rstd, grad_outputs[0], ctx->saved_data["groups"].toInt());
    // One gradient per forward argument, the tensors of each list counted one by one.
    variable_list grads{dx};
    grads.insert(grads.end(), dus.begin(), dus.end());
    grads.push_back(dw);
    grads.resize(grads.size() + 3 + ctx->saved_data["stats_lists"].toInt() + 3);  // cols .. groups: none
    return grads;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixed_edge_fwd_autograd(
    const at::Tensor& x, at::TensorList us, const at::Tensor& weights, at::IntArrayRef cols, int64_t stride,
    bool batch_stats, at::TensorList running_mean, at::TensorList running_var, double momentum, double eps,
    int64_t groups) {
  auto outs = MixedEdgeFunction::apply(x, us, weights, cols, stride, batch_stats, running_mean, running_var,
                                       momentum, eps, groups);
  return {outs[0], outs[1], outs[2]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(snas_fast, m) {
  // out = w[max] maxpool(x) + w[avg] avgpool(x) + w[id] x + sum_m w[bn_m] BN(us[m]); cols = [max, avg, id, bn...].
  // Returns (out, mean, rstd), the statistics [M, C / groups] used (batch or running); updates the running
  // statistics. groups > 1: partial channels (write_bypass).
  m.def(
      "mixed_edge_fwd(Tensor x, Tensor[] us, Tensor weights, int[] cols, int stride, bool batch_stats, "
      "Tensor(a!)[] running_mean, Tensor(b!)[] running_var, float momentum, float eps, int groups=1) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "mixed_edge_bwd(Tensor x, Tensor[] us, Tensor weights, int[] cols, int stride, bool batch_stats, "
      "Tensor mean, Tensor rstd, Tensor grad_out, int groups=1) -> (Tensor, Tensor[], Tensor)");
}

TORCH_LIBRARY_IMPL(snas_fast, CPU, m) {
  m.impl("mixed_edge_fwd", &mixed_edge_fwd);
  m.impl("mixed_edge_bwd", &mixed_edge_bwd);
}

TORCH_LIBRARY_IMPL(snas_fast, Autograd, m) { m.impl("mixed_edge_fwd", &mixed_edge_fwd_autograd); }

#ifdef SNAS_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snas_fast, CUDA, m) {
  m.impl("mixed_edge_fwd", &mixed_edge_fwd);
  m.impl("mixed_edge_bwd", &mixed_edge_bwd);
}
#endif

}  // namespace snas_fast
