// The "alone" side of the batched-equals-solo tests (CPU and GPU): a model's longest reference
// prompt, and the logits of one sequence decoded by itself.
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/model.h"
#include "reference.h"
#include "util/thread_pool.h"

namespace pensieve::test {

inline std::vector<int32_t> longest_prompt(const std::vector<Reference>& refs) {
  std::vector<int32_t> longest;
  for (const auto& r : refs)
    if (r.input_ids.size() > longest.size()) longest = r.input_ids;
  return longest;
}

// `steps` rows of logits: the prompt in one pass, then greedy decoding one token at a time.
inline std::vector<std::vector<float>> solo_greedy_logits(const Model& model, const std::vector<int32_t>& prompt,
                                                          int steps, bool exact, ThreadPool& pool) {
  SequenceState st(model.config(), int(prompt.size()) + steps, exact);
  st.exact_activations = exact;
  std::vector<std::vector<float>> out;
  std::vector<float> logits;
  model.forward(st, prompt, false, logits, pool);
  for (int i = 0; i < steps; ++i) {
    out.push_back(logits);
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    model.forward(st, std::span<const int32_t>(&next, 1), false, logits, pool);
  }
  return out;
}

}  // namespace pensieve::test
