// Turns logits into the next token: penalties, then greedy or temperature sampling restricted by
// top-k, top-p and min-p. Deterministic for a given seed.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "runtime/generator.h"

namespace pensieve {

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // `history` is every token of the sequence so far (prompt and generated), for the penalties.
  // Modifies `logits` in place.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  void apply_penalties(std::span<float> logits, std::span<const int32_t> history) const;
  int32_t sample_untruncated(std::span<const float> logits);
  int32_t draw();

  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace pensieve
