// The CUDA kernel of the fused linear log-probability: the chunk's logits come from cuBLAS (the
// binding, score_cuda_binding.cpp), this kernel folds them into a running log-sum-exp per row in
// one read of the chunk, so no [tokens, vocab] float32 tensor exists. Semantics: the plain
// reference python/dposhap/compose/head.py.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math_constants.h>

#include "score_cuda.h"

namespace dposhap {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// (m, s) <- the log-sum-exp pair of the union of two parts, each s = sum exp(x - m).
__device__ __forceinline__ void merge(float& m, float& s, float other_m, float other_s) {
  const float top = fmaxf(m, other_m);
  if (top == -CUDART_INF_F) return;  // both empty or masked everywhere
  s = (m == -CUDART_INF_F ? 0.0f : s * expf(m - top)) + (other_m == -CUDART_INF_F ? 0.0f : other_s * expf(other_m - top));
  m = top;
}

template <typename T>
__global__ void fold_chunk_kernel(const T* __restrict__ logits, int64_t stride, int64_t cols, int64_t first_col,
                                  const int64_t* __restrict__ targets, float* __restrict__ running_max,
                                  float* __restrict__ running_sum, float* __restrict__ target_logit) {
  const int64_t r = blockIdx.x;
  const T* row = logits + r * stride;
  float m = -CUDART_INF_F, s = 0.0f;
  for (int64_t v = threadIdx.x; v < cols; v += blockDim.x) {
    const float x = load(row + v);
    if (x > m) {
      s = (m == -CUDART_INF_F ? 0.0f : s * expf(m - x)) + 1.0f;
      m = x;
    } else if (x != -CUDART_INF_F) {
      s += expf(x - m);  // NaN propagates, as in the reference
    }
  }
  __shared__ float shared_m[kThreads];
  __shared__ float shared_s[kThreads];
  shared_m[threadIdx.x] = m;
  shared_s[threadIdx.x] = s;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      float mm = shared_m[threadIdx.x], ss = shared_s[threadIdx.x];
      merge(mm, ss, shared_m[threadIdx.x + half], shared_s[threadIdx.x + half]);
      shared_m[threadIdx.x] = mm;
      shared_s[threadIdx.x] = ss;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float mm = running_max[r], ss = running_sum[r];
    merge(mm, ss, shared_m[0], shared_s[0]);
    running_max[r] = mm;
    running_sum[r] = ss;
    const int64_t t = targets[r] - first_col;
    if (t >= 0 && t < cols) target_logit[r] = load(row + t);
  }
}

template <typename T>
cudaError_t launch(const void* logits, int64_t stride, int64_t rows, int64_t cols, int64_t first_col,
                   const int64_t* targets, float* running_max, float* running_sum, float* target_logit,
                   cudaStream_t stream) {
  fold_chunk_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), stride, cols, first_col, targets, running_max, running_sum, target_logit);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fold_chunk(int dtype, const void* logits, int64_t stride, int64_t rows, int64_t cols,
                              int64_t first_col, const int64_t* targets, float* running_max, float* running_sum,
                              float* target_logit, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  switch (dtype) {
    case 0: return launch<float>(logits, stride, rows, cols, first_col, targets, running_max, running_sum, target_logit, stream);
    case 1: return launch<__half>(logits, stride, rows, cols, first_col, targets, running_max, running_sum, target_logit, stream);
    case 2:
      return launch<__nv_bfloat16>(logits, stride, rows, cols, first_col, targets, running_max, running_sum,
                                   target_logit, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace dposhap
