// Row loops of the C++ CPU compose kernel (compose_cpu.cpp): vectorisable log-sum-exp pieces,
// the slot accumulation, top-k selection and the Gumbel-max draw. No torch, no Python.
//
// Conventions: python/dposhap/compose/reference.py (the ground truth); the noise is the one of
// compose_noise.h. Every computation is float32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "compose_noise.h"

namespace dposhap {
namespace compose {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

using noise::gumbel_from_bits;
using noise::hash32;
using noise::row_key;
using noise::RowKey;
using noise::uniform_from_bits;

// ------------------------------------------------------------------------------------
// a branch-free exp for x <= 0 that the compiler vectorises (Cephes expf polynomial,
// relative error ~1e-7); exp(x) = 0 below -87.

inline float exp_nonpos(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // rint
  float r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}

// ------------------------------------------------------------------------------------
// vectorisable row loops

inline float row_max(const float* x, int64_t n) {
  // elementwise maxima over lanes (a select, not a reduction: vectorises without fast-math)
  constexpr int kLanes = 16;
  float lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = kNegInf;
  int64_t v = 0;
  for (; v + kLanes <= n; v += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] = x[v + k] > lane[k] ? x[v + k] : lane[k];
  }
  float m = kNegInf;
  for (int k = 0; k < kLanes; ++k) m = lane[k] > m ? lane[k] : m;
  for (; v < n; ++v) m = x[v] > m ? x[v] : m;
  return m;
}

// sum_v exp(x[v] - shift), shift finite.
inline float row_sum_exp(const float* x, int64_t n, float shift) {
  // several partial sums: vectorises without reassociation flags
  constexpr int kLanes = 16;
  float acc[kLanes] = {0};
  int64_t v = 0;
  for (; v + kLanes <= n; v += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += exp_nonpos(x[v + k] - shift);
  }
  float total = 0.0f;
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  for (; v < n; ++v) total += exp_nonpos(x[v] - shift);
  return total;
}

// log-sum-exp of a float row; -inf when the row is -inf everywhere.
inline float row_lse(const float* x, int64_t n) {
  const float m = row_max(x, n);
  if (m == kNegInf) return kNegInf;
  return m + std::log(row_sum_exp(x, n, m));
}

template <typename scalar_t>
inline void to_float(const scalar_t* src, float* dst, int64_t n) {
  for (int64_t v = 0; v < n; ++v) dst[v] = static_cast<float>(src[v]);
}

// acc (+)= a * l, 0 where l = -inf, and mask (|)= (l == -inf): kFirst sets them (the first
// participating slot), otherwise they accumulate. Returns true if the row holds NaN or +inf.
template <bool kFirst, typename scalar_t>
inline bool slot_accumulate(const scalar_t* row, float coef, float* acc, uint8_t* mask, int64_t n) {
  int bad = 0;
  for (int64_t v = 0; v < n; ++v) {
    const float l = static_cast<float>(row[v]);
    const bool neg_inf = l == kNegInf;
    bad |= !(l < kPosInf) & !neg_inf;  // NaN or +inf
    const float term = neg_inf ? 0.0f : coef * l;
    if constexpr (kFirst) {
      acc[v] = term;
      mask[v] = static_cast<uint8_t>(neg_inf);
    } else {
      acc[v] = acc[v] + term;
      mask[v] = static_cast<uint8_t>(mask[v] | static_cast<uint8_t>(neg_inf));
    }
  }
  return bad != 0;
}

// acc := masked ? -inf : acc (temperature 1).
inline void apply_mask(float* acc, const uint8_t* mask, int64_t n) {
  for (int64_t v = 0; v < n; ++v) acc[v] = mask[v] ? kNegInf : acc[v];
}

// acc := masked ? -inf : acc / temperature.
inline void apply_mask_scale(float* acc, const uint8_t* mask, float temperature, int64_t n) {
  for (int64_t v = 0; v < n; ++v) acc[v] = mask[v] ? kNegInf : acc[v] / temperature;
}

inline void subtract(float* x, float shift, int64_t n) {
  for (int64_t v = 0; v < n; ++v) x[v] = x[v] - shift;
}

// ------------------------------------------------------------------------------------
// sampling: argmax over allowed tokens of c + gumbel, ties to the lowest index.

// Which tokens are among the top_k largest c (ties: lowest index first). `scratch` has n floats.
inline void top_k_allowed(const float* c, int64_t n, int64_t top_k, float* scratch, uint8_t* allowed) {
  std::memcpy(scratch, c, sizeof(float) * n);
  std::nth_element(scratch, scratch + (top_k - 1), scratch + n, [](float x, float y) { return x > y; });
  const float kth = scratch[top_k - 1];
  int64_t greater = 0;
  for (int64_t v = 0; v < n; ++v) greater += c[v] > kth;
  int64_t equal_left = top_k - greater;
  for (int64_t v = 0; v < n; ++v) {
    bool ok = c[v] > kth;
    if (c[v] == kth && equal_left > 0) {
      ok = true;
      --equal_left;
    }
    allowed[v] = static_cast<uint8_t>(ok);
  }
}

// A branch-free natural log for normal positive floats that the compiler vectorises (Cephes
// logf polynomial, error ~1e-7 relative). Only used to screen candidates: the chosen token is
// decided with std::log, as the reference computes it.
inline float log_approx(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(((bits >> 23) & 0xff) - 127);
  const int32_t mant_bits = (bits & 0x007fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &mant_bits, sizeof(m));
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const float t = m - 1.0f;
  const float z = t * t;
  float p = 7.0376836292e-2f;
  p = p * t - 1.1514610310e-1f;
  p = p * t + 1.1676998740e-1f;
  p = p * t - 1.2420140846e-1f;
  p = p * t + 1.4249322787e-1f;
  p = p * t - 1.6668057665e-1f;
  p = p * t + 2.0000714765e-1f;
  p = p * t - 2.4999993993e-1f;
  p = p * t + 3.3333331174e-1f;
  float y = p * t * z;
  y = y - 2.12194440e-4f * e;
  y = y - 0.5f * z;
  return (t + y) + 0.693359375f * e;
}

// The winner of Gumbel-max over some tokens: its score c[v] + g[v] and its token (-1: none).
struct Draw {
  float score = kNegInf;
  int64_t token = -1;
  // Fold in the draw of a range of tokens after this one's: ties keep the lowest token.
  void merge_later(const Draw& later) {
    if (later.token >= 0 && (token < 0 || later.score > score)) *this = later;
  }
};

// argmax_v (c[v] + g[v]) over the allowed tokens of the range [first, first + n) of a row
// (`c` and `allowed` point at the range; `allowed` null: every token), ties to the lowest
// index; token -1 when no allowed token has a finite c. `scratch` holds n floats.
//
// Every score that decides is computed exactly as the reference does (std::log in float32);
// the rest only screens tokens out, never in:
// 1. bound = c[a] + g[a] at a = argmax c is a lower bound of the best score, and no token
//    scores above c[v] + G (G: the largest variate the noise can produce), so tokens with
//    c[v] + G < bound can neither win nor tie;
// 2. when many tokens pass 1 (logits of a small spread), a vectorised screen with log_approx
//    (|error| of a score far below 1e-3 + 1e-6 |score|) keeps the tokens within that margin
//    of the best screened score; the true winner always survives.
// The screening noise of a whole row, -log_approx(-log_approx(u)) for every token: what
// gumbel_argmax's screen computes, once per key, for rows that share their key (every coalition
// decoding a prompt at a step).
inline void screening_noise(RowKey key, int64_t n, float* out) {
  for (int64_t v = 0; v < n; ++v) {
    const float u = uniform_from_bits(hash32(key, static_cast<uint32_t>(v)));
    out[v] = -log_approx(-log_approx(u));
  }
}

// `shared` (optional): screening_noise of this row's key over the whole row (its tokens from
// `first` on are read); the draw is the same with or without it.
inline Draw gumbel_argmax(const float* c, const uint8_t* allowed, int64_t n, int64_t first, RowKey key,
                          float* scratch, const float* shared = nullptr) {
  static const float kGumbelMax = gumbel_from_bits(0xFFFFFFFFu);
  const auto noise = [&](int64_t v) { return hash32(key, static_cast<uint32_t>(first + v)); };
  int64_t arg_c = -1;
  float max_c = kNegInf;
  for (int64_t v = 0; v < n; ++v) {
    if ((allowed == nullptr || allowed[v]) && c[v] > max_c) {
      max_c = c[v];
      arg_c = v;
    }
  }
  if (arg_c < 0) return {};
  const float bound = c[arg_c] + gumbel_from_bits(noise(arg_c));
  int64_t passing = 0;
  for (int64_t v = 0; v < n; ++v) passing += (c[v] + kGumbelMax >= bound) ? 1 : 0;
  float threshold = kNegInf;
  const bool screen = passing * 8 > n;
  if (screen && shared != nullptr) {
    const float* g = shared + first;
    for (int64_t v = 0; v < n; ++v) {
      const bool ok = allowed == nullptr || allowed[v] != 0;
      scratch[v] = ok ? c[v] + g[v] : kNegInf;
    }
  } else if (screen) {
    for (int64_t v = 0; v < n; ++v) {
      const float u = uniform_from_bits(noise(v));
      const float g = -log_approx(-log_approx(u));
      const bool ok = allowed == nullptr || allowed[v] != 0;
      scratch[v] = ok ? c[v] + g : kNegInf;
    }
  }
  if (screen) {
    const float screened = row_max(scratch, n);
    threshold = screened - (1e-3f + 1e-6f * std::fabs(screened));
  }
  Draw best;
  for (int64_t v = 0; v < n; ++v) {
    if (screen ? !(scratch[v] >= threshold) : !(c[v] + kGumbelMax >= bound)) continue;
    if (allowed != nullptr && !allowed[v]) continue;
    const float s = c[v] + gumbel_from_bits(noise(v));
    if (best.token < 0 || s > best.score) {  // in index order: ties keep the lowest index
      best.score = s;
      best.token = first + v;
    }
  }
  return best;
}

}  // namespace compose
}  // namespace dposhap
