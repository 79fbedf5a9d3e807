#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <set>

namespace pensieve {
namespace {

std::vector<float> logits_of(std::initializer_list<float> l) { return std::vector<float>(l); }

TEST(Sampler, GreedyTakesTheArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  auto l = logits_of({0.1f, 2.0f, 1.9f, -3.0f});
  EXPECT_EQ(s.sample(l, {}), 1);
}

// Over a vocabulary's width, with the largest logit twice and an odd length: the first of the two.
TEST(Sampler, GreedyTakesTheFirstLargestOfAVocabulary) {
  std::mt19937 rng(4);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int vocab : {32003, 128256}) {
    std::vector<float> l(static_cast<size_t>(vocab));
    for (float& x : l) x = dist(rng);
    const size_t at = size_t(vocab) / 3, again = size_t(vocab) - 2;
    l[at] = l[again] = 100.0f;
    SamplingParams p;
    p.temperature = 0;
    Sampler s(p);
    EXPECT_EQ(s.sample(l, {}), int32_t(at));
    l[at] = 0.0f;
    EXPECT_EQ(s.sample(l, {}), int32_t(again));
  }
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 1234;
  Sampler a(p), b(p);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 50; ++i) {
    auto la = logits_of({0.0f, 0.1f, 0.2f, 0.3f, 0.4f});
    auto lb = la;
    ta.push_back(a.sample(la, {}));
    tb.push_back(b.sample(lb, {}));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_GT(std::set<int32_t>(ta.begin(), ta.end()).size(), 1u);  // it really samples
}

TEST(Sampler, TopKRestrictsToTheKBest) {
  SamplingParams p;
  p.temperature = 5.0f;  // flat, so any survivor is likely to appear
  p.top_k = 2;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 7;
  Sampler s(p);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 200; ++i) {
    auto l = logits_of({1.0f, 3.0f, 0.5f, 2.9f});
    ++seen[s.sample(l, {})];
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(1) && seen.count(3));
}

// Top-k over a real vocabulary's width: exactly the k best logits survive (of equal ones, the lower
// id), masked tokens never do.
TEST(Sampler, TopKKeepsTheKBestOfAVocabulary) {
  constexpr int kVocab = 32064, kK = 6;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> base(kVocab);
  for (float& l : base) l = dist(rng);
  std::vector<int32_t> order(kVocab);
  for (int i = 0; i < kVocab; ++i) order[size_t(i)] = i;
  auto best_first = [&](std::vector<int32_t>& ids) {
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      return base[size_t(a)] > base[size_t(b)] || (base[size_t(a)] == base[size_t(b)] && a < b);
    });
  };
  best_first(order);
  base[size_t(order[0])] = -std::numeric_limits<float>::infinity();  // masked: never a candidate
  // The k-th best (order[kK], the best being masked) ties with a token below the cut: of the two,
  // the lower id is kept.
  const int32_t kth = order[kK], other = std::max(order[kK + 1], order[kK + 2]);
  base[size_t(other)] = base[size_t(kth)];
  best_first(order);  // the masked token last
  const std::set<int32_t> expected(order.begin(), order.begin() + kK);
  SamplingParams p;
  p.temperature = 100.0f;  // flat: every survivor turns up
  p.top_k = kK;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 9;
  Sampler s(p);
  std::set<int32_t> seen;
  for (int i = 0; i < 600; ++i) {
    std::vector<float> l = base;
    seen.insert(s.sample(l, {}));
  }
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(seen.count(std::min(kth, other)), 1u);
  EXPECT_EQ(seen.count(std::max(kth, other)), 0u);
}

// Without top-k over a real vocabulary's width (the candidates are not sorted whole there): the
// tokens drawn are exactly the top-p nucleus cut by min-p, as a full sort finds them, for a peaked
// distribution (min-p cuts first; top-p first) and a flat one (a nucleus of most of the vocabulary).
TEST(Sampler, UntruncatedCutsMatchAFullSort) {
  constexpr int kVocab = 32064;
  struct Case {
    float sd, top_p, min_p;
    int draws;
    bool all_seen;  // every survivor turns up in `draws`
  };
  for (const Case c : {Case{3.0f, 1.0f, 0.05f, 3000, true}, Case{3.0f, 0.5f, 0.0f, 3000, true},
                       Case{3.0f, 0.9f, 0.2f, 3000, true}, Case{0.01f, 0.9f, 0.0f, 200, false}}) {
    std::mt19937 rng(17);
    std::normal_distribution<float> dist(0.0f, c.sd);
    std::vector<float> base(kVocab);
    for (float& l : base) l = dist(rng);
    base[123] = -std::numeric_limits<float>::infinity();  // masked: never drawn
    // The reference: every token best first, the softmax over all, top-p's prefix, then min-p.
    std::vector<int32_t> order;
    for (int i = 0; i < kVocab; ++i)
      if (i != 123) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return base[size_t(a)] > base[size_t(b)] || (base[size_t(a)] == base[size_t(b)] && a < b);
    });
    const double top = base[size_t(order[0])];
    double sum = 0;
    for (int32_t id : order) sum += std::exp(double(base[size_t(id)]) - top);
    // (The flat case's nucleus reaches a little further: its last tokens' cut depends on how the
    // sampler rounds ~29k probabilities of ~3.5e-5 each.)
    const double reach = c.all_seen ? c.top_p : c.top_p + 1e-3;
    std::set<int32_t> expected;
    double acc = 0;
    for (int32_t id : order) {
      const double pr = std::exp(double(base[size_t(id)]) - top) / sum;
      if (pr < c.min_p / sum) break;  // below min_p times the best one's probability
      expected.insert(id);
      acc += pr;
      if (acc >= reach) break;
    }
    SamplingParams p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.seed = 21;
    Sampler s(p);
    std::set<int32_t> seen;
    for (int i = 0; i < c.draws; ++i) {
      std::vector<float> l = base;
      const int32_t t = s.sample(l, {});
      ASSERT_TRUE(expected.count(t)) << "token " << t << " is outside the nucleus of " << expected.size();
      seen.insert(t);
    }
    if (c.all_seen) {
      EXPECT_EQ(seen, expected);
    }
    std::printf("[ sd %.2f, top-p %.2f, min-p %.2f ] %zu survivors, %zu drawn\n", c.sd, c.top_p, c.min_p,
                expected.size(), seen.size());
  }
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 0.5f;
  p.min_p = 0.0f;
  p.seed = 3;
  Sampler s(p);
  for (int i = 0; i < 100; ++i) {
    auto l = logits_of({5.0f, 0.0f, 0.0f, 0.0f});  // token 0 holds > 95% of the mass
    EXPECT_EQ(s.sample(l, {}), 0);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.5f;
  p.seed = 11;
  Sampler s(p);
  for (int i = 0; i < 100; ++i) {
    auto l = logits_of({2.0f, 2.0f - 0.1f, -1.0f, -2.0f});  // 2 and 3 are < 0.5 x best
    const int32_t t = s.sample(l, {});
    EXPECT_TRUE(t == 0 || t == 1);
  }
}

TEST(Sampler, RepetitionAndPresencePenaltiesChangeTheChoice) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  auto l = logits_of({1.0f, 1.5f, 0.9f});
  const std::vector<int32_t> history = {1};
  EXPECT_EQ(s.sample(l, history), 0);  // 1.5 / 2 = 0.75 < 1.0

  SamplingParams q;
  q.temperature = 0;
  q.presence_penalty = 1.0f;
  Sampler t(q);
  auto l2 = logits_of({1.0f, 1.5f, 0.9f});
  EXPECT_EQ(t.sample(l2, history), 0);  // 1.5 - 1 = 0.5
}

}  // namespace
}  // namespace pensieve
