// CUDA kernels of the gather form of language-model arithmetic (dposhap.compose).
//
// Device code only, on raw pointers: no torch headers, so that the file compiles in seconds
// and can be compile-checked on machines without a GPU. The torch-facing launcher and the
// input checks live in compose_cuda_binding.cpp; the noise is compose_noise.h, shared with the
// C++ CPU kernel.
//
// One block per output row m. The threads stride over the vocabulary; each combines the
// participating rows (c = sum_a coef_a l_a / T, a token is -inf as soon as a participating row
// is -inf there, rows with coefficient 0 are never read), keeps an online log-sum-exp of c and
// of the untempered combination (for the sequence-level correction), the target's logit and
// the Gumbel-max argmax with the counter-based noise of dposhap.compose.noise; the block then
// reduces them. Conventions and noise are those of dposhap/compose/reference.py and noise.py.
//
// Top-k sampling (kTopK) first finds the row's top-k set exactly, by block-wide passes that
// recompute c: a radix select over the order-preserving uint32 key of c (kRadixBits bits per
// pass, at most 32 / kRadixBits passes, fewer once a prefix holds exactly top_k tokens), then,
// when the k-th value is tied, a pass in index order that finds the last tied token allowed
// (ties: lowest index first). The Gumbel argmax then runs over that set. That path computes c
// as the reference does, to the bit (no fused multiply-add, a correctly rounded division), so
// its top-k set is the reference's.

#include "compose_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "compose_noise.h"

namespace dposhap {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSlots = 64;
constexpr int kRadixBits = 4;
constexpr int kRadix = 1 << kRadixBits;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float gumbel(uint32_t key_a, uint32_t key_b, uint32_t token) {
  return noise::gumbel_from_bits(noise::hash32({key_a, key_b}, token));
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

// sum_a coef_a l_a at token v; kExact: each product and sum rounded, as the reference (no FMA)
template <bool kExact, typename T>
__device__ __forceinline__ float combined(const T* __restrict__ logits, int64_t stride, const int64_t* rows,
                                          const float* coefs, int n_used, int64_t v, bool* masked) {
  float acc = 0.f;
  bool dead = false;
  for (int a = 0; a < n_used; ++a) {
    const float l = to_float(logits[rows[a] * stride + v]);
    if (l == -INFINITY) {
      dead = true;
    } else if (kExact) {
      acc = __fadd_rn(acc, __fmul_rn(coefs[a], l));
    } else {
      acc += coefs[a] * l;
    }
  }
  *masked = dead;
  return acc;
}

// c = acc / T: kExact correctly rounded, else by the reciprocal
template <bool kExact>
__device__ __forceinline__ float scaled(float acc, float temperature, float inv_t) {
  return kExact ? __fdiv_rn(acc, temperature) : acc * inv_t;
}

// uint32 key that orders as the float c (-0 as +0); 0 for a masked token, below every live one
__device__ __forceinline__ uint32_t order_key(float c, bool masked) {
  if (masked) return 0u;
  const uint32_t bits = __float_as_uint(c == 0.f ? 0.f : c);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

template <typename T>
__device__ __forceinline__ uint32_t token_key(const T* __restrict__ logits, int64_t stride, const int64_t* rows,
                                              const float* coefs, int n_used, float temperature, int64_t v) {
  bool masked;
  const float acc = combined<true>(logits, stride, rows, coefs, n_used, v, &masked);
  return order_key(scaled<true>(acc, temperature, 0.f), masked);
}

// Token v of key k is among the top_k largest c of the row (ties: lowest index first) iff
// k > kth or (k == kth and v <= tie_cut).
struct TopKCut {
  uint32_t kth;
  int64_t tie_cut;
};

// Called by every thread of the block; needs 0 < top_k < vocab.
template <typename T>
__device__ TopKCut top_k_cut(const T* __restrict__ logits, int64_t stride, const int64_t* rows, const float* coefs,
                             int n_used, float temperature, int64_t vocab, int64_t top_k) {
  __shared__ int warp_counts[kWarps][kRadix];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  uint32_t prefix = 0;  // the high bits of the k-th largest key found so far
  int64_t above = 0;    // tokens whose key has a higher prefix
  int shift = 32;
  bool exact = false;   // the keys >= prefix are exactly top_k tokens
  while (shift > 0 && !exact) {
    shift -= kRadixBits;
    int count[kRadix];  // this thread's tokens with key >= prefix | d << shift
#pragma unroll
    for (int d = 0; d < kRadix; ++d) count[d] = 0;
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
      const uint32_t key = token_key(logits, stride, rows, coefs, n_used, temperature, v);
#pragma unroll
      for (int d = 0; d < kRadix; ++d) count[d] += key >= (prefix | (static_cast<uint32_t>(d) << shift)) ? 1 : 0;
    }
#pragma unroll
    for (int d = 0; d < kRadix; ++d) {
      for (int delta = 16; delta > 0; delta /= 2) count[d] += __shfl_down_sync(0xffffffffu, count[d], delta);
      if (lane == 0) warp_counts[warp][d] = count[d];
    }
    __syncthreads();
    // every thread reads the same totals and takes the same decisions
    int digit = 0;
    int64_t at_digit = 0, next = -1;
    for (int d = 0; d < kRadix; ++d) {
      int64_t total = 0;
      for (int w = 0; w < kWarps; ++w) total += warp_counts[w][d];
      if (total >= top_k) {  // falls with d, and d = 0 always keeps top_k
        digit = d;
        at_digit = total;
      } else if (next < 0) {
        next = total;
      }
    }
    __syncthreads();  // warp_counts is reused by the next pass
    if (next >= 0) above = next;
    prefix |= static_cast<uint32_t>(digit) << shift;
    exact = at_digit == top_k;
  }
  if (exact) return {prefix - 1, -1};  // allowed: key >= prefix (> 0: the vocab > top_k keys are >= 0)

  // the k-th key is prefix and ties there cross the cut: allow the first top_k - above of them
  __shared__ int warp_ties[kWarps];
  __shared__ int64_t cut;
  const int64_t need = top_k - above;
  int64_t seen = 0;
  if (threadIdx.x == 0) cut = -1;
  for (int64_t base = 0; base < vocab && seen < need; base += blockDim.x) {
    const int64_t v = base + threadIdx.x;
    const bool tie = v < vocab && token_key(logits, stride, rows, coefs, n_used, temperature, v) == prefix;
    const unsigned ballot = __ballot_sync(0xffffffffu, tie);
    if (lane == 0) warp_ties[warp] = __popc(ballot);
    __syncthreads();
    int64_t before = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? warp_ties[w] : 0;
      total += warp_ties[w];
    }
    if (tie && seen + before + __popc(ballot & ((1u << lane) - 1u)) + 1 == need) cut = v;
    seen += total;
    __syncthreads();
  }
  __syncthreads();
  return {prefix, cut};
}

template <typename T, bool kTopK>
__global__ void __launch_bounds__(kThreads) compose_rows_kernel(
    const T* __restrict__ logits, int64_t stride, const int64_t* __restrict__ rows,
    const float* __restrict__ coef, int n_slots, const float* __restrict__ temperature,
    const int64_t* __restrict__ targets, const int64_t* __restrict__ key_a, const int64_t* __restrict__ key_b,
    int64_t vocab, int64_t top_k, float* __restrict__ logz_out, float* __restrict__ raw_lse_out,
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
  const float temp = temperature[m];
  const float inv_t = 1.f / temp;
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
  TopKCut cut{0u, -1};
  if constexpr (kTopK) cut = top_k_cut(logits, stride, used_rows, used_coef, n_used, temp, vocab, top_k);
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    bool masked;
    const float acc = combined<kTopK>(logits, stride, used_rows, used_coef, n_used, v, &masked);
    const float c = masked ? -INFINITY : scaled<kTopK>(acc, temp, inv_t);
    lse.add(c);
    if (want_raw) raw.add(masked ? -INFINITY : acc);
    if (v == target) target_c = c;
    bool allowed = want_sample && !masked;
    if constexpr (kTopK) {
      if (allowed) {
        const uint32_t key = order_key(c, false);
        allowed = key > cut.kth || (key == cut.kth && v <= cut.tie_cut);
      }
    }
    if (allowed) best.take(c + gumbel(ka, kb, static_cast<uint32_t>(v)), v);
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
    const float acc = combined<kTopK>(logits, stride, used_rows, used_coef, n_used, v, &masked);
    logprobs_out[m * vocab + v] = masked ? -INFINITY : scaled<kTopK>(acc, temp, inv_t) - logz;
  }
}

template <typename T>
void launch_typed(const void* logits, int64_t stride, const int64_t* rows, const float* coef, int n_slots,
                  const float* temperature, const int64_t* targets, const int64_t* key_a, const int64_t* key_b,
                  int64_t n_out, int64_t vocab, int64_t top_k, float* logz, float* raw_lse, float* target,
                  int64_t* sample, float* logprobs, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_out));
  const T* data = static_cast<const T*>(logits);
  if (top_k > 0) {
    compose_rows_kernel<T, true><<<grid, kThreads, 0, stream>>>(data, stride, rows, coef, n_slots, temperature,
                                                                 targets, key_a, key_b, vocab, top_k, logz, raw_lse,
                                                                 target, sample, logprobs);
  } else {
    compose_rows_kernel<T, false><<<grid, kThreads, 0, stream>>>(data, stride, rows, coef, n_slots, temperature,
                                                                  targets, key_a, key_b, vocab, 0, logz, raw_lse,
                                                                  target, sample, logprobs);
  }
}

cudaError_t launch_compose_rows(int dtype, const void* logits, int64_t stride, const int64_t* rows,
                                const float* coef, int n_slots, const float* temperature, const int64_t* targets,
                                const int64_t* key_a, const int64_t* key_b, int64_t n_out, int64_t vocab,
                                int64_t top_k, float* logz, float* raw_lse, float* target, int64_t* sample,
                                float* logprobs, cudaStream_t stream) {
  if (n_out == 0) return cudaSuccess;
  if (top_k < 0 || (top_k > 0 && (top_k >= vocab || sample == nullptr))) return cudaErrorInvalidValue;
  switch (dtype) {
    case 0:
      launch_typed<float>(logits, stride, rows, coef, n_slots, temperature, targets, key_a, key_b, n_out, vocab,
                          top_k, logz, raw_lse, target, sample, logprobs, stream);
      break;
    case 1:
      launch_typed<__half>(logits, stride, rows, coef, n_slots, temperature, targets, key_a, key_b, n_out, vocab,
                           top_k, logz, raw_lse, target, sample, logprobs, stream);
      break;
    case 2:
      launch_typed<__nv_bfloat16>(logits, stride, rows, coef, n_slots, temperature, targets, key_a, key_b, n_out,
                                  vocab, top_k, logz, raw_lse, target, sample, logprobs, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// ------------------------------------------------------------------------------------
// The dense form: ref [R, V] and sources [R, n, V] read in place through their strides (unit
// stride along the vocabulary). Grid (chunk, row): each block combines kDenseChunk tokens of a
// row, stores the tempered combination c and its chunk's (max, sum exp) and bad flag (NaN or
// +inf in a participating row); the finish kernel merges a row's chunk states into logz (NaN
// for a bad row, -inf for a row masked everywhere) and subtracts it from its chunk. Two
// kernels, so that a few rows still fill the device.

constexpr int64_t kDenseChunk = 8192;

template <typename T>
__global__ void __launch_bounds__(kThreads) dense_partial_kernel(
    const T* __restrict__ ref, int64_t stride_ref, const T* __restrict__ sources, int64_t stride_src_row,
    int64_t stride_src_source, int n_sources, const float* __restrict__ weights, const float* __restrict__ temperature,
    int64_t vocab, int64_t n_chunks, float* __restrict__ out, float* __restrict__ part_max,
    float* __restrict__ part_sum, int* __restrict__ part_bad) {
  const int64_t m = blockIdx.y;
  const int64_t q = blockIdx.x;
  const float* w = weights + m * n_sources;
  float total = 0.f;
  for (int j = 0; j < n_sources; ++j) total += w[j];
  const float a0 = 1.f - total;
  const float temp = temperature[m];
  const T* ref_row = ref + m * stride_ref;
  const T* src_row = sources + m * stride_src_row;
  Lse lse{-INFINITY, 0.f};
  int bad = 0;
  const int64_t end = min(vocab, (q + 1) * kDenseChunk);
  for (int64_t v = q * kDenseChunk + threadIdx.x; v < end; v += blockDim.x) {
    float acc = 0.f;
    bool masked = false;
    if (a0 != 0.f) {
      const float l = to_float(ref_row[v]);
      bad |= isnan(l) || l == INFINITY;
      masked |= l == -INFINITY;
      acc = __fmul_rn(a0, l == -INFINITY ? 0.f : l);
    }
    for (int j = 0; j < n_sources; ++j) {
      if (w[j] == 0.f) continue;
      const float l = to_float(src_row[j * stride_src_source + v]);
      bad |= isnan(l) || l == INFINITY;
      masked |= l == -INFINITY;
      acc = __fadd_rn(acc, __fmul_rn(w[j], l == -INFINITY ? 0.f : l));
    }
    const float c = masked ? -INFINITY : __fdiv_rn(acc, temp);
    out[m * vocab + v] = c;
    lse.add(c);
  }
  // block reduction: warps, then the first warp
  __shared__ float s_max[kWarps];
  __shared__ float s_sum[kWarps];
  __shared__ int s_bad[kWarps];
  for (int delta = 16; delta > 0; delta >>= 1) {
    lse.merge(shfl_lse(lse, delta));
    bad |= __shfl_down_sync(0xffffffffu, bad, delta);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s_max[warp] = lse.max;
    s_sum[warp] = lse.sum;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Lse total_lse{-INFINITY, 0.f};
    int any_bad = 0;
    for (int k = 0; k < kWarps; ++k) {
      total_lse.merge(Lse{s_max[k], s_sum[k]});
      any_bad |= s_bad[k];
    }
    part_max[m * n_chunks + q] = total_lse.max;
    part_sum[m * n_chunks + q] = total_lse.sum;
    part_bad[m * n_chunks + q] = any_bad;
  }
}

__global__ void __launch_bounds__(kThreads) dense_finish_kernel(float* __restrict__ out, float* __restrict__ logz,
                                                               const float* __restrict__ part_max,
                                                               const float* __restrict__ part_sum,
                                                               const int* __restrict__ part_bad, int64_t vocab,
                                                               int64_t n_chunks) {
  const int64_t m = blockIdx.y;
  const int64_t q = blockIdx.x;
  __shared__ float s_logz;
  if (threadIdx.x == 0) {
    Lse lse{-INFINITY, 0.f};
    int bad = 0;
    for (int64_t p = 0; p < n_chunks; ++p) {
      lse.merge(Lse{part_max[m * n_chunks + p], part_sum[m * n_chunks + p]});
      bad |= part_bad[m * n_chunks + p];
    }
    s_logz = bad ? NAN : lse.value();
    if (q == 0) logz[m] = s_logz;
  }
  __syncthreads();
  const float row_logz = s_logz;
  const int64_t end = min(vocab, (q + 1) * kDenseChunk);
  for (int64_t v = q * kDenseChunk + threadIdx.x; v < end; v += blockDim.x) out[m * vocab + v] -= row_logz;
}

template <typename T>
void launch_dense_typed(const void* ref, int64_t stride_ref, const void* sources, int64_t stride_src_row,
                        int64_t stride_src_source, int n_sources, const float* weights, const float* temperature,
                        int64_t r_rows, int64_t vocab, float* logprobs, float* logz, float* part_max,
                        float* part_sum, int* part_bad, cudaStream_t stream) {
  const int64_t n_chunks = dense_chunks(vocab);
  const dim3 grid(static_cast<unsigned>(n_chunks), static_cast<unsigned>(r_rows));
  dense_partial_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(ref), stride_ref, static_cast<const T*>(sources), stride_src_row, stride_src_source,
      n_sources, weights, temperature, vocab, n_chunks, logprobs, part_max, part_sum, part_bad);
  dense_finish_kernel<<<grid, kThreads, 0, stream>>>(logprobs, logz, part_max, part_sum, part_bad, vocab, n_chunks);
}

int64_t dense_chunks(int64_t vocab) { return (vocab + kDenseChunk - 1) / kDenseChunk; }

cudaError_t launch_compose_dense(int dtype, const void* ref, int64_t stride_ref, const void* sources,
                                 int64_t stride_src_row, int64_t stride_src_source, int n_sources,
                                 const float* weights, const float* temperature, int64_t r_rows, int64_t vocab,
                                 float* logprobs, float* logz, float* part_max, float* part_sum, int* part_bad,
                                 cudaStream_t stream) {
  if (r_rows == 0 || vocab == 0) return cudaSuccess;
  if (r_rows > 65535) return cudaErrorInvalidValue;
  switch (dtype) {
    case 0:
      launch_dense_typed<float>(ref, stride_ref, sources, stride_src_row, stride_src_source, n_sources, weights,
                                temperature, r_rows, vocab, logprobs, logz, part_max, part_sum, part_bad, stream);
      break;
    case 1:
      launch_dense_typed<__half>(ref, stride_ref, sources, stride_src_row, stride_src_source, n_sources, weights,
                                 temperature, r_rows, vocab, logprobs, logz, part_max, part_sum, part_bad, stream);
      break;
    case 2:
      launch_dense_typed<__nv_bfloat16>(ref, stride_ref, sources, stride_src_row, stride_src_source, n_sources,
                                        weights, temperature, r_rows, vocab, logprobs, logz, part_max, part_sum,
                                        part_bad, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace dposhap
