// The counter-based noise of the compose kernels, for the host (C++ CPU backend) and the device
// (CUDA backend) alike: bit-identical to python/dposhap/compose/noise.py, whose docstring is the
// specification. Plain 32-bit unsigned arithmetic only; no torch, no CUDA runtime.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DPOSHAP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DPOSHAP_HOST_DEVICE inline
#endif

namespace dposhap {
namespace noise {

constexpr uint32_t kLaneAInit = 0x243F6A88u;
constexpr uint32_t kLaneBInit = 0x85A308D3u;
constexpr uint32_t kMixMul1 = 0x7FEB352Du;
constexpr uint32_t kMixMul2 = 0x846CA68Bu;

// lowbias32, a bijection of the 32-bit integers
DPOSHAP_HOST_DEVICE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= kMixMul1;
  x ^= x >> 15;
  x *= kMixMul2;
  x ^= x >> 16;
  return x;
}

struct RowKey {
  uint32_t a;
  uint32_t b;
};

// (seed, stream, step) as 64-bit two's-complement patterns, absorbed word by word.
DPOSHAP_HOST_DEVICE RowKey row_key(uint64_t seed, uint64_t stream, uint64_t step) {
  const uint32_t words[6] = {
      static_cast<uint32_t>(seed),   static_cast<uint32_t>(seed >> 32),
      static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
      static_cast<uint32_t>(step),   static_cast<uint32_t>(step >> 32)};
  uint32_t a = kLaneAInit, b = kLaneBInit;
  for (uint32_t w : words) {
    a = mix32(a ^ w);
    b = mix32(b + w);
  }
  return {a, b};
}

// The 32 random bits of one token of a row.
DPOSHAP_HOST_DEVICE uint32_t hash32(RowKey key, uint32_t token) { return mix32(mix32(token ^ key.a) + key.b); }

// u = ((h >> 9) + 0.5) * 2**-23, exact in float32.
DPOSHAP_HOST_DEVICE float uniform_from_bits(uint32_t h) {
  return (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// g = -log(-log(u)) with the platform's float32 log (the only part that is not bit-exact
// across platforms).
DPOSHAP_HOST_DEVICE float gumbel_from_bits(uint32_t h) {
#if defined(__CUDA_ARCH__)
  return -logf(-logf(uniform_from_bits(h)));
#else
  return -std::log(-std::log(uniform_from_bits(h)));
#endif
}

}  // namespace noise
}  // namespace dposhap
