// The C++ CPU kernel of the gather form of the compose kernels (kernel code only: the
// torch-facing checks and the binding are compose_cpu_binding.cpp). One pass over the
// vocabulary per output row, in blocks that stay in L1, OpenMP over rows (over parts of the
// vocabulary when there are fewer rows than threads). Semantics:
// python/dposhap/compose/reference.py.
#include "compose_cpu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "compose_cpu_math.h"

namespace dposhap {
namespace compose {
namespace {

struct Slot {
  int64_t row;   // logits row
  float coef;    // a_0 = 1 - sum w (reference) or w_j
  int64_t orig;  // -1 for the reference, else the member position in src_index
};

// Participating slots of every output row, in the reference's canonical order.
struct Plan {
  std::vector<Slot> slots;        // [M, J + 1], the first count[m] used
  std::vector<int64_t> count;     // [M]
  std::vector<uint8_t> single;    // [M] one slot with coefficient exactly 1
  int64_t width = 0;
};

Plan make_plan(const int64_t* ref, const int64_t* src, const float* weight, int64_t m_rows, int64_t j_cols) {
  Plan plan;
  plan.width = j_cols + 1;
  plan.slots.resize(m_rows * plan.width);
  plan.count.assign(m_rows, 0);
  plan.single.assign(m_rows, 0);
  std::vector<std::pair<std::pair<int64_t, float>, int64_t>> members;
  for (int64_t m = 0; m < m_rows; ++m) {
    members.clear();
    for (int64_t j = 0; j < j_cols; ++j) {
      const int64_t index = src[m * j_cols + j];
      if (index < 0) continue;  // padding
      members.push_back({{index, weight[m * j_cols + j]}, j});
    }
    std::sort(members.begin(), members.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    float total = 0.0f;
    for (const auto& member : members) total += member.first.second;
    const float ref_coef = 1.0f - total;
    Slot* out = plan.slots.data() + m * plan.width;
    int64_t k = 0;
    if (ref_coef != 0.0f) out[k++] = {ref[m], ref_coef, -1};
    for (const auto& member : members) {
      if (member.first.second != 0.0f) out[k++] = {member.first.first, member.first.second, member.second};
    }
    plan.count[m] = k;
    plan.single[m] = static_cast<uint8_t>(k == 1 && out[0].coef == 1.0f);
  }
  return plan;
}

enum class RowError : uint8_t { kNone = 0, kNotFinite = 1, kAllMasked = 2 };


// Logits are processed in blocks of the vocabulary that stay in L1: every participating row
// is read once, the combined block is masked, scaled and folded into an online log-sum-exp.
constexpr int64_t kBlock = 2048;
// With fewer output rows than threads, a row's vocabulary is split into parts of at least this
// many tokens (a whole number of blocks), so that every thread has work.
constexpr int64_t kMinPart = 4 * kBlock;

// Running log-sum-exp state: max and the sum of exp(x - max).
struct OnlineLse {
  float max = kNegInf;
  float sum = 0.0f;
  void add(const float* x, int64_t n) {
    const float block_max = row_max(x, n);
    if (block_max == kNegInf) return;
    if (block_max > max) {
      sum = max == kNegInf ? 0.0f : sum * std::exp(max - block_max);
      max = block_max;
    }
    sum += row_sum_exp(x, n, max);
  }
  void merge(const OnlineLse& other) {
    if (other.max == kNegInf) return;
    if (other.max > max) {
      sum = (max == kNegInf ? 0.0f : sum * std::exp(max - other.max)) + other.sum;
      max = other.max;
    } else {
      sum += other.sum * std::exp(other.max - max);
    }
  }
  float value() const { return max == kNegInf ? kNegInf : max + std::log(sum); }
};

// What one pass over a range of a row's vocabulary leaves besides the combined logits.
struct RangeState {
  OnlineLse lse;           // of c (when the log-normaliser is needed)
  OnlineLse lse_unscaled;  // of the untempered combination (correction at temperature != 1)
  float max_c = kNegInf;   // max of c (when the log-normaliser is not needed)
  bool bad = false;        // a participating row holds NaN or +inf
  void merge(const RangeState& other) {
    lse.merge(other.lse);
    lse_unscaled.merge(other.lse_unscaled);
    max_c = other.max_c > max_c ? other.max_c : max_c;
    bad |= other.bad;
  }
};

template <typename scalar_t>
bool row_has_bad(const scalar_t* row, int64_t n) {
  for (int64_t v = 0; v < n; ++v) {
    const float l = static_cast<float>(row[v]);
    if (std::isnan(l) || l == kPosInf) return true;
  }
  return false;
}

// The row's state and what every part of its work reads.
template <typename scalar_t>
struct RowJob {
  const scalar_t* logits;
  int64_t row_stride;
  int64_t vocab;
  const Plan& plan;
  const float* temperature;
  const float* raw_lse;
  const int64_t* targets;
  uint64_t seed;
  const int64_t* stream_id;
  const int64_t* step;
  int64_t top_k;  // > 0: sample among the top_k (< vocab) largest c
  bool need_logz;
  int num_threads;
  const GatherOutputs& out;
  std::vector<RowError>& row_error;
  std::vector<int64_t>& bad_slot;

  // c of row m over [begin, end) into acc[begin, end), folded into a RangeState.
  RangeState combine(int64_t m, float* acc, int64_t begin, int64_t end, uint8_t* mask) const {
    const Slot* slots = plan.slots.data() + m * plan.width;
    const int64_t n_slots = plan.count[m];
    const float temp = temperature[m];
    const bool unscaled_lse = out.correction && !plan.single[m] && temp != 1.0f;
    RangeState state;
    for (int64_t v0 = begin; v0 < end; v0 += kBlock) {
      const int64_t len = std::min(kBlock, end - v0);
      float* block = acc + v0;
      for (int64_t k = 0; k < n_slots; ++k) {
        const scalar_t* row = logits + slots[k].row * row_stride + v0;
        state.bad |= k == 0 ? slot_accumulate<true>(row, slots[k].coef, block, mask, len)
                            : slot_accumulate<false>(row, slots[k].coef, block, mask, len);
      }
      if (state.bad) break;
      if (temp == 1.0f) {
        apply_mask(block, mask, len);
      } else {
        if (unscaled_lse) {
          apply_mask(block, mask, len);
          state.lse_unscaled.add(block, len);
        }
        apply_mask_scale(block, mask, temp, len);
      }
      if (need_logz) {
        state.lse.add(block, len);
      } else {
        const float block_max = row_max(block, len);
        state.max_c = block_max > state.max_c ? block_max : state.max_c;
      }
    }
    return state;
  }

  // The row's errors, log-normaliser, correction and target log-prob from its whole state;
  // false (and the error recorded) when the row fails.
  bool finish(int64_t m, const RangeState& state, const float* acc, float* logz_out) const {
    const Slot* slots = plan.slots.data() + m * plan.width;
    const int64_t n_slots = plan.count[m];
    if (state.bad) {
      // the first offending slot in canonical order, as the reference names it
      row_error[m] = RowError::kNotFinite;
      for (int64_t k = 0; k < n_slots; ++k) {
        if (row_has_bad(logits + slots[k].row * row_stride, vocab)) {
          bad_slot[m] = k;
          break;
        }
      }
      return false;
    }
    if ((need_logz ? state.lse.max : state.max_c) == kNegInf) {
      row_error[m] = RowError::kAllMasked;
      return false;
    }
    const float logz = need_logz ? state.lse.value() : 0.0f;
    if (out.correction) {
      if (plan.single[m]) {
        out.correction[m] = 0.0f;
      } else {
        // lse_v(sum_a a_a (l_a - lse(l_a))) = lse_v(sum_a a_a l_a) - sum_a a_a lse(l_a), temperature 1
        float correction = temperature[m] == 1.0f ? logz : state.lse_unscaled.value();
        for (int64_t k = 0; k < n_slots; ++k) correction -= slots[k].coef * raw_lse[slots[k].row];
        out.correction[m] = correction;
      }
    }
    if (out.logz) out.logz[m] = logz;
    if (out.target_logprob) out.target_logprob[m] = acc[targets[m]] - logz;
    *logz_out = logz;
    return true;
  }

  RowKey key(int64_t m) const {
    return row_key(seed, static_cast<uint64_t>(stream_id[m]), static_cast<uint64_t>(step[m]));
  }
};

// The screening noise shared by rows of one key (seed, stream, step): computed once per key
// used by two rows or more, in parallel; `slot[m]` is row m's noise row, -1 for none.
struct SharedNoise {
  std::vector<float> rows;
  std::vector<int64_t> slot;
};

template <typename scalar_t>
SharedNoise shared_noise(const RowJob<scalar_t>& job, int64_t m_rows) {
  SharedNoise shared;
  shared.slot.assign(m_rows, -1);
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> by_key;
  for (int64_t m = 0; m < m_rows; ++m) by_key[{job.stream_id[m], job.step[m]}].push_back(m);
  std::vector<int64_t> first_row;
  for (const auto& entry : by_key) {
    if (entry.second.size() < 2) continue;
    for (int64_t m : entry.second) shared.slot[m] = static_cast<int64_t>(first_row.size());
    first_row.push_back(entry.second.front());
  }
  const int64_t n_keys = static_cast<int64_t>(first_row.size());
  shared.rows.resize(n_keys * job.vocab);
#pragma omp parallel for num_threads(job.num_threads) schedule(dynamic, 1)
  for (int64_t k = 0; k < n_keys; ++k) screening_noise(job.key(first_row[k]), job.vocab, shared.rows.data() + k * job.vocab);
  return shared;
}

// One row at a time per thread: the combined row stays in the thread's cache for the sample.
template <typename scalar_t>
void run_whole_rows(const RowJob<scalar_t>& job) {
  const GatherOutputs& out = job.out;
  const int64_t vocab = job.vocab;
  const int64_t m_rows = static_cast<int64_t>(job.plan.count.size());
  const SharedNoise shared = out.sample ? shared_noise(job, m_rows) : SharedNoise{};
#pragma omp parallel num_threads(job.num_threads)
  {
    std::vector<float> local_acc(out.logprobs ? 0 : vocab);
    uint8_t mask[kBlock];
    std::vector<float> scratch(out.sample ? vocab : 0);
    std::vector<uint8_t> allowed(job.top_k > 0 ? vocab : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t m = 0; m < m_rows; ++m) {
      float* acc = out.logprobs ? out.logprobs + m * vocab : local_acc.data();
      float logz;
      if (!job.finish(m, job.combine(m, acc, 0, vocab, mask), acc, &logz)) continue;
      if (out.sample) {
        if (job.top_k > 0) top_k_allowed(acc, vocab, job.top_k, scratch.data(), allowed.data());
        const uint8_t* allow = job.top_k > 0 ? allowed.data() : nullptr;
        const float* noise_row = shared.slot[m] >= 0 ? shared.rows.data() + shared.slot[m] * vocab : nullptr;
        out.sample[m] = gumbel_argmax(acc, allow, vocab, 0, job.key(m), scratch.data(), noise_row).token;
      }
      if (out.logprobs) subtract(acc, logz, vocab);
    }
  }
}

// Fewer rows than threads: each row's vocabulary in `parts` ranges of `part_len` tokens, the
// ranges of all rows shared among the threads; the row-wide steps (errors, log-normaliser,
// top-k set) in between. Per-range draws merge in token order, so the sample is the one of
// the whole row to the bit.
template <typename scalar_t>
void run_split_rows(const RowJob<scalar_t>& job, int64_t parts, int64_t part_len) {
  const GatherOutputs& out = job.out;
  const int64_t vocab = job.vocab;
  const int64_t m_rows = static_cast<int64_t>(job.plan.count.size());
  const int64_t units = m_rows * parts;
  std::vector<float> buffer(out.logprobs ? 0 : m_rows * vocab);
  std::vector<float> scratch(out.sample ? m_rows * vocab : 0);
  std::vector<uint8_t> allowed(job.top_k > 0 ? m_rows * vocab : 0);
  std::vector<RangeState> states(units);
  std::vector<Draw> draws(units);
  std::vector<float> logz(m_rows, 0.0f);
  std::vector<uint8_t> row_ok(m_rows, 0);
  const auto row_acc = [&](int64_t m) { return (out.logprobs ? out.logprobs : buffer.data()) + m * vocab; };
#pragma omp parallel num_threads(job.num_threads)
  {
    uint8_t mask[kBlock];
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t m = u / parts, begin = (u % parts) * part_len;
      states[u] = job.combine(m, row_acc(m), begin, std::min(vocab, begin + part_len), mask);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t m = 0; m < m_rows; ++m) {
      RangeState state = states[m * parts];
      for (int64_t q = 1; q < parts; ++q) state.merge(states[m * parts + q]);
      row_ok[m] = job.finish(m, state, row_acc(m), &logz[m]);
      if (row_ok[m] && job.top_k > 0) {
        top_k_allowed(row_acc(m), vocab, job.top_k, scratch.data() + m * vocab, allowed.data() + m * vocab);
      }
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t m = u / parts, begin = (u % parts) * part_len;
      if (!row_ok[m]) continue;
      const int64_t len = std::min(vocab, begin + part_len) - begin;
      float* acc = row_acc(m) + begin;
      if (out.sample) {
        const uint8_t* allow = job.top_k > 0 ? allowed.data() + m * vocab + begin : nullptr;
        draws[u] = gumbel_argmax(acc, allow, len, begin, job.key(m), scratch.data() + m * vocab + begin);
      }
      if (out.logprobs) subtract(acc, logz[m], len);
    }
  }
  if (!out.sample) return;
  for (int64_t m = 0; m < m_rows; ++m) {
    if (!row_ok[m]) continue;
    Draw best = draws[m * parts];
    for (int64_t q = 1; q < parts; ++q) best.merge_later(draws[m * parts + q]);
    out.sample[m] = best.token;
  }
}

template <typename scalar_t>
void run_rows(const GatherInputs& in, const Plan& plan, const float* raw_lse, const GatherOutputs& out,
              std::vector<RowError>& row_error, std::vector<int64_t>& bad_slot) {
  const int64_t m_rows = in.m_rows;
  const int64_t vocab = in.vocab;
  const bool need_logz = out.logz || out.target_logprob || out.logprobs || out.correction;
  const int64_t kept_top_k = out.sample && in.top_k > 0 && in.top_k < vocab ? in.top_k : 0;
  const RowJob<scalar_t> job{static_cast<const scalar_t*>(in.logits), in.row_stride, vocab, plan, in.temperature,
                             raw_lse, in.targets, in.seed, in.stream_id, in.step, kept_top_k, need_logz,
                             in.num_threads, out, row_error, bad_slot};
  const int64_t threads = in.num_threads;
  int64_t parts = 1;
  if (m_rows > 0 && m_rows < threads) parts = std::min((threads + m_rows - 1) / m_rows, std::max<int64_t>(1, vocab / kMinPart));
  if (parts == 1) {
    run_whole_rows(job);
    return;
  }
  const int64_t part_len = ((vocab + parts - 1) / parts + kBlock - 1) / kBlock * kBlock;
  run_split_rows(job, (vocab + part_len - 1) / part_len, part_len);
}

// The log-sum-exp of every raw logits row that a non-single output row uses, once per row
// (the sequence-level correction), indexed by logits row.
template <typename scalar_t>
std::vector<float> raw_row_lse(const GatherInputs& in, const Plan& plan) {
  std::vector<uint8_t> needed(in.n_rows, 0);
  for (int64_t m = 0; m < in.m_rows; ++m) {
    if (plan.single[m]) continue;
    for (int64_t k = 0; k < plan.count[m]; ++k) needed[plan.slots[m * plan.width + k].row] = 1;
  }
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < in.n_rows; ++t)
    if (needed[t]) rows.push_back(t);
  std::vector<float> lse(in.n_rows, 0.0f);
  const scalar_t* logits = static_cast<const scalar_t*>(in.logits);
  const int64_t n = static_cast<int64_t>(rows.size());
#pragma omp parallel num_threads(in.num_threads)
  {
    std::vector<float> buffer(in.vocab);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      to_float(logits + rows[i] * in.row_stride, buffer.data(), in.vocab);
      lse[rows[i]] = row_lse(buffer.data(), in.vocab);
    }
  }
  return lse;
}

template <typename scalar_t>
void run_typed(const GatherInputs& in, const Plan& plan, const GatherOutputs& out, std::vector<RowError>& row_error,
               std::vector<int64_t>& bad_slot) {
  const std::vector<float> raw_lse = out.correction ? raw_row_lse<scalar_t>(in, plan) : std::vector<float>();
  run_rows<scalar_t>(in, plan, raw_lse.data(), out, row_error, bad_slot);
}

}  // namespace

GatherError compose_gather_rows(const GatherInputs& in, const GatherOutputs& out) {
  const Plan plan = make_plan(in.ref_index, in.src_index, in.src_weight, in.m_rows, in.j_cols);
  std::vector<RowError> row_error(in.m_rows, RowError::kNone);
  std::vector<int64_t> bad_slot(in.m_rows, -1);
  switch (in.dtype) {
    case LogitsDtype::kFloat32:
      run_typed<float>(in, plan, out, row_error, bad_slot);
      break;
    case LogitsDtype::kFloat16:
      run_typed<c10::Half>(in, plan, out, row_error, bad_slot);
      break;
    case LogitsDtype::kBFloat16:
      run_typed<c10::BFloat16>(in, plan, out, row_error, bad_slot);
      break;
  }
  // errors in the order of the reference: non-finite logits first, then all-masked rows
  GatherError error;
  for (int64_t m = 0; m < in.m_rows; ++m) {
    if (row_error[m] != RowError::kNotFinite) continue;
    const Slot& slot = plan.slots[m * plan.width + std::max<int64_t>(bad_slot[m], 0)];
    error.kind = GatherError::Kind::kNotFinite;
    error.output_row = m;
    error.logits_row = slot.row;
    error.member = slot.orig;
    return error;
  }
  for (int64_t m = 0; m < in.m_rows; ++m) {
    if (row_error[m] != RowError::kAllMasked) continue;
    error.kind = GatherError::Kind::kAllMasked;
    error.output_row = m;
    return error;
  }
  return error;
}

}  // namespace compose
}  // namespace dposhap
