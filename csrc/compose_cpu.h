// The C++ CPU kernel of the gather form (compose_cpu.cpp), as its binding
// (compose_cpu_binding.cpp) calls it: raw pointers to checked inputs, no torch types.
//
// Semantics: python/dposhap/compose/reference.py. Logits are read as float32, float16 or
// bfloat16 and every computation is float32.
#pragma once

#include <cstdint>

namespace dposhap {
namespace compose {

enum class LogitsDtype : uint8_t { kFloat32, kFloat16, kBFloat16 };

// Everything the kernel reads; the binding has checked shapes, ranges and finiteness of the
// weights and temperatures. Pointers of outputs not asked for are null.
struct GatherInputs {
  LogitsDtype dtype;
  const void* logits;  // [n_rows, vocab], unit stride along the vocabulary
  int64_t row_stride;
  int64_t n_rows;
  int64_t vocab;
  const int64_t* ref_index;   // [m_rows]
  const int64_t* src_index;   // [m_rows, j_cols], -1 for padding
  const float* src_weight;    // [m_rows, j_cols]
  int64_t m_rows;
  int64_t j_cols;
  const float* temperature;   // [m_rows], finite and > 0
  const int64_t* targets;     // [m_rows] in [0, vocab), or null
  uint64_t seed;
  const int64_t* stream_id;   // [m_rows]
  const int64_t* step;        // [m_rows]
  int64_t top_k;              // 0: sample over the whole vocabulary
  int num_threads;            // >= 1
};

struct GatherOutputs {
  float* logprobs;  // [m_rows, vocab]
  float* logz;      // [m_rows]
  float* correction;
  float* target_logprob;
  int64_t* sample;
};

// What went wrong with the inputs' values, in the order the reference checks them: first any
// participating logits row holding NaN or +inf, then any output row masked everywhere.
struct GatherError {
  enum class Kind : uint8_t { kNone, kNotFinite, kAllMasked };
  Kind kind = Kind::kNone;
  int64_t output_row = -1;
  int64_t logits_row = -1;  // kNotFinite: the offending logits row
  int64_t member = -1;      // kNotFinite: its position in src_index, -1 for the reference
};

// Fills the requested outputs; on an error the outputs are unspecified.
GatherError compose_gather_rows(const GatherInputs& in, const GatherOutputs& out);

}  // namespace compose
}  // namespace dposhap
