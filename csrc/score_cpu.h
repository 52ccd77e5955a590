// The C++ CPU kernel of the fused linear log-probability (score_cpu.cpp), as its binding
// (score_cpu_binding.cpp) calls it: raw pointers to checked inputs, no torch types.
//
// The binding computes the logits of one vocabulary chunk at a time (hidden @ W_chunk^T, in the
// LM head's dtype, as the model's own head does); this kernel folds each chunk into a running
// log-sum-exp per row and picks the target's logit when it falls in the chunk, so no
// [tokens, vocab] float32 tensor is ever held. Semantics: the plain reference
// python/dposhap/compose/head.py (float32 log_softmax over the whole vocabulary, gather).
#pragma once

#include <cstdint>

#include "compose_cpu.h"  // LogitsDtype

namespace dposhap {
namespace score {

using compose::LogitsDtype;

// One chunk of logits and the running state it is folded into. Every row of the state starts at
// (max -inf, sum 0, target NaN).
struct ChunkUpdate {
  LogitsDtype dtype;
  const void* logits;     // [rows, cols], unit stride along the vocabulary
  int64_t row_stride;
  int64_t rows;
  int64_t cols;
  int64_t first_col;      // the vocabulary index of column 0
  const int64_t* targets; // [rows], in [0, vocab)
  float* running_max;     // [rows]
  float* running_sum;     // [rows], sum exp(logit - running_max)
  float* target_logit;    // [rows], set when the target is in this chunk
  int num_threads;
};

// Fold one chunk into the running state (rows in parallel).
void fold_chunk(const ChunkUpdate& update);

}  // namespace score
}  // namespace dposhap
