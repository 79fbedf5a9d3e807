// The batched-equals-solo tests (CPU and GPU): a model's longest reference prompt, the three
// prompts made of it, the logits of one sequence decoded by itself, and the sequences of a batch.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "reference.h"
#include "util/thread_pool.h"

namespace pensieve::test {

inline std::vector<int32_t> longest_prompt(const std::vector<Reference>& refs) {
  std::vector<int32_t> longest;
  for (const auto& r : refs)
    if (r.input_ids.size() > longest.size()) longest = r.input_ids;
  return longest;
}

// The three prompts batched together: the longest one, its tokens 3 .. 9, and its first `head`.
inline std::vector<std::vector<int32_t>> batch_prompts(const std::vector<int32_t>& longest, size_t head) {
  return {longest, std::vector<int32_t>(longest.begin() + 3, longest.begin() + 10),
          std::vector<int32_t>(longest.begin(), longest.begin() + std::ptrdiff_t(head))};
}

// The computing modes the batching tests run: float32 activations and cache, the serving path's
// (int8 / fp16 activations, fp16 cache), and float32 activations with the Q8 cache.
struct Mode {
  bool exact;
  KvType kv;
  const char* name;
};
inline constexpr Mode kModes[] = {{true, KvType::F32, "exact"}, {false, KvType::F16, "serving"},
                                  {true, KvType::Q8, "exact, q8 cache"}};

// `steps` rows of logits: the prompt in one pass, then greedy decoding one token at a time. Each
// pass reads its logits into `into` (room for a vocabulary's) where given, else into a vector.
inline std::vector<std::vector<float>> solo_greedy_logits(const Model& model, const std::vector<int32_t>& prompt,
                                                          int steps, bool exact, ThreadPool& pool, KvType kv,
                                                          float* into = nullptr) {
  SequenceState st(model.config(), int(prompt.size()) + steps, kv);
  st.exact_activations = exact;
  const size_t vocab = size_t(model.config().n_vocab);
  std::vector<float> own(into ? 0 : vocab);
  float* logits = into ? into : own.data();
  std::vector<std::vector<float>> out;
  model.forward(st, prompt, false, logits, pool);
  for (int i = 0; i < steps; ++i) {
    out.emplace_back(logits, logits + vocab);
    const int32_t next = int32_t(std::max_element(logits, logits + vocab) - logits);
    model.forward(st, std::span<const int32_t>(&next, 1), false, logits, pool);
  }
  return out;
}

// solo_greedy_logits of each prompt.
inline std::vector<std::vector<std::vector<float>>> solo_greedy_logits(const Model& model,
                                                                       const std::vector<std::vector<int32_t>>& prompts,
                                                                       int steps, bool exact, ThreadPool& pool,
                                                                       KvType kv) {
  std::vector<std::vector<std::vector<float>>> solo;
  for (const auto& prompt : prompts) solo.push_back(solo_greedy_logits(model, prompt, steps, exact, pool, kv));
  return solo;
}

// n empty sequences of the paged pool kv, computing exactly or not.
inline std::vector<std::unique_ptr<SequenceState>> pool_sequences(KvPool& kv, size_t n, bool exact) {
  std::vector<std::unique_ptr<SequenceState>> seqs;
  for (size_t s = 0; s < n; ++s) {
    seqs.push_back(std::make_unique<SequenceState>(kv));
    seqs.back()->exact_activations = exact;
  }
  return seqs;
}

// A batch step of seqs: each sequence's tokens past its cache, the blocks its table needs added
// from `blocks` first (as the scheduler adds them), its last row's logits wanted.
inline std::vector<BatchItem> batch_step(const std::vector<std::unique_ptr<SequenceState>>& seqs,
                                         const std::vector<std::vector<int32_t>>& tokens, BlockManager& blocks) {
  std::vector<BatchItem> items;
  for (size_t s = 0; s < seqs.size(); ++s) {
    SequenceState& st = *seqs[s];
    const int n = int(tokens[s].size()) - st.n_past;
    while (st.capacity() < st.n_past + n) st.blocks.push_back(blocks.allocate());
    items.push_back({&st, std::span<const int32_t>(tokens[s]).subspan(size_t(st.n_past)), BatchItem::Logits::Last});
  }
  return items;
}

}  // namespace pensieve::test
