#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pensieve {
namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

// The index of the largest logit (the first of equal ones), as std::max_element finds it, without
// its dependency through memory (~8 cycles a value): the maximum in independent four-wide lanes,
// then the first place that holds it.
size_t argmax(std::span<const float> v) {
  float m = kMasked;
  size_t i = 0;
#if defined(__SSE2__)
  __m128 a = _mm_set1_ps(kMasked), b = a;
  for (; i + 8 <= v.size(); i += 8) {
    a = _mm_max_ps(a, _mm_loadu_ps(v.data() + i));
    b = _mm_max_ps(b, _mm_loadu_ps(v.data() + i + 4));
  }
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_max_ps(a, b));
  for (float l : lanes) m = std::max(m, l);
#endif
  for (; i < v.size(); ++i) m = std::max(m, v[i]);
  for (size_t j = 0; j < v.size(); ++j)
    if (v[j] == m) return j;
  return 0;
}

// Whether any of the 16 values at p is above t.
inline bool any_above16(const float* p, float t) {
#if defined(__SSE2__)
  const __m128 tt = _mm_set1_ps(t);
  const __m128 c = _mm_or_ps(_mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(p), tt), _mm_cmpgt_ps(_mm_loadu_ps(p + 4), tt)),
                             _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(p + 8), tt), _mm_cmpgt_ps(_mm_loadu_ps(p + 12), tt)));
  return _mm_movemask_ps(c) != 0;
#else
  for (int j = 0; j < 16; ++j)
    if (p[j] > t) return true;
  return false;
#endif
}

// A candidate (logit or probability, id) before another: the higher value, then the lower id (a
// closure type, so that the heap and sort calls inline it).
constexpr auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

}  // namespace

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
  if (p_.temperature <= 0.0f) return int32_t(argmax(logits));

  // Candidates best first (the higher logit, then the lower id), cut by top-k first. Tokens masked
  // out (-inf, e.g. by a grammar) never become candidates.
  cand_.clear();
  const size_t n = logits.size();
  const size_t k = p_.top_k > 0 ? size_t(p_.top_k) : n;
  if (k >= n) return sample_untruncated(logits);
  // The first k candidates; then, where tokens remain, the k best in one pass over the rest: a heap
  // of k whose front is the worst kept; a later token (a higher id) replaces it only with a higher
  // logit, and runs of 16 with none above the front are passed over four-wide. A few hundred
  // replacements in a 32k vocabulary, not a sort of it.
  size_t i = 0;
  for (; i < n && cand_.size() < k; ++i)
    if (logits[i] != kMasked) cand_.push_back({logits[i], int32_t(i)});
  if (i < n) {
    std::make_heap(cand_.begin(), cand_.end(), better);
    float worst = cand_.front().first;  // masked logits are never above it
    auto consider = [&](size_t j) {
      if (logits[j] <= worst) return;
      std::pop_heap(cand_.begin(), cand_.end(), better);
      cand_.back() = {logits[j], int32_t(j)};
      std::push_heap(cand_.begin(), cand_.end(), better);
      worst = cand_.front().first;
    };
    for (; i + 16 <= n; i += 16)
      if (any_above16(logits.data() + i, worst))
        for (size_t j = i; j < i + 16; ++j) consider(j);
    for (; i < n; ++i) consider(i);
  }
  if (cand_.empty()) return int32_t(argmax(logits));
  std::sort(cand_.begin(), cand_.end(), better);

  // Softmax at temperature.
  const float max_l = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp((c.first - max_l) / p_.temperature);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = float(c.first / sum);
  return draw();
}

// Without top-k every token is a candidate, and sorting a vocabulary (~2 ms at 32k) is what the
// cuts below need only the head of: the softmax's sum comes from one pass over every token; min-p
// keeps only tokens whose weight exp((l - max) / T) is at least min_p (the normalisation cancels),
// so the others are never sorted; and top-p's nucleus is selected before it is sorted.
int32_t Sampler::sample_untruncated(std::span<const float> logits) {
  const size_t best = argmax(logits);
  const float max_l = logits[best];
  if (max_l == kMasked) return int32_t(best);  // everything masked: the argmax fallback
  // Below this weight a token is never a min-p survivor (a margin for the rounding of the
  // normalised comparison min-p makes); 0: every token stays.
  const float cut = p_.min_p > 0.0f ? p_.min_p * (1.0f - 1e-4f) : 0.0f;
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == kMasked) continue;
    const float e = std::exp((logits[i] - max_l) / p_.temperature);
    sum += e;
    if (e >= cut) cand_.push_back({e, int32_t(i)});
  }
  for (auto& c : cand_) c.first = float(c.first / sum);
  // The best first, as far as the cuts below need them: with top-p, the best m (selected, not
  // sorted; m doubling from 256) until their mass reaches p, then those sorted (its cut below is
  // then exact); with min-p alone, the few it can keep; with neither, no order at all (every token
  // is drawn from as it is).
  if (p_.top_p < 1.0f) {
    const size_t size = cand_.size();
    size_t m = 0;
    double acc = 0;
    for (size_t next = std::min<size_t>(256, size);; next = std::min(size, 2 * next)) {
      if (next < size)
        std::nth_element(cand_.begin() + ptrdiff_t(m), cand_.begin() + ptrdiff_t(next), cand_.end(), better);
      for (size_t i = m; i < next; ++i) acc += cand_[i].first;
      m = next;
      if (acc >= p_.top_p || m == size) break;
    }
    cand_.resize(m);
    std::sort(cand_.begin(), cand_.end(), better);
  } else if (p_.min_p > 0.0f) {
    std::sort(cand_.begin(), cand_.end(), better);
  }
  return draw();
}

// The top-p and min-p cuts of the candidates (best first, their probabilities normalised over every
// token), then a draw from what is left.
int32_t Sampler::draw() {
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
