// Torch-facing entry of the fused linear log-probability on CUDA (kernel: score_cuda.cu): inputs
// checked at the boundary, the LM head applied one vocabulary chunk at a time by cuBLAS (in the
// head's dtype, as the model's own head), each chunk folded into the running log-sum-exp by the
// kernel on the current stream. Python registers it as the CUDA kernel of
// torch.ops.dposhap.linear_logprobs (python/dposhap/compose/ops.py).
#include <ATen/cuda/CUDAContext.h>
#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "score_cuda.h"

namespace {

std::tuple<at::Tensor, at::Tensor> linear_logprobs_cuda(const at::Tensor& hidden_in, const at::Tensor& weight,
                                                        const c10::optional<at::Tensor>& bias,
                                                        const at::Tensor& targets_in, int64_t chunk_v) {
  TORCH_CHECK_VALUE(hidden_in.is_cuda() && weight.is_cuda() && targets_in.is_cuda(),
                    "linear_logprobs (cuda): hidden, weight and targets must be CUDA tensors");
  TORCH_CHECK_VALUE(hidden_in.dim() == 2 && weight.dim() == 2 && hidden_in.size(1) == weight.size(1),
                    "linear_logprobs (cuda): hidden [N, H] and weight [V, H] expected, got ", hidden_in.sizes(), " and ",
                    weight.sizes());
  TORCH_CHECK_VALUE(hidden_in.scalar_type() == weight.scalar_type(), "linear_logprobs (cuda): hidden is ",
                    hidden_in.scalar_type(), " but the LM head is ", weight.scalar_type());
  TORCH_CHECK_VALUE(targets_in.scalar_type() == at::kLong && targets_in.dim() == 1 &&
                        targets_in.size(0) == hidden_in.size(0),
                    "linear_logprobs (cuda): targets must be int64 [", hidden_in.size(0), "]");
  TORCH_CHECK_VALUE(chunk_v > 0, "linear_logprobs (cuda): chunk_v must be positive, got ", chunk_v);
  int dtype;
  switch (weight.scalar_type()) {
    case at::kFloat: dtype = 0; break;
    case at::kHalf: dtype = 1; break;
    case at::kBFloat16: dtype = 2; break;
    default:
      TORCH_CHECK_VALUE(false, "linear_logprobs (cuda): the LM head must be float32, float16 or bfloat16, got ",
                        weight.scalar_type());
  }
  const int64_t rows = hidden_in.size(0), vocab = weight.size(0);
  const at::Tensor hidden = hidden_in.contiguous(), targets = targets_in.contiguous();
  if (rows > 0) {
    const auto lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < vocab, "linear_logprobs (cuda): targets must lie in [0, ", vocab, "), got [",
                      lo, ", ", hi, "]");
  }
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == vocab && bias->scalar_type() == weight.scalar_type() &&
                          bias->is_cuda(),
                      "linear_logprobs (cuda): bias must be a CUDA [", vocab, "] of the head's dtype");
  }
  auto options = hidden.options().dtype(at::kFloat);
  at::Tensor running_max = at::full({rows}, -std::numeric_limits<float>::infinity(), options);
  at::Tensor running_sum = at::zeros({rows}, options);
  at::Tensor target_logit = at::full({rows}, std::numeric_limits<float>::quiet_NaN(), options);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t first = 0; first < vocab && rows > 0; first += chunk_v) {
    const int64_t cols = std::min(chunk_v, vocab - first);
    const at::Tensor w = weight.narrow(0, first, cols);
    const at::Tensor chunk =
        bias.has_value() ? at::addmm(bias->narrow(0, first, cols), hidden, w.t()) : at::mm(hidden, w.t());
    TORCH_CHECK(chunk.stride(1) == 1, "linear_logprobs (cuda): internal: chunk not contiguous along the vocabulary");
    const cudaError_t err = dposhap::launch_fold_chunk(dtype, chunk.data_ptr(), chunk.stride(0), rows, cols, first,
                                                       targets.data_ptr<int64_t>(), running_max.data_ptr<float>(),
                                                       running_sum.data_ptr<float>(), target_logit.data_ptr<float>(),
                                                       stream);
    TORCH_CHECK(err == cudaSuccess, "linear_logprobs (cuda): kernel launch failed: ", cudaGetErrorString(err));
  }
  at::Tensor logz = running_max + running_sum.log();
  return {target_logit - logz, logz};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear_logprobs", &linear_logprobs_cuda,
        "log softmax(hidden @ weight^T + bias)[targets] and the log-normaliser on CUDA, one vocabulary chunk at a time");
}
