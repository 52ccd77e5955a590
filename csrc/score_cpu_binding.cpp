// Torch-facing entry of the fused linear log-probability on the CPU (kernel: score_cpu.cpp):
// inputs checked at the boundary, the LM head applied one vocabulary chunk at a time (the
// chunk's logits in the head's dtype, as the model's own head computes them), each chunk folded
// into the running log-sum-exp by the kernel. Python registers it as the CPU kernel of
// torch.ops.dposhap.linear_logprobs (python/dposhap/compose/ops.py).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "score_cpu.h"

namespace {

dposhap::score::LogitsDtype head_dtype(const torch::Tensor& weight) {
  switch (weight.scalar_type()) {
    case at::kFloat: return dposhap::score::LogitsDtype::kFloat32;
    case at::kHalf: return dposhap::score::LogitsDtype::kFloat16;
    case at::kBFloat16: return dposhap::score::LogitsDtype::kBFloat16;
    default:
      TORCH_CHECK_VALUE(false, "the LM head must be float32, float16 or bfloat16 for the cpp backend, got ",
                        weight.scalar_type(), " (float64 runs on the torch backend)");
  }
}

std::tuple<torch::Tensor, torch::Tensor> linear_logprobs_cpu(const torch::Tensor& hidden_in,
                                                             const torch::Tensor& weight_in,
                                                             const c10::optional<torch::Tensor>& bias_in,
                                                             const torch::Tensor& targets_in, int64_t chunk_v) {
  TORCH_CHECK_VALUE(hidden_in.dim() == 2, "hidden must be 2-d [tokens, hidden], got shape ", hidden_in.sizes());
  TORCH_CHECK_VALUE(weight_in.dim() == 2, "weight must be 2-d [vocab, hidden], got shape ", weight_in.sizes());
  TORCH_CHECK_VALUE(hidden_in.size(1) == weight_in.size(1), "hidden has ", hidden_in.size(1),
                    " features but the LM head takes ", weight_in.size(1));
  TORCH_CHECK_VALUE(hidden_in.device().is_cpu() && weight_in.device().is_cpu() && targets_in.device().is_cpu(),
                    "hidden, weight and targets must be on the CPU for the cpp backend");
  const auto dtype = head_dtype(weight_in);
  TORCH_CHECK_VALUE(hidden_in.scalar_type() == weight_in.scalar_type(), "hidden is ", hidden_in.scalar_type(),
                    " but the LM head is ", weight_in.scalar_type(), "; cast hidden to the head's dtype");
  TORCH_CHECK_VALUE(targets_in.scalar_type() == at::kLong && targets_in.dim() == 1 &&
                        targets_in.size(0) == hidden_in.size(0),
                    "targets must be int64 [", hidden_in.size(0), "], got ", targets_in.scalar_type(), " ",
                    targets_in.sizes());
  TORCH_CHECK_VALUE(chunk_v > 0, "chunk_v must be positive, got ", chunk_v);
  const int64_t rows = hidden_in.size(0), vocab = weight_in.size(0);
  const torch::Tensor targets = targets_in.contiguous();
  if (rows > 0) {
    const auto lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < vocab, "targets must lie in [0, ", vocab, "), got values in [", lo, ", ", hi,
                      "]");
  }
  c10::optional<torch::Tensor> bias;
  if (bias_in.has_value()) {
    TORCH_CHECK_VALUE(bias_in->dim() == 1 && bias_in->size(0) == vocab && bias_in->scalar_type() == weight_in.scalar_type(),
                      "bias must be [", vocab, "] of the head's dtype, got ", bias_in->scalar_type(), " ",
                      bias_in->sizes());
    bias = bias_in->contiguous();
  }
  const torch::Tensor hidden = hidden_in.contiguous();
  auto options = hidden.options().dtype(at::kFloat);
  torch::Tensor running_max = torch::full({rows}, -std::numeric_limits<float>::infinity(), options);
  torch::Tensor running_sum = torch::zeros({rows}, options);
  torch::Tensor target_logit = torch::full({rows}, std::numeric_limits<float>::quiet_NaN(), options);
  for (int64_t first = 0; first < vocab && rows > 0; first += chunk_v) {
    const int64_t cols = std::min(chunk_v, vocab - first);
    const torch::Tensor w = weight_in.narrow(0, first, cols);
    const torch::Tensor chunk = bias.has_value() ? at::addmm(bias->narrow(0, first, cols), hidden, w.t())
                                                 : at::mm(hidden, w.t());
    dposhap::score::ChunkUpdate update{dtype,
                                       chunk.data_ptr(),
                                       chunk.stride(0),
                                       rows,
                                       cols,
                                       first,
                                       targets.data_ptr<int64_t>(),
                                       running_max.data_ptr<float>(),
                                       running_sum.data_ptr<float>(),
                                       target_logit.data_ptr<float>(),
                                       at::get_num_threads()};
    TORCH_CHECK(chunk.stride(1) == 1, "internal: the chunk's logits are not contiguous along the vocabulary");
    dposhap::score::fold_chunk(update);
  }
  torch::Tensor logz = running_max + running_sum.log();
  return {target_logit - logz, logz};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "dposhap fused linear log-probability, C++ CPU backend (torch.ops.dposhap.linear_logprobs)";
  module.def("linear_logprobs", &linear_logprobs_cpu,
             "log softmax(hidden @ weight^T + bias)[targets] and the log-normaliser, one vocabulary chunk at a time");
}
