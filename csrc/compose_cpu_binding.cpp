// Torch-facing entry of the C++ CPU gather kernel (compose_cpu.cpp): every input checked at the
// boundary with a message that says what was wrong and where, the outputs allocated, the kernel
// run, its errors turned into the reference's messages. Python registers it as the CPU kernel of
// the op torch.ops.dposhap.compose_gather (python/dposhap/compose/ops.py).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <tuple>

#include "compose_cpu.h"

namespace {

using dposhap::compose::GatherError;

void check_index(const torch::Tensor& x, const char* name, int64_t ndim) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kLong, name, " must be int64, got ", x.scalar_type(),
                    "; convert it with .long()");
  TORCH_CHECK_VALUE(x.dim() == ndim, name, " must be ", ndim, "-d, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.device().is_cpu(), name, " must be on the CPU for the cpp backend, got ", x.device());
}

dposhap::compose::LogitsDtype logits_dtype(const torch::Tensor& logits) {
  switch (logits.scalar_type()) {
    case at::kFloat: return dposhap::compose::LogitsDtype::kFloat32;
    case at::kHalf: return dposhap::compose::LogitsDtype::kFloat16;
    case at::kBFloat16: return dposhap::compose::LogitsDtype::kBFloat16;
    default:
      TORCH_CHECK_VALUE(false, "logits must be float32, float16 or bfloat16 for the cpp backend, got ",
                        logits.scalar_type(), " (float64 runs on the torch reference)");
  }
}

void raise_row_error(const GatherError& error) {
  const int64_t m = error.output_row;
  if (error.kind == GatherError::Kind::kNotFinite) {
    std::ostringstream role;
    if (error.member < 0) {
      role << "the reference";
    } else {
      role << "member " << error.member << " (src_index[" << m << ", " << error.member << "])";
    }
    TORCH_CHECK_VALUE(false, "logits row ", error.logits_row, " contains NaN or +inf; it is ", role.str(),
                      " of output row ", m,
                      ". Logits must be finite or -inf (masked tokens): check the forward pass that produced them");
  }
  TORCH_CHECK_VALUE(error.kind != GatherError::Kind::kAllMasked, "output row ", m,
                    ": the combined logits are -inf for every token (its reference and members mask out the whole "
                    "vocabulary between them); leave at least one token unmasked in every participating row");
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> compose_gather_cpu(
    const torch::Tensor& logits_in, const torch::Tensor& ref_index_in, const torch::Tensor& src_index_in,
    const torch::Tensor& src_weight_in, const torch::Tensor& temperature_in,
    const c10::optional<torch::Tensor>& targets_in, const torch::Tensor& stream_id_in, const torch::Tensor& step_in,
    int64_t seed, int64_t top_k, bool want_logprobs, bool want_logz, bool want_correction, bool want_target,
    bool want_sample) {
  TORCH_CHECK_VALUE(logits_in.device().is_cpu(), "logits must be on the CPU for the cpp backend, got ",
                    logits_in.device());
  TORCH_CHECK_VALUE(logits_in.dim() == 2, "logits must be 2-d [T, V], got shape ", logits_in.sizes());
  const auto dtype = logits_dtype(logits_in);
  const int64_t n_rows = logits_in.size(0);
  const int64_t vocab = logits_in.size(1);
  TORCH_CHECK_VALUE(vocab > 0, "logits has an empty vocabulary (V = 0)");
  check_index(ref_index_in, "ref_index", 1);
  check_index(src_index_in, "src_index", 2);
  const int64_t m_rows = ref_index_in.size(0);
  const int64_t j_cols = src_index_in.size(1);
  TORCH_CHECK_VALUE(src_index_in.size(0) == m_rows, "src_index has ", src_index_in.size(0),
                    " rows but ref_index has M = ", m_rows, "; give one per output row");
  TORCH_CHECK_VALUE(src_weight_in.device().is_cpu(), "src_weight must be on the CPU, got ", src_weight_in.device());
  TORCH_CHECK_VALUE(at::isFloatingType(src_weight_in.scalar_type()), "src_weight must be floating, got ",
                    src_weight_in.scalar_type());
  TORCH_CHECK_VALUE(src_weight_in.sizes() == src_index_in.sizes(), "src_weight has shape ", src_weight_in.sizes(),
                    " but src_index has ", src_index_in.sizes(), "; give one weight per member slot");
  TORCH_CHECK_VALUE(temperature_in.device().is_cpu() && temperature_in.dim() == 1 &&
                        temperature_in.size(0) == m_rows && at::isFloatingType(temperature_in.scalar_type()),
                    "temperature must be a floating CPU tensor [M] with M = ", m_rows, ", got shape ",
                    temperature_in.sizes());
  check_index(stream_id_in, "stream_id", 1);
  check_index(step_in, "step", 1);
  TORCH_CHECK_VALUE(stream_id_in.size(0) == m_rows, "stream_id has ", stream_id_in.size(0),
                    " rows but ref_index has M = ", m_rows);
  TORCH_CHECK_VALUE(step_in.size(0) == m_rows, "step has ", step_in.size(0), " rows but ref_index has M = ", m_rows);

  const auto ref_index = ref_index_in.contiguous();
  const auto src_index = src_index_in.contiguous();
  const auto src_weight = src_weight_in.to(at::kFloat).contiguous();
  const auto temperature = temperature_in.to(at::kFloat).contiguous();
  const auto stream_id = stream_id_in.contiguous();
  const auto step = step_in.contiguous();
  const int64_t* ref = ref_index.data_ptr<int64_t>();
  const int64_t* src = src_index.data_ptr<int64_t>();
  const float* weight = src_weight.data_ptr<float>();
  const float* temp = temperature.data_ptr<float>();

  for (int64_t m = 0; m < m_rows; ++m) {
    TORCH_CHECK_VALUE(ref[m] >= 0 && ref[m] < n_rows, "ref_index[", m, "] = ", ref[m],
                      " is out of range: logits has ", n_rows, " rows, so it must be in [0, ", n_rows, ")");
  }
  for (int64_t i = 0; i < m_rows * j_cols; ++i) {
    TORCH_CHECK_VALUE(src[i] >= -1 && src[i] < n_rows, "src_index[", i / j_cols, ", ", i % j_cols, "] = ", src[i],
                      " is out of range: logits has ", n_rows, " rows, so a member must be in [0, ", n_rows,
                      "), or -1 for padding");
    TORCH_CHECK_VALUE(src[i] < 0 || std::isfinite(weight[i]), "src_weight[", i / j_cols, ", ", i % j_cols, "] = ",
                      weight[i], " is not finite; weights must be finite numbers");
  }
  for (int64_t m = 0; m < m_rows; ++m) {
    TORCH_CHECK_VALUE(std::isfinite(temp[m]) && temp[m] > 0.0f, "temperature of output row ", m, " is ", temp[m],
                      "; it must be finite and > 0 (for greedy decoding sample with top_k=1)");
  }
  torch::Tensor targets;
  if (want_target) {
    TORCH_CHECK_VALUE(targets_in.has_value(),
                      "the \"target_logprob\" output needs targets: pass targets=<int64 tensor [M]>");
    check_index(*targets_in, "targets", 1);
    TORCH_CHECK_VALUE(targets_in->size(0) == m_rows, "targets has ", targets_in->size(0),
                      " rows but ref_index has M = ", m_rows, "; give one per output row");
    targets = targets_in->contiguous();
    const int64_t* t = targets.data_ptr<int64_t>();
    for (int64_t m = 0; m < m_rows; ++m) {
      TORCH_CHECK_VALUE(t[m] >= 0 && t[m] < vocab, "targets[", m, "] = ", t[m],
                        " is out of range: it must be a token in [0, ", vocab, ")");
    }
  }

  // rows must be contiguous along the vocabulary; any row stride is fine
  const auto logits = logits_in.stride(1) == 1 ? logits_in : logits_in.contiguous();

  const auto f32 = torch::TensorOptions().dtype(at::kFloat);
  const auto i64 = torch::TensorOptions().dtype(at::kLong);
  torch::Tensor logprobs = want_logprobs ? torch::empty({m_rows, vocab}, f32) : torch::empty({0}, f32);
  torch::Tensor logz = want_logz ? torch::empty({m_rows}, f32) : torch::empty({0}, f32);
  torch::Tensor correction = want_correction ? torch::empty({m_rows}, f32) : torch::empty({0}, f32);
  torch::Tensor target_logprob = want_target ? torch::empty({m_rows}, f32) : torch::empty({0}, f32);
  torch::Tensor sample = want_sample ? torch::empty({m_rows}, i64) : torch::empty({0}, i64);

  const dposhap::compose::GatherInputs inputs{dtype,
                                              logits.data_ptr(),
                                              logits.stride(0),
                                              n_rows,
                                              vocab,
                                              ref,
                                              src,
                                              weight,
                                              m_rows,
                                              j_cols,
                                              temp,
                                              want_target ? targets.data_ptr<int64_t>() : nullptr,
                                              static_cast<uint64_t>(seed),
                                              stream_id.data_ptr<int64_t>(),
                                              step.data_ptr<int64_t>(),
                                              top_k,
                                              std::max(1, at::get_num_threads())};
  const dposhap::compose::GatherOutputs outputs{
      want_logprobs ? logprobs.data_ptr<float>() : nullptr, want_logz ? logz.data_ptr<float>() : nullptr,
      want_correction ? correction.data_ptr<float>() : nullptr,
      want_target ? target_logprob.data_ptr<float>() : nullptr, want_sample ? sample.data_ptr<int64_t>() : nullptr};
  raise_row_error(dposhap::compose::compose_gather_rows(inputs, outputs));
  return {logprobs, logz, correction, target_logprob, sample};
}

// The dense form: ref [R, V] and sources [R, n, V] read in place (any strides but the
// vocabulary's, which must be 1: such a tensor is copied contiguous), weights [R, n],
// temperature [R]. Returns log-probabilities [R, V] and the log-normaliser [R] (float32).
std::tuple<torch::Tensor, torch::Tensor> compose_dense_cpu(const torch::Tensor& ref_in, const torch::Tensor& sources_in,
                                                           const torch::Tensor& weights_in,
                                                           const torch::Tensor& temperature_in) {
  TORCH_CHECK_VALUE(ref_in.device().is_cpu() && sources_in.device().is_cpu(),
                    "ref and sources must be on the CPU for the cpp backend, got ", ref_in.device(), " and ",
                    sources_in.device());
  TORCH_CHECK_VALUE(ref_in.dim() == 2, "ref must be 2-d [R, V], got shape ", ref_in.sizes());
  TORCH_CHECK_VALUE(sources_in.dim() == 3, "sources must be 3-d [R, n, V], got shape ", sources_in.sizes());
  const auto dtype = logits_dtype(ref_in);
  TORCH_CHECK_VALUE(sources_in.scalar_type() == ref_in.scalar_type(), "ref is ", ref_in.scalar_type(),
                    " but sources is ", sources_in.scalar_type(), "; pass both in one dtype");
  const int64_t r_rows = ref_in.size(0), vocab = ref_in.size(1), n = sources_in.size(1);
  TORCH_CHECK_VALUE(vocab > 0, "ref has an empty vocabulary (V = 0)");
  TORCH_CHECK_VALUE(sources_in.size(0) == r_rows && sources_in.size(2) == vocab, "sources must be [R, n, V] = [",
                    r_rows, ", n, ", vocab, "] to match ref, got ", sources_in.sizes());
  TORCH_CHECK_VALUE(weights_in.device().is_cpu() && at::isFloatingType(weights_in.scalar_type()) &&
                        weights_in.dim() == 2 && weights_in.size(0) == r_rows && weights_in.size(1) == n,
                    "weights must be a floating CPU tensor [R, n] = [", r_rows, ", ", n, "], got ",
                    weights_in.scalar_type(), " ", weights_in.sizes());
  TORCH_CHECK_VALUE(temperature_in.device().is_cpu() && temperature_in.dim() == 1 &&
                        temperature_in.size(0) == r_rows && at::isFloatingType(temperature_in.scalar_type()),
                    "temperature must be a floating CPU tensor [R] with R = ", r_rows, ", got shape ",
                    temperature_in.sizes());
  const auto weights = weights_in.to(at::kFloat).contiguous();
  const auto temperature = temperature_in.to(at::kFloat).contiguous();
  const float* w = weights.data_ptr<float>();
  const float* temp = temperature.data_ptr<float>();
  for (int64_t i = 0; i < r_rows * n; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(w[i]), "weights[", i / n, ", ", i % n, "] = ", w[i],
                      " is not finite; weights must be finite numbers");
  }
  for (int64_t m = 0; m < r_rows; ++m) {
    TORCH_CHECK_VALUE(std::isfinite(temp[m]) && temp[m] > 0.0f, "temperature of row ", m, " is ", temp[m],
                      "; it must be finite and > 0");
  }
  // in place through the strides; only a vocabulary stride other than 1 costs a copy
  const auto ref = ref_in.stride(1) == 1 || vocab == 1 ? ref_in : ref_in.contiguous();
  const auto sources = sources_in.stride(2) == 1 || vocab == 1 ? sources_in : sources_in.contiguous();
  const auto f32 = torch::TensorOptions().dtype(at::kFloat);
  torch::Tensor logprobs = torch::empty({r_rows, vocab}, f32);
  torch::Tensor logz = torch::empty({r_rows}, f32);
  const dposhap::compose::DenseInputs inputs{dtype,          ref.data_ptr(),          ref.stride(0),
                                             sources.data_ptr(), sources.stride(0),   sources.stride(1),
                                             r_rows,         n,                       vocab,
                                             w,              temp,                    std::max(1, at::get_num_threads())};
  const auto error = dposhap::compose::compose_dense_rows(inputs, logprobs.data_ptr<float>(), logz.data_ptr<float>());
  if (error.kind == GatherError::Kind::kNotFinite) {
    std::ostringstream where;
    if (error.member < 0) {
      where << "ref[" << error.row << "]";
    } else {
      where << "sources[" << error.row << ", " << error.member << "]";
    }
    TORCH_CHECK_VALUE(false, where.str(),
                      " contains NaN or +inf; logits must be finite or -inf (masked tokens): check the forward pass "
                      "that produced them");
  }
  TORCH_CHECK_VALUE(error.kind != GatherError::Kind::kAllMasked, "row ", error.row,
                    ": the combined logits are -inf for every token (its reference and sources mask out the whole "
                    "vocabulary between them); leave at least one token unmasked");
  return {logprobs, logz};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "dposhap compose kernels, C++ CPU backend (the CPU kernel of torch.ops.dposhap.compose_gather)";
  module.def("compose_gather", &compose_gather_cpu,
             "Gather-form language-model arithmetic on the CPU; the arguments and results of "
             "torch.ops.dposhap.compose_gather");
  module.def("compose_dense", &compose_dense_cpu,
             "Dense-form language-model arithmetic on the CPU, ref [R, V] and sources [R, n, V] read in place; "
             "the CPU kernel of torch.ops.dposhap.compose_dense");
}
