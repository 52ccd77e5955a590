// The C++ CPU kernel of the dense form: row m composes ref[m] with its own sources[m, :], read
// in place through their strides. One pass over the vocabulary per row, in blocks that stay in
// L1, OpenMP over rows. Semantics: python/dposhap/compose/reference.py (log_probs).
//
// Fast path: a block is combined without the masking bookkeeping; if the combined block is
// finite everywhere, no participating logit was -inf, NaN or +inf there (a nonzero coefficient
// times a non-finite logit is non-finite, and so is any sum holding one), and the block equals
// the masked combination to the bit (same slots, same order). Otherwise the block is combined
// again with the masking rule of the gather kernel.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "compose_cpu.h"
#include "compose_cpu_math.h"

namespace dposhap {
namespace compose {
namespace {

constexpr int64_t kDenseBlock = 4096;

template <typename scalar_t>
inline void scaled_copy(const scalar_t* row, float coef, float* acc, int64_t n) {
  for (int64_t v = 0; v < n; ++v) acc[v] = coef * static_cast<float>(row[v]);
}

template <typename scalar_t>
inline void scaled_add(const scalar_t* row, float coef, float* acc, int64_t n) {
  for (int64_t v = 0; v < n; ++v) acc[v] = acc[v] + coef * static_cast<float>(row[v]);
}

// block := sum_s coef[s] * rows[s][v0 + v], summed in slot order, for a slot count known at
// compile time: one pass that reads every slot's row once and writes the block once (the same
// products and sums, in the same order, as scaled_copy then scaled_add slot by slot).
template <int K, typename scalar_t>
inline void combine_fixed(const scalar_t* const* rows, const float* coef, int64_t v0, float* __restrict block,
                          int64_t n) {
  const scalar_t* __restrict r[K];
  float c[K];
  for (int s = 0; s < K; ++s) {
    r[s] = rows[s] + v0;
    c[s] = coef[s];
  }
  for (int64_t v = 0; v < n; ++v) {
    float acc = c[0] * static_cast<float>(r[0][v]);
#pragma GCC unroll 8
    for (int s = 1; s < K; ++s) acc = acc + c[s] * static_cast<float>(r[s][v]);
    block[v] = acc;
  }
}

// The combined block of k slots: one fused pass for up to 8 slots, slot by slot beyond.
template <typename scalar_t>
inline void combine_block(const scalar_t* const* rows, const float* coef, int64_t k, int64_t v0, float* block,
                          int64_t n) {
  switch (k) {
    case 1: return combine_fixed<1>(rows, coef, v0, block, n);
    case 2: return combine_fixed<2>(rows, coef, v0, block, n);
    case 3: return combine_fixed<3>(rows, coef, v0, block, n);
    case 4: return combine_fixed<4>(rows, coef, v0, block, n);
    case 5: return combine_fixed<5>(rows, coef, v0, block, n);
    case 6: return combine_fixed<6>(rows, coef, v0, block, n);
    case 7: return combine_fixed<7>(rows, coef, v0, block, n);
    case 8: return combine_fixed<8>(rows, coef, v0, block, n);
    default:
      scaled_copy(rows[0] + v0, coef[0], block, n);
      for (int64_t s = 1; s < k; ++s) scaled_add(rows[s] + v0, coef[s], block, n);
  }
}

// out := x - shift, with streaming stores where the CPU has them: the output is written once
// and not read again here, so it need not be read into the cache first.
inline void subtract_to(const float* x, float shift, float* out, int64_t n) {
  int64_t v = 0;
#if defined(__AVX__)
  for (; v < n && (reinterpret_cast<uintptr_t>(out + v) & 31) != 0; ++v) out[v] = x[v] - shift;
  const __m256 s = _mm256_set1_ps(shift);
  for (; v + 8 <= n; v += 8) _mm256_stream_ps(out + v, _mm256_sub_ps(_mm256_loadu_ps(x + v), s));
#endif
  for (; v < n; ++v) out[v] = x[v] - shift;
}

// true when every x is finite (x - x is 0 for finite x, NaN otherwise)
inline bool all_finite(const float* x, int64_t n) {
  int bad = 0;
  for (int64_t v = 0; v < n; ++v) bad |= !((x[v] - x[v]) == 0.0f);
  return bad == 0;
}

inline void scale(float* acc, float temperature, int64_t n) {
  for (int64_t v = 0; v < n; ++v) acc[v] = acc[v] / temperature;
}

template <typename scalar_t>
bool has_bad(const scalar_t* row, int64_t n) {
  for (int64_t v = 0; v < n; ++v) {
    const float l = static_cast<float>(row[v]);
    if (std::isnan(l) || l == kPosInf) return true;
  }
  return false;
}

template <typename scalar_t>
void dense_typed(const DenseInputs& in, float* logprobs, float* logz_out, std::vector<DenseError>& errors) {
  const int64_t vocab = in.vocab, n = in.n_sources;
  const scalar_t* ref = static_cast<const scalar_t*>(in.ref);
  const scalar_t* sources = static_cast<const scalar_t*>(in.sources);
#pragma omp parallel num_threads(in.num_threads)
  {
    std::vector<const scalar_t*> rows(n + 1);
    std::vector<float> coef(n + 1);
    std::vector<int64_t> member(n + 1);
    uint8_t mask[kDenseBlock];
    std::vector<float> row_buffer(vocab);  // the combined row, kept in this core's cache
#pragma omp for schedule(dynamic, 1)
    for (int64_t m = 0; m < in.r_rows; ++m) {
      // the slots in the canonical order: the reference (1 - sum w, summed in member order),
      // then the members of nonzero weight
      const float* w = in.weights + m * n;
      float total = 0.0f;
      for (int64_t j = 0; j < n; ++j) total += w[j];
      int64_t k = 0;
      if (1.0f - total != 0.0f) {
        rows[k] = ref + m * in.ref_stride;
        coef[k] = 1.0f - total;
        member[k++] = -1;
      }
      for (int64_t j = 0; j < n; ++j) {
        if (w[j] == 0.0f) continue;
        rows[k] = sources + m * in.src_stride_row + j * in.src_stride_source;
        coef[k] = w[j];
        member[k++] = j;
      }
      const float temp = in.temperature[m];
      float* out = row_buffer.data();
      float max = kNegInf, sum = 0.0f;
      bool bad = false;
      for (int64_t v0 = 0; v0 < vocab && !bad; v0 += kDenseBlock) {
        const int64_t len = std::min(kDenseBlock, vocab - v0);
        float* block = out + v0;
        combine_block(rows.data(), coef.data(), k, v0, block, len);
        if (!all_finite(block, len)) {  // masked tokens or bad logits: the masking rule
          for (int64_t s = 0; s < k; ++s) {
            bad |= s == 0 ? slot_accumulate<true>(rows[s] + v0, coef[s], block, mask, len)
                          : slot_accumulate<false>(rows[s] + v0, coef[s], block, mask, len);
          }
          if (bad) break;
          apply_mask(block, mask, len);
        }
        if (temp != 1.0f) scale(block, temp, len);
        const float block_max = row_max(block, len);
        if (block_max == kNegInf) continue;
        if (block_max > max) {
          sum = max == kNegInf ? 0.0f : sum * std::exp(max - block_max);
          max = block_max;
        }
        sum += row_sum_exp(block, len, max);
      }
      if (bad) {
        errors[m].kind = GatherError::Kind::kNotFinite;
        errors[m].row = m;
        for (int64_t s = 0; s < k; ++s) {
          if (has_bad(rows[s], vocab)) {
            errors[m].member = member[s];
            break;
          }
        }
        continue;
      }
      if (max == kNegInf) {
        errors[m].kind = GatherError::Kind::kAllMasked;
        errors[m].row = m;
        continue;
      }
      const float logz = max + std::log(sum);
      if (logz_out) logz_out[m] = logz;
      subtract_to(out, logz, logprobs + m * vocab, vocab);
    }
#if defined(__AVX__)
    _mm_sfence();
#endif
  }
}

}  // namespace

DenseError compose_dense_rows(const DenseInputs& in, float* logprobs, float* logz) {
  std::vector<DenseError> errors(in.r_rows);
  switch (in.dtype) {
    case LogitsDtype::kFloat32:
      dense_typed<float>(in, logprobs, logz, errors);
      break;
    case LogitsDtype::kFloat16:
      dense_typed<c10::Half>(in, logprobs, logz, errors);
      break;
    case LogitsDtype::kBFloat16:
      dense_typed<c10::BFloat16>(in, logprobs, logz, errors);
      break;
  }
  // as the reference: non-finite logits first, then all-masked rows
  for (const auto kind : {GatherError::Kind::kNotFinite, GatherError::Kind::kAllMasked}) {
    for (const DenseError& error : errors) {
      if (error.kind == kind) return error;
    }
  }
  return DenseError{};
}

}  // namespace compose
}  // namespace dposhap
