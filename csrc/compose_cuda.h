// The CUDA kernel of the gather form (compose_cuda.cu), as its binding
// (compose_cuda_binding.cpp) launches it: raw device pointers, no torch types.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace dposhap {

// One block per output row m in [0, n_out): combines the rows[m, :] of `logits` ([T, vocab] of
// `dtype`: 0 = float32, 1 = float16, 2 = bfloat16, unit stride along the vocabulary) with the
// coefficients coef[m, :] (n_slots each; rows of coefficient 0 are never read) at temperature
// temperature[m], and writes the log-normaliser (always), the untempered log-sum-exp for the
// correction (raw_lse), the target log-probability, the Gumbel-max sample with the noise keys
// (key_a, key_b) and the log-probabilities; optional outputs and their inputs may be null.
// top_k: 0 samples over the whole vocabulary, else 0 < top_k < vocab (and sample non-null).
cudaError_t launch_compose_rows(int dtype, const void* logits, int64_t stride, const int64_t* rows,
                                const float* coef, int n_slots, const float* temperature, const int64_t* targets,
                                const int64_t* key_a, const int64_t* key_b, int64_t n_out, int64_t vocab,
                                int64_t top_k, float* logz, float* raw_lse, float* target, int64_t* sample,
                                float* logprobs, cudaStream_t stream);

// The dense form: row m composes ref[m] ([r_rows, vocab], row stride stride_ref) with sources[m, :]
// ([r_rows, n_sources, vocab], strides stride_src_row and stride_src_source), all with unit stride
// along the vocabulary, read in place. weights [r_rows, n_sources] and temperature [r_rows] are
// float32. Writes logprobs [r_rows, vocab] and logz [r_rows] (NaN: a participating row holds NaN or
// +inf; -inf: the row is masked everywhere). part_max, part_sum and part_bad are scratch of
// r_rows * dense_chunks(vocab) entries. r_rows <= 65535.
int64_t dense_chunks(int64_t vocab);
cudaError_t launch_compose_dense(int dtype, const void* ref, int64_t stride_ref, const void* sources,
                                 int64_t stride_src_row, int64_t stride_src_source, int n_sources,
                                 const float* weights, const float* temperature, int64_t r_rows, int64_t vocab,
                                 float* logprobs, float* logz, float* part_max, float* part_sum, int* part_bad,
                                 cudaStream_t stream);

}  // namespace dposhap
