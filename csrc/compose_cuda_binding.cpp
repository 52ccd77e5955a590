// Torch-facing entry of the CUDA gather-form kernel (compose_cuda.cu): input checks at the
// boundary, output allocation, launch on the current stream. Python registers it, behind its
// launcher (python/dposhap/compose/cuda_backend.py), as the CUDA kernel of the op
// torch.ops.dposhap.compose_gather (python/dposhap/compose/ops.py).
#include <ATen/cuda/CUDAContext.h>
#include <torch/extension.h>

#include <tuple>

#include "compose_cuda.h"

namespace {

constexpr int64_t kMaxSlots = 64;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> compose_rows_cuda(
    const at::Tensor& logits, const at::Tensor& rows, const at::Tensor& coef, const at::Tensor& temperature,
    const c10::optional<at::Tensor>& targets, const c10::optional<at::Tensor>& key_a,
    const c10::optional<at::Tensor>& key_b, bool want_raw, bool want_logprobs, int64_t top_k) {
  TORCH_CHECK(logits.is_cuda(), "compose (cuda): logits must be a CUDA tensor");
  TORCH_CHECK(logits.dim() == 2 && logits.stride(1) == 1, "compose (cuda): logits must be [T, V] with unit stride in V");
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kLong && rows.is_contiguous(),
              "compose (cuda): rows must be a contiguous int64 [M, A]");
  TORCH_CHECK(coef.sizes() == rows.sizes() && coef.scalar_type() == at::kFloat && coef.is_contiguous(),
              "compose (cuda): coef must be a contiguous float32 [M, A] like rows");
  const int64_t m = rows.size(0);
  TORCH_CHECK(temperature.numel() == m && temperature.scalar_type() == at::kFloat,
              "compose (cuda): temperature must be float32 [M]");
  TORCH_CHECK((coef != 0).sum(1).max().item<int64_t>() <= kMaxSlots || m == 0,
              "compose (cuda): at most ", kMaxSlots, " participating rows per output row");
  for (const auto* t : {&rows, &coef, &temperature}) {
    TORCH_CHECK(t->device() == logits.device(), "compose (cuda): all tensors must be on the logits' device");
  }
  int dtype;
  switch (logits.scalar_type()) {
    case at::kFloat: dtype = 0; break;
    case at::kHalf: dtype = 1; break;
    case at::kBFloat16: dtype = 2; break;
    default: TORCH_CHECK(false, "compose (cuda): logits must be float32, float16 or bfloat16, got ", logits.scalar_type());
  }
  const int64_t vocab = logits.size(1);
  TORCH_CHECK(top_k == 0 || (key_a.has_value() && key_b.has_value() && top_k > 0 && top_k < vocab),
              "compose (cuda): top_k must be 0 (whole vocabulary) or in [1, V) with V = ", vocab,
              ", and needs the noise keys of sampling; got ", top_k);
  auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor logz = at::empty({m}, f32);
  at::Tensor raw = want_raw ? at::empty({m}, f32) : at::Tensor();
  at::Tensor target = targets.has_value() ? at::empty({m}, f32) : at::Tensor();
  at::Tensor sample = key_a.has_value() ? at::empty({m}, logits.options().dtype(at::kLong)) : at::Tensor();
  at::Tensor logprobs = want_logprobs ? at::empty({m, vocab}, f32) : at::Tensor();
  const auto stream = at::cuda::getCurrentCUDAStream(logits.device().index());
  const cudaError_t err = dposhap::launch_compose_rows(
      dtype, logits.data_ptr(), logits.stride(0), rows.data_ptr<int64_t>(), coef.data_ptr<float>(),
      static_cast<int>(rows.size(1)), temperature.contiguous().data_ptr<float>(),
      targets.has_value() ? targets->contiguous().data_ptr<int64_t>() : nullptr,
      key_a.has_value() ? key_a->contiguous().data_ptr<int64_t>() : nullptr,
      key_b.has_value() ? key_b->contiguous().data_ptr<int64_t>() : nullptr, m, vocab, top_k, logz.data_ptr<float>(),
      want_raw ? raw.data_ptr<float>() : nullptr, targets.has_value() ? target.data_ptr<float>() : nullptr,
      key_a.has_value() ? sample.data_ptr<int64_t>() : nullptr, want_logprobs ? logprobs.data_ptr<float>() : nullptr,
      stream.stream());
  TORCH_CHECK(err == cudaSuccess, "compose (cuda): kernel launch failed: ", cudaGetErrorString(err));
  return {logz, raw, target, sample, logprobs};
}

int logits_code(const at::Tensor& x, const char* name) {
  switch (x.scalar_type()) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default: TORCH_CHECK(false, "compose (cuda): ", name, " must be float32, float16 or bfloat16, got ", x.scalar_type());
  }
}

// The dense form: ref [R, V] and sources [R, n, V] read in place (unit stride along V required),
// float32 weights [R, n] and temperature [R]. Returns float32 logprobs [R, V] and logz [R] (NaN for
// a row with NaN or +inf in a participating input, -inf for a row masked everywhere).
std::tuple<at::Tensor, at::Tensor> compose_dense_cuda(const at::Tensor& ref, const at::Tensor& sources,
                                                      const at::Tensor& weights, const at::Tensor& temperature) {
  TORCH_CHECK(ref.is_cuda() && sources.is_cuda(), "compose (cuda): ref and sources must be CUDA tensors");
  TORCH_CHECK(ref.dim() == 2 && sources.dim() == 3, "compose (cuda): ref must be [R, V] and sources [R, n, V]");
  const int64_t r = ref.size(0), vocab = ref.size(1), n = sources.size(1);
  TORCH_CHECK(sources.size(0) == r && sources.size(2) == vocab, "compose (cuda): sources must be [R, n, V] like ref");
  TORCH_CHECK(ref.stride(1) == 1 && sources.stride(2) == 1, "compose (cuda): ref and sources need unit stride in V");
  TORCH_CHECK(ref.scalar_type() == sources.scalar_type(), "compose (cuda): ref and sources must share a dtype");
  TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.is_contiguous() && weights.dim() == 2 &&
                  weights.size(0) == r && weights.size(1) == n,
              "compose (cuda): weights must be a contiguous float32 [R, n]");
  TORCH_CHECK(temperature.scalar_type() == at::kFloat && temperature.is_contiguous() && temperature.numel() == r,
              "compose (cuda): temperature must be a contiguous float32 [R]");
  TORCH_CHECK(r <= 65535, "compose (cuda): at most 65535 rows per call, got ", r);
  for (const auto* t : {&sources, &weights, &temperature}) {
    TORCH_CHECK(t->device() == ref.device(), "compose (cuda): all tensors must be on ref's device");
  }
  const int dtype = logits_code(ref, "ref");
  auto f32 = ref.options().dtype(at::kFloat);
  at::Tensor logprobs = at::empty({r, vocab}, f32);
  at::Tensor logz = at::empty({r}, f32);
  const int64_t chunks = dposhap::dense_chunks(vocab);
  at::Tensor part_max = at::empty({r, chunks}, f32);
  at::Tensor part_sum = at::empty({r, chunks}, f32);
  at::Tensor part_bad = at::empty({r, chunks}, ref.options().dtype(at::kInt));
  const auto stream = at::cuda::getCurrentCUDAStream(ref.device().index());
  const cudaError_t err = dposhap::launch_compose_dense(
      dtype, ref.data_ptr(), ref.stride(0), sources.data_ptr(), sources.stride(0), sources.stride(1),
      static_cast<int>(n), weights.data_ptr<float>(), temperature.data_ptr<float>(), r, vocab,
      logprobs.data_ptr<float>(), logz.data_ptr<float>(), part_max.data_ptr<float>(), part_sum.data_ptr<float>(),
      part_bad.data_ptr<int>(), stream.stream());
  TORCH_CHECK(err == cudaSuccess, "compose (cuda): dense kernel launch failed: ", cudaGetErrorString(err));
  return {logprobs, logz};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("compose_rows", &compose_rows_cuda, "Gather-form language-model arithmetic on CUDA");
  m.def("compose_dense", &compose_dense_cuda, "Dense-form language-model arithmetic on CUDA, inputs read in place");
}
