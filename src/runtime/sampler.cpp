#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace pensieve {

Sampler::Sampler(const SamplingParams& params)
    : p_(params), rng_(params.seed ? params.seed : std::random_device{}()) {}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> history) const {
  const bool rep = p_.repetition_penalty != 1.0f;
  if (!rep && p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f) return;
  const size_t window = p_.penalty_window > 0 ? size_t(p_.penalty_window) : history.size();
  const size_t from = history.size() > window ? history.size() - window : 0;
  std::unordered_map<int32_t, int> counts;
  for (size_t i = from; i < history.size(); ++i) ++counts[history[i]];
  for (const auto& [id, count] : counts) {
    if (id < 0 || size_t(id) >= logits.size()) continue;
    float& l = logits[id];
    if (rep) l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    l -= p_.presence_penalty + p_.frequency_penalty * float(count);
  }
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  apply_penalties(logits, history);
  if (p_.temperature <= 0.0f)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

  // Candidates best first (the higher logit, then the lower id), cut by top-k first. Tokens masked
  // out (-inf, e.g. by a grammar) never become candidates.
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  cand_.clear();
  const size_t k = p_.top_k > 0 ? size_t(p_.top_k) : logits.size();
  if (k < logits.size()) {
    // The k best in one pass over the vocabulary: a heap of k whose front is the worst kept; a
    // later token (a higher id) replaces it only with a higher logit. A few hundred replacements
    // in a 32k vocabulary, not a sort of it.
    for (size_t i = 0; i < logits.size(); ++i) {
      const float l = logits[i];
      if (l == kMasked) continue;
      if (cand_.size() < k) {
        cand_.push_back({l, int32_t(i)});
        if (cand_.size() == k) std::make_heap(cand_.begin(), cand_.end(), better);
      } else if (l > cand_.front().first) {
        std::pop_heap(cand_.begin(), cand_.end(), better);
        cand_.back() = {l, int32_t(i)};
        std::push_heap(cand_.begin(), cand_.end(), better);
      }
    }
  } else {
    for (size_t i = 0; i < logits.size(); ++i)
      if (logits[i] != kMasked) cand_.push_back({logits[i], int32_t(i)});
  }
  if (cand_.empty()) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::sort(cand_.begin(), cand_.end(), better);

  // Softmax at temperature.
  const float max_l = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp((c.first - max_l) / p_.temperature);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = float(c.first / sum);

  // top-p: the smallest prefix whose mass reaches p (at least one token).
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = 0;
    while (keep < cand_.size()) {
      acc += cand_[keep++].first;
      if (acc >= p_.top_p) break;
    }
    cand_.resize(std::max<size_t>(1, keep));
  }
  // min-p: drop tokens less likely than min_p times the most likely one.
  if (p_.min_p > 0.0f) {
    const float floor = cand_[0].first * p_.min_p;
    size_t keep = 1;
    while (keep < cand_.size() && cand_[keep].first >= floor) ++keep;
    cand_.resize(keep);
  }
  double total = 0;
  for (const auto& c : cand_) total += c.first;
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_);
  for (const auto& c : cand_) {
    r -= c.first;
    if (r <= 0) return c.second;
  }
  return cand_.back().second;
}

}  // namespace pensieve
