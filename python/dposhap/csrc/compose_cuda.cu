// CUDA kernels of the gather form of language-model arithmetic (dposhap.compose).
//
// Device code only, on raw pointers: no torch headers, so that the file compiles in seconds
// and can be compile-checked on machines without a GPU. The torch-facing launcher and the
// input checks live in compose_cuda_binding.cpp.
//
// One block per output row m. The threads stride over the vocabulary; each combines the
// participating rows (c = sum_a coef_a l_a / T, a token is -inf as soon as a participating row
// is -inf there, rows with coefficient 0 are never read), keeps an online log-sum-exp of c and
// of the untempered combination (for the sequence-level correction), the target's logit and
// the Gumbel-max argmax with the counter-based noise of dposhap.compose.noise; the block then
// reduces them. Conventions and noise are those of dposhap/compose/reference.py and noise.py.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace dposhap {

constexpr int kThreads = 256;
constexpr int kMaxSlots = 64;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// lowbias32, the mixer of dposhap.compose.noise
__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

__device__ __forceinline__ float gumbel(uint32_t key_a, uint32_t key_b, uint32_t token) {
  const uint32_t h = mix32(mix32(token ^ key_a) + key_b);
  const float u = (static_cast<float>(h >> 9) + 0.5f) * 1.1920928955078125e-07f;  // 2^-23
  return -logf(-logf(u));
}

// running log-sum-exp: (max, sum of exp(x - max))
struct Lse {
  float max;
  float sum;
  __device__ void add(float x) {
    if (x == -INFINITY) return;
    if (x > max) {
      sum = (max == -INFINITY ? 0.f : sum * __expf(max - x)) + 1.f;
      max = x;
    } else {
      sum += __expf(x - max);
    }
  }
  __device__ void merge(Lse o) {
    if (o.max == -INFINITY) return;
    if (max == -INFINITY) { *this = o; return; }
    const float m = fmaxf(max, o.max);
    sum = sum * __expf(max - m) + o.sum * __expf(o.max - m);
    max = m;
  }
  __device__ float value() const { return max == -INFINITY ? -INFINITY : max + logf(sum); }
};

struct Best {
  float val;
  int64_t idx;
  __device__ void take(float v, int64_t i) {
    if (v > val || (v == val && i < idx)) { val = v; idx = i; }
  }
};

__device__ __forceinline__ Lse shfl_lse(Lse x, int delta) {
  Lse o;
  o.max = __shfl_down_sync(0xffffffffu, x.max, delta);
  o.sum = __shfl_down_sync(0xffffffffu, x.sum, delta);
  return o;
}

template <typename T>
__device__ __forceinline__ float combined(const T* __restrict__ logits, int64_t stride, const int64_t* rows,
                                          const float* coefs, int n_used, int64_t v, bool* masked) {
  float acc = 0.f;
  bool dead = false;
  for (int a = 0; a < n_used; ++a) {
    const float l = to_float(logits[rows[a] * stride + v]);
    if (l == -INFINITY) {
      dead = true;
    } else {
      acc += coefs[a] * l;
    }
  }
  *masked = dead;
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) compose_rows_kernel(
    const T* __restrict__ logits, int64_t stride, const int64_t* __restrict__ rows,
    const float* __restrict__ coef, int n_slots, const float* __restrict__ temperature,
    const int64_t* __restrict__ targets, const int64_t* __restrict__ key_a, const int64_t* __restrict__ key_b,
    int64_t vocab, float* __restrict__ logz_out, float* __restrict__ raw_lse_out,
    float* __restrict__ target_out, int64_t* __restrict__ sample_out, float* __restrict__ logprobs_out) {
  const int64_t m = blockIdx.x;
  __shared__ int64_t used_rows[kMaxSlots];
  __shared__ float used_coef[kMaxSlots];
  __shared__ int n_used_shared;
  if (threadIdx.x == 0) {
    // the participating slots only: rows with coefficient 0 are never read
    int n_used = 0;
    for (int a = 0; a < n_slots && n_used < kMaxSlots; ++a) {
      const float co = coef[m * n_slots + a];
      if (co != 0.f) {
        used_rows[n_used] = rows[m * n_slots + a];
        used_coef[n_used] = co;
        ++n_used;
      }
    }
    n_used_shared = n_used;
  }
  __syncthreads();
  const int n_used = n_used_shared;
  const float inv_t = 1.f / temperature[m];
  const bool want_target = target_out != nullptr;
  const bool want_sample = sample_out != nullptr;
  const bool want_raw = raw_lse_out != nullptr;
  const int64_t target = want_target ? targets[m] : -1;
  const uint32_t ka = want_sample ? static_cast<uint32_t>(key_a[m]) : 0u;
  const uint32_t kb = want_sample ? static_cast<uint32_t>(key_b[m]) : 0u;

  Lse lse{-INFINITY, 0.f};
  Lse raw{-INFINITY, 0.f};
  Best best{-INFINITY, vocab};
  float target_c = 0.f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    bool masked;
    const float acc = combined(logits, stride, used_rows, used_coef, n_used, v, &masked);
    const float c = masked ? -INFINITY : acc * inv_t;
    lse.add(c);
    if (want_raw) raw.add(masked ? -INFINITY : acc);
    if (v == target) target_c = c;
    if (want_sample && !masked) best.take(c + gumbel(ka, kb, static_cast<uint32_t>(v)), v);
  }

  // block reduction: warps by shuffles, then the warps' results through shared memory
  __shared__ Lse warp_lse[kThreads / 32];
  __shared__ Lse warp_raw[kThreads / 32];
  __shared__ Best warp_best[kThreads / 32];
  __shared__ float warp_target[kThreads / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int delta = 16; delta > 0; delta /= 2) {
    lse.merge(shfl_lse(lse, delta));
    raw.merge(shfl_lse(raw, delta));
    Best other{__shfl_down_sync(0xffffffffu, best.val, delta), __shfl_down_sync(0xffffffffu, best.idx, delta)};
    best.take(other.val, other.idx);
    target_c += __shfl_down_sync(0xffffffffu, target_c, delta);
  }
  if (lane == 0) {
    warp_lse[warp] = lse;
    warp_raw[warp] = raw;
    warp_best[warp] = best;
    warp_target[warp] = target_c;
  }
  __syncthreads();
  __shared__ float row_logz;
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
      lse.merge(warp_lse[w]);
      raw.merge(warp_raw[w]);
      best.take(warp_best[w].val, warp_best[w].idx);
      target_c += warp_target[w];
    }
    const float logz = lse.value();
    row_logz = logz;
    logz_out[m] = logz;
    if (want_raw) raw_lse_out[m] = raw.value();
    if (want_target) target_out[m] = target_c - logz;
    if (want_sample) sample_out[m] = best.idx;
  }
  if (logprobs_out == nullptr) return;
  __syncthreads();
  const float logz = row_logz;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    bool masked;
    const float acc = combined(logits, stride, used_rows, used_coef, n_used, v, &masked);
    logprobs_out[m * vocab + v] = masked ? -INFINITY : acc * inv_t - logz;
  }
}

// dtype: 0 = float32, 1 = float16, 2 = bfloat16. Optional outputs may be null.
cudaError_t launch_compose_rows(int dtype, const void* logits, int64_t stride, const int64_t* rows,
                                const float* coef, int n_slots, const float* temperature, const int64_t* targets,
                                const int64_t* key_a, const int64_t* key_b, int64_t n_out, int64_t vocab,
                                float* logz, float* raw_lse, float* target, int64_t* sample, float* logprobs,
                                cudaStream_t stream) {
  if (n_out == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(n_out));
  switch (dtype) {
    case 0:
      compose_rows_kernel<float><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(logits), stride, rows, coef, n_slots, temperature, targets, key_a, key_b, vocab,
          logz, raw_lse, target, sample, logprobs);
      break;
    case 1:
      compose_rows_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(logits), stride, rows, coef, n_slots, temperature, targets, key_a, key_b, vocab,
          logz, raw_lse, target, sample, logprobs);
      break;
    case 2:
      compose_rows_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(logits), stride, rows, coef, n_slots, temperature, targets, key_a, key_b,
          vocab, logz, raw_lse, target, sample, logprobs);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace dposhap
