// The CUDA kernel of the fused linear log-probability (score_cuda.cu), as its binding
// (score_cuda_binding.cpp) launches it: raw device pointers, no torch types.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace dposhap {

// One block per row r in [0, rows): folds the chunk logits[r, :cols] (of `dtype`: 0 = float32,
// 1 = float16, 2 = bfloat16; unit stride along the vocabulary, row stride `stride`) into the
// running log-sum-exp (running_max[r], running_sum[r] = sum exp(logit - running_max[r])) and
// writes target_logit[r] when targets[r] - first_col lies in [0, cols). Every computation is
// float32; the state starts at (-inf, 0).
cudaError_t launch_fold_chunk(int dtype, const void* logits, int64_t stride, int64_t rows, int64_t cols,
                              int64_t first_col, const int64_t* targets, float* running_max, float* running_sum,
                              float* target_logit, cudaStream_t stream);

}  // namespace dposhap
