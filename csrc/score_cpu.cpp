// The C++ CPU kernel of the fused linear log-probability (kernel code only: the torch-facing
// checks, the chunked projection and the binding are score_cpu_binding.cpp). Each row of a chunk
// is read once: its maximum, then the sum of exp against the new running maximum, the old sum
// rescaled (an online log-sum-exp). Every computation is float32.
#include "score_cpu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "compose_cpu_math.h"

namespace dposhap {
namespace score {

namespace {

using compose::kNegInf;

void fold_row(const float* x, int64_t cols, float* running_max, float* running_sum) {
  const float chunk_max = compose::row_max(x, cols);
  const float old_max = *running_max;
  const float new_max = chunk_max > old_max ? chunk_max : old_max;
  if (new_max == kNegInf) return;  // masked everywhere so far
  const float rescaled = old_max == kNegInf ? 0.0f : *running_sum * std::exp(old_max - new_max);
  *running_max = new_max;
  *running_sum = rescaled + compose::row_sum_exp(x, cols, new_max);
}

template <typename scalar_t>
void fold(const ChunkUpdate& u) {
  const auto* logits = static_cast<const scalar_t*>(u.logits);
#pragma omp parallel num_threads(u.num_threads)
  {
    std::vector<float> buffer(std::is_same<scalar_t, float>::value ? 0 : u.cols);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < u.rows; ++r) {
      const scalar_t* row = logits + r * u.row_stride;
      const float* x;
      if constexpr (std::is_same<scalar_t, float>::value) {
        x = row;
      } else {
        compose::to_float(row, buffer.data(), u.cols);
        x = buffer.data();
      }
      const int64_t t = u.targets[r] - u.first_col;
      if (t >= 0 && t < u.cols) u.target_logit[r] = x[t];
      fold_row(x, u.cols, u.running_max + r, u.running_sum + r);
    }
  }
}

}  // namespace

void fold_chunk(const ChunkUpdate& update) {
  if (update.rows == 0 || update.cols == 0) return;
  switch (update.dtype) {
    case LogitsDtype::kFloat32: fold<float>(update); break;
    case LogitsDtype::kFloat16: fold<c10::Half>(update); break;
    case LogitsDtype::kBFloat16: fold<c10::BFloat16>(update); break;
  }
}

}  // namespace score
}  // namespace dposhap
