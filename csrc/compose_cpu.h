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

// The dense form (compose_cpu_dense.cpp): output row m composes ref[m] with sources[m, :],
// read in place through their strides (no concatenated copy). Unit stride along the vocabulary.
struct DenseInputs {
  LogitsDtype dtype;
  const void* ref;  // [r_rows, vocab]
  int64_t ref_stride;
  const void* sources;  // [r_rows, n_sources, vocab]
  int64_t src_stride_row;
  int64_t src_stride_source;
  int64_t r_rows;
  int64_t n_sources;
  int64_t vocab;
  const float* weights;      // [r_rows, n_sources], finite
  const float* temperature;  // [r_rows], finite and > 0
  int num_threads;           // >= 1
};

// What went wrong with a dense input's values: member -1 names ref[row], else sources[row, member].
struct DenseError {
  GatherError::Kind kind = GatherError::Kind::kNone;
  int64_t row = -1;
  int64_t member = -1;
};

// Writes logprobs [r_rows, vocab] (and logz [r_rows] if non-null); on an error they are unspecified.
DenseError compose_dense_rows(const DenseInputs& in, float* logprobs, float* logz);

}  // namespace compose
}  // namespace dposhap
