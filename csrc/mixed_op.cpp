// Schemas of the fused mixed op, their device routing and their autograd. Each op checks its arguments (naming
// the argument, what was expected and what came), makes the tensors the kernels expect (csrc/mixed_op.h) and
// calls the backend of the device: csrc/cpu/mixed_op_cpu.cpp or csrc/cuda/mixed_op_cuda.cu. The fake (meta)
// kernels are registered from Python, in snas_fast/_ops.py.
//
// Autograd is registered here, in C++, rather than with torch.library.register_autograd: that Python wrapper
// cost about 100 us per call here (pytree flattening of the candidate list), more than an eager edge's own
// overhead, and a supernet makes ~100 such calls per step. The backward of each forward op is the one
// registered backward op (one launch).
#include <Python.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "mixed_op.h"

namespace snas_fast {
namespace {

using FwdFn = void (*)(at::TensorList, at::IntArrayRef, const at::Tensor&, const at::Tensor&, bool, double, bool,
                       uint64_t, uint64_t, const at::Tensor&, const at::Tensor&);
using BwdFn = void (*)(at::TensorList, at::IntArrayRef, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                       double, bool, at::TensorList, const at::Tensor&);

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Whether the kernels can read the candidates where they are: one dense layout shared by all (channels_last
// included), with the first dimension outermost so that a [B, K] table's row b weights one block of memory. The
// kernels see N elements in memory order; the output and the gradients take the same layout. Otherwise the
// candidates are made contiguous. (The Python twin, for the Triton ops and the fake kernels:
// snas_fast/ops/registry.py, keeps_layout.)
bool keeps_layout(at::TensorList ys) {
  const auto& y0 = ys[0];
  if (y0.is_contiguous()) return std::all_of(ys.begin(), ys.end(), [](const at::Tensor& y) { return y.is_contiguous(); });
  if (!y0.is_non_overlapping_and_dense()) return false;
  if (y0.dim() >= 1 && y0.size(0) > 1 && y0.stride(0) * y0.size(0) != y0.numel()) return false;
  return std::all_of(ys.begin(), ys.end(), [&](const at::Tensor& y) { return y.strides() == y0.strides(); });
}

// Checks ys and live against a weight table of shape [K] or [B, K]; returns the candidates in the layout the
// kernels read (keeps_layout).
std::vector<at::Tensor> check_candidates(at::TensorList ys, at::IntArrayRef live, const at::Tensor& weights,
                                         const char* weights_name) {
  TORCH_CHECK_VALUE(!ys.empty(), "ys: expected at least one candidate tensor, got an empty list");
  TORCH_CHECK_VALUE(live.size() == ys.size(), "live: expected one index per candidate (", ys.size(), "), got ",
                    live.size());
  const auto& y0 = ys[0];
  TORCH_CHECK_TYPE(at::isFloatingType(y0.scalar_type()), "ys: expected floating-point candidates, got ",
                   y0.scalar_type());
  for (size_t j = 0; j < ys.size(); ++j) {
    TORCH_CHECK_VALUE(ys[j].sizes() == y0.sizes(), "ys: every candidate must have the shape of the first, ",
                      y0.sizes(), ", but candidate ", j, " has shape ", ys[j].sizes());
    TORCH_CHECK_TYPE(ys[j].scalar_type() == y0.scalar_type(), "ys: every candidate must have dtype ", y0.scalar_type(),
                     ", but candidate ", j, " has dtype ", ys[j].scalar_type());
    TORCH_CHECK_VALUE(ys[j].device() == y0.device(), "ys: every candidate must be on ", y0.device(), ", but candidate ",
                      j, " is on ", ys[j].device());
  }
  TORCH_CHECK_VALUE(weights.dim() == 1 || weights.dim() == 2, weights_name, ": expected shape [K] or [B, K], got ",
                    weights.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(weights.scalar_type()), weights_name, ": expected a floating-point tensor, got ",
                   weights.scalar_type());
  TORCH_CHECK_VALUE(weights.device() == y0.device(), weights_name, ": expected a tensor on ", y0.device(), ", got ",
                    weights.device());
  const int64_t K = weights.size(-1);
  if (weights.dim() == 2) {
    TORCH_CHECK_VALUE(y0.dim() >= 1 && weights.size(0) == y0.size(0), weights_name,
                      ": a [B, K] table needs B equal to the candidates' first dimension (",
                      y0.dim() >= 1 ? y0.size(0) : -1, "), got B = ", weights.size(0));
  }
  std::vector<bool> seen(K, false);
  for (int64_t k : live) {
    TORCH_CHECK_VALUE(k >= 0 && k < K && !seen[k], "live: expected distinct indices in [0, ", K, "), got ", live);
    seen[k] = true;
  }
  if (keeps_layout(ys)) return ys.vec();
  std::vector<at::Tensor> out;
  out.reserve(ys.size());
  for (const auto& y : ys) out.push_back(y.contiguous());
  return out;
}

void check_tau(double tau) {
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0, "tau: expected a finite temperature > 0, got ", tau);
}

// A [K] or [B, K] table as the kernels want it: [R, K], contiguous, in the accumulation type.
at::Tensor as_table(const at::Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous().view({-1, t.size(-1)});
}

// Picks the backend by device. Only CPU and (when built) CUDA tensors reach here through the dispatcher.
template <typename Fn>
Fn pick(const at::Tensor& t, Fn cpu, Fn cuda) {
  return t.is_cuda() ? cuda : cpu;
}

// Empty CPU copies of empty candidates, for the kernel-free path of empty CUDA tensors.
std::vector<at::Tensor> ys_cpu(const std::vector<at::Tensor>& ys) {
  std::vector<at::Tensor> out;
  for (const auto& y : ys) out.push_back(y.cpu());
  return out;
}

#ifdef SNAS_FAST_WITH_CUDA
constexpr FwdFn kFwdCuda = &mixed_op_fwd_cuda;
constexpr BwdFn kBwdCuda = &mixed_op_bwd_cuda;
#else
constexpr FwdFn kFwdCuda = nullptr;
constexpr BwdFn kBwdCuda = nullptr;
#endif

std::tuple<at::Tensor, at::Tensor> fwd(at::TensorList ys_in, at::IntArrayRef live, const at::Tensor& logits,
                                       const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& rng,
                                       bool softmax, double tau, bool hard, const char* name) {
  const auto ys = check_candidates(ys_in, live, logits, name);
  const auto acc = acc_type(ys[0].scalar_type());
  const auto table = as_table(logits, acc);
  at::Tensor noise_table, z;
  uint64_t seed = 0, offset = 0;
  if (softmax) {
    check_tau(tau);
    if (noise.has_value()) {
      TORCH_CHECK_VALUE(noise->sizes() == logits.sizes(), "noise: expected the shape of log_alpha, ", logits.sizes(),
                        ", got ", noise->sizes());
      TORCH_CHECK_VALUE(noise->device() == logits.device(), "noise: expected a tensor on ", logits.device(), ", got ",
                        noise->device());
      noise_table = as_table(*noise, acc);
    } else {
      TORCH_CHECK_TYPE(rng.has_value() && rng->device().is_cpu() && rng->scalar_type() == at::kLong && rng->numel() == 2,
                       "rng: expected a CPU int64 tensor holding (seed, offset) when noise is not given");
      const auto r = rng->contiguous();
      seed = static_cast<uint64_t>(r.const_data_ptr<int64_t>()[0]);
      offset = static_cast<uint64_t>(r.const_data_ptr<int64_t>()[1]);
    }
    z = at::empty(table.sizes(), table.options());
  }
  auto out = at::empty_like(ys[0]);  // the candidates' layout (dense: empty_like keeps the strides)
  if (out.numel() == 0 && ys[0].is_cuda()) {
    // No element to weight (a grid of zero blocks cannot be launched): z comes from the CPU kernel.
    auto z_cpu = softmax ? z.cpu() : z;
    mixed_op_fwd_cpu(ys_cpu(ys), live, table.cpu(), noise_table.defined() ? noise_table.cpu() : noise_table,
                     softmax, tau, hard, seed, offset, out.cpu(), z_cpu);
    if (softmax) z.copy_(z_cpu);
  } else {
    pick<FwdFn>(ys[0], &mixed_op_fwd_cpu, kFwdCuda)(ys, live, table, noise_table, softmax, tau, hard, seed, offset,
                                                    out, z);
  }
  if (!softmax) return {out, at::Tensor()};
  return {out, z.view(logits.sizes()).to(logits.scalar_type())};
}

std::tuple<std::vector<at::Tensor>, at::Tensor> bwd(at::TensorList ys_in, at::IntArrayRef live, const at::Tensor& w,
                                                    const at::Tensor& grad_out_in,
                                                    const c10::optional<at::Tensor>& grad_z, bool jacobian,
                                                    double tau, bool hard, const char* name) {
  const auto ys = check_candidates(ys_in, live, w, name);
  TORCH_CHECK_VALUE(grad_out_in.sizes() == ys[0].sizes(), "grad_out: expected shape ", ys[0].sizes(), ", got ",
                    grad_out_in.sizes());
  TORCH_CHECK_VALUE(grad_out_in.device() == ys[0].device(), "grad_out: expected a tensor on ", ys[0].device(), ", got ",
                    grad_out_in.device());
  if (jacobian) check_tau(tau);
  const auto acc = acc_type(ys[0].scalar_type());
  const auto table = as_table(w, acc);
  auto grad_out = grad_out_in.to(ys[0].scalar_type());
  if (grad_out.strides() != ys[0].strides()) {  // the candidates' layout (stride-0 grads are materialised)
    grad_out = at::empty_like(ys[0]).copy_(grad_out);
  }
  at::Tensor gz;
  if (grad_z.has_value()) {
    TORCH_CHECK_VALUE(grad_z->sizes() == w.sizes(), "grad_z: expected shape ", w.sizes(), ", got ", grad_z->sizes());
    TORCH_CHECK_VALUE(grad_z->device() == w.device(), "grad_z: expected a tensor on ", w.device(), ", got ",
                      grad_z->device());
    gz = as_table(*grad_z, acc);
  }
  std::vector<at::Tensor> dys;
  for (const auto& y : ys) dys.push_back(at::empty_like(y));
  auto grad_w = at::empty(table.sizes(), table.options());
  if (ys[0].numel() == 0 && ys[0].is_cuda()) {
    auto grad_w_cpu = grad_w.cpu();
    mixed_op_bwd_cpu(ys_cpu(ys), live, table.cpu(), grad_out.cpu(), gz.defined() ? gz.cpu() : gz, jacobian, tau,
                     hard, ys_cpu(dys), grad_w_cpu);
    grad_w.copy_(grad_w_cpu);
  } else {
    pick<BwdFn>(ys[0], &mixed_op_bwd_cpu, kBwdCuda)(ys, live, table, grad_out, gz, jacobian, tau, hard, dys, grad_w);
  }
  return {dys, grad_w.view(w.sizes()).to(w.scalar_type())};
}

at::Tensor mixed_op_fwd(at::TensorList ys, at::IntArrayRef live, const at::Tensor& weights) {
  return std::get<0>(fwd(ys, live, weights, c10::nullopt, c10::nullopt, false, 1.0, false, "weights"));
}

std::tuple<std::vector<at::Tensor>, at::Tensor> mixed_op_bwd(at::TensorList ys, at::IntArrayRef live,
                                                             const at::Tensor& weights, const at::Tensor& grad_out) {
  return bwd(ys, live, weights, grad_out, c10::nullopt, false, 1.0, false, "weights");
}

std::tuple<at::Tensor, at::Tensor> gumbel_mixed_op_fwd(at::TensorList ys, at::IntArrayRef live,
                                                       const at::Tensor& log_alpha, double tau,
                                                       const c10::optional<at::Tensor>& noise,
                                                       const c10::optional<at::Tensor>& rng, bool hard) {
  return fwd(ys, live, log_alpha, noise, rng, true, tau, hard, "log_alpha");
}

std::tuple<std::vector<at::Tensor>, at::Tensor> gumbel_mixed_op_bwd(at::TensorList ys, at::IntArrayRef live,
                                                                    const at::Tensor& z, double tau, bool hard,
                                                                    const at::Tensor& grad_out,
                                                                    const c10::optional<at::Tensor>& grad_z) {
  return bwd(ys, live, z, grad_out, grad_z, true, tau, hard, "z");
}

// ---------------------------------------------------------------------------------------------------------
// Autograd: each forward op's backward is its registered backward op, called through the dispatcher.
// ---------------------------------------------------------------------------------------------------------
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gradients for the arguments of forward, in order: one per candidate, then one per other argument.
variable_list grads_for(std::vector<at::Tensor> dys, const at::Tensor& dtable, size_t trailing_args) {
  variable_list grads(std::make_move_iterator(dys.begin()), std::make_move_iterator(dys.end()));
  grads.emplace_back();  // live
  grads.push_back(dtable);
  grads.resize(grads.size() + trailing_args);  // undefined: no gradient
  return grads;
}

class MixedOpFunction : public torch::autograd::Function<MixedOpFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::TensorList ys, at::IntArrayRef live,
                            const at::Tensor& weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::mixed_op_fwd", "")
                         .typed<at::Tensor(at::TensorList, at::IntArrayRef, const at::Tensor&)>();
    std::vector<at::Tensor> saved(ys.begin(), ys.end());
    saved.push_back(weights);
    ctx->save_for_backward(saved);
    ctx->saved_data["live"] = live.vec();
    return op.call(ys, live, weights);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::mixed_op_bwd", "")
                         .typed<std::tuple<std::vector<at::Tensor>, at::Tensor>(
                             at::TensorList, at::IntArrayRef, const at::Tensor&, const at::Tensor&)>();
    auto saved = ctx->get_saved_variables();
    const auto weights = saved.back();
    saved.pop_back();
    const auto live = ctx->saved_data["live"].toIntVector();
    auto [dys, dw] = op.call(saved, live, weights, grad_outputs[0]);
    return grads_for(std::move(dys), dw, 0);
  }
};

class GumbelMixedOpFunction : public torch::autograd::Function<GumbelMixedOpFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList ys, at::IntArrayRef live,
                               const at::Tensor& log_alpha, double tau, const c10::optional<at::Tensor>& noise,
                               const c10::optional<at::Tensor>& rng, bool hard) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::gumbel_mixed_op_fwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(
                             at::TensorList, at::IntArrayRef, const at::Tensor&, double,
                             const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&, bool)>();
    auto [out, z] = op.call(ys, live, log_alpha, tau, noise, rng, hard);
    std::vector<at::Tensor> saved(ys.begin(), ys.end());
    saved.push_back(z);  // the soft sample (K numbers per row), never the noise
    ctx->save_for_backward(saved);
    ctx->saved_data["live"] = live.vec();
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["hard"] = hard;
    ctx->set_materialize_grads(false);  // an unused output sends no gradient: no zeros are made for it
    return {out, z};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("snas_fast::gumbel_mixed_op_bwd", "")
                         .typed<std::tuple<std::vector<at::Tensor>, at::Tensor>(
                             at::TensorList, at::IntArrayRef, const at::Tensor&, double, bool, const at::Tensor&,
                             const c10::optional<at::Tensor>&)>();
    auto saved = ctx->get_saved_variables();
    const auto z = saved.back();
    saved.pop_back();
    const auto live = ctx->saved_data["live"].toIntVector();
    auto grad_out = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros_like(saved[0]);
    c10::optional<at::Tensor> grad_z;
    if (grad_outputs[1].defined()) grad_z = grad_outputs[1];
    auto [dys, dla] = op.call(saved, live, z, ctx->saved_data["tau"].toDouble(), ctx->saved_data["hard"].toBool(),
                              grad_out, grad_z);
    return grads_for(std::move(dys), dla, 4);  // tau, noise, rng, hard
  }
};

at::Tensor mixed_op_fwd_autograd(at::TensorList ys, at::IntArrayRef live, const at::Tensor& weights) {
  return MixedOpFunction::apply(ys, live, weights);
}

std::tuple<at::Tensor, at::Tensor> gumbel_mixed_op_fwd_autograd(at::TensorList ys, at::IntArrayRef live,
                                                                const at::Tensor& log_alpha, double tau,
                                                                const c10::optional<at::Tensor>& noise,
                                                                const c10::optional<at::Tensor>& rng, bool hard) {
  auto outs = GumbelMixedOpFunction::apply(ys, live, log_alpha, tau, noise, rng, hard);
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY(snas_fast, m) {
  // out = sum_j weights[..., live[j]] * ys[j]; weights [K] or [B, K].
  m.def("mixed_op_fwd(Tensor[] ys, int[] live, Tensor weights) -> Tensor");
  m.def("mixed_op_bwd(Tensor[] ys, int[] live, Tensor weights, Tensor grad_out) -> (Tensor[], Tensor)");
  // z = softmax((log_alpha + g) / tau), g = noise or Philox(rng); out = sum_j w[..., live[j]] * ys[j] with
  // w = hard ? one_hot(argmax z) : z. Returns (out, z) with the soft z.
  m.def(
      "gumbel_mixed_op_fwd(Tensor[] ys, int[] live, Tensor log_alpha, float tau, Tensor? noise, Tensor? rng, "
      "bool hard) -> (Tensor, Tensor)");
  m.def(
      "gumbel_mixed_op_bwd(Tensor[] ys, int[] live, Tensor z, float tau, bool hard, Tensor grad_out, "
      "Tensor? grad_z) -> (Tensor[], Tensor)");
}

TORCH_LIBRARY_IMPL(snas_fast, CPU, m) {
  m.impl("mixed_op_fwd", &mixed_op_fwd);
  m.impl("mixed_op_bwd", &mixed_op_bwd);
  m.impl("gumbel_mixed_op_fwd", &gumbel_mixed_op_fwd);
  m.impl("gumbel_mixed_op_bwd", &gumbel_mixed_op_bwd);
}

TORCH_LIBRARY_IMPL(snas_fast, Autograd, m) {
  m.impl("mixed_op_fwd", &mixed_op_fwd_autograd);
  m.impl("gumbel_mixed_op_fwd", &gumbel_mixed_op_fwd_autograd);
}

#ifdef SNAS_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snas_fast, CUDA, m) {
  m.impl("mixed_op_fwd", &mixed_op_fwd);
  m.impl("mixed_op_bwd", &mixed_op_bwd);
  m.impl("gumbel_mixed_op_fwd", &gumbel_mixed_op_fwd);
  m.impl("gumbel_mixed_op_bwd", &gumbel_mixed_op_bwd);
}
#endif

}  // namespace snas_fast

// An importable module, so `import snas_fast._C` loads the library and runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "snas_fast kernels (ops in torch.ops.snas_fast)",
                                   -1, nullptr};
  return PyModule_Create(&def);
}
