#include "runtime/token_constraint.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "text/tokenizer.h"

namespace pensieve {

namespace {

std::vector<std::string> generable_bytes(const Tokenizer& tok) {
  std::vector<std::string> out(size_t(tok.n_vocab()));
  for (int32_t id = 0; id < tok.n_vocab(); ++id)
    if (!tok.is_special(id)) out[size_t(id)] = tok.token_bytes(id, /*skip_special=*/true);
  return out;
}

}  // namespace

TokenTrie::TokenTrie(const Tokenizer& tok) : bytes_(generable_bytes(tok)), strip_(tok.strips_leading_space()) {
  build();
}

TokenTrie::TokenTrie(std::vector<std::string> token_bytes, bool strips_leading_space)
    : bytes_(std::move(token_bytes)), strip_(strips_leading_space) {
  build();
}

// Sorting the tokens by bytes lays the trie out depth-first: each node's children, and the tokens
// ending in its subtree, are contiguous.
void TokenTrie::build() {
  std::vector<int32_t> order;
  for (int32_t id = 0; id < n_vocab(); ++id)
    if (!bytes_[size_t(id)].empty()) order.push_back(id);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes_[size_t(a)] < bytes_[size_t(b)]; });
  // A pointer-based trie first, then flattened.
  struct Tmp {
    std::vector<std::pair<uint8_t, int32_t>> kids;
    std::vector<int32_t> ids;
  };
  std::vector<Tmp> tmp(1);
  for (int32_t id : order) {
    int32_t n = 0;
    for (char c : bytes_[size_t(id)]) {
      auto& kids = tmp[size_t(n)].kids;
      if (!kids.empty() && kids.back().first == uint8_t(c)) {
        n = kids.back().second;
      } else {
        tmp.emplace_back();
        const int32_t child = int32_t(tmp.size() - 1);
        tmp[size_t(n)].kids.push_back({uint8_t(c), child});
        n = child;
      }
    }
    tmp[size_t(n)].ids.push_back(id);
  }
  nodes_.resize(tmp.size());
  for (size_t i = 0; i < tmp.size(); ++i) {
    nodes_[i].first_edge = int32_t(edges_.size());
    nodes_[i].n_edges = int32_t(tmp[i].kids.size());
    for (auto [b, c] : tmp[i].kids) edges_.push_back({b, c});
    nodes_[i].first_token = int32_t(tokens_.size());
    nodes_[i].n_tokens = int32_t(tmp[i].ids.size());
    tokens_.insert(tokens_.end(), tmp[i].ids.begin(), tmp[i].ids.end());
  }
}

TokenConstraint::TokenConstraint(GrammarPtr grammar, std::shared_ptr<const TokenTrie> trie)
    : m_(std::move(grammar)), trie_(std::move(trie)) {}

void TokenConstraint::walk(GrammarMatcher::State s, bool first, std::vector<uint64_t>& out) {
  const auto& nodes = trie_->nodes();
  const auto& edges = trie_->edges();
  const auto& toks = trie_->tokens();
  auto allow = [&](int32_t node) {
    const TokenTrie::Node& nd = nodes[size_t(node)];
    for (int32_t i = 0; i < nd.n_tokens; ++i) {
      const int32_t id = toks[size_t(nd.first_token + i)];
      out[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
    }
  };
  stack_.clear();
  stack_.push_back({0, s});
  const bool strip = first && trie_->strips_leading_space();
  while (!stack_.empty()) {
    const auto [n, st] = stack_.back();
    stack_.pop_back();
    const TokenTrie::Node& nd = nodes[size_t(n)];
    for (int32_t e = nd.first_edge; e < nd.first_edge + nd.n_edges; ++e) {
      const TokenTrie::Edge& edge = edges[size_t(e)];
      // The first token's leading space is dropped by decoding, so it does not reach the grammar
      // (a token that is only that space would add nothing and stays disallowed).
      if (strip && n == 0 && edge.byte == ' ') {
        stack_.push_back({edge.child, st});
        continue;
      }
      const GrammarMatcher::State next = m_.step(st, edge.byte);
      if (next < 0) continue;
      allow(edge.child);
      stack_.push_back({edge.child, next});
    }
  }
}

const std::vector<uint64_t>& TokenConstraint::allowed(bool first) {
  const int64_t key = int64_t(m_.state()) * 2 + (first ? 1 : 0);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  if (cache_.size() >= 256) cache_.clear();  // bounded: 256 masks of n_vocab bits
  std::vector<uint64_t> mask((size_t(trie_->n_vocab()) + 63) / 64, 0);
  walk(m_.state(), first, mask);
  return cache_.emplace(key, std::move(mask)).first->second;
}

int TokenConstraint::apply(std::span<float> logits, std::span<const int32_t> end_ids, bool first) {
  const std::vector<uint64_t>& mask = allowed(first);
  constexpr float kNeg = -std::numeric_limits<float>::infinity();
  const size_t n = std::min(logits.size(), size_t(trie_->n_vocab()));
  int count = 0;
  // End ids: allowed only when the grammar is complete (they never appear in the trie).
  std::vector<float> keep;
  const bool done = m_.complete();
  for (int32_t id : end_ids)
    keep.push_back(id >= 0 && size_t(id) < logits.size() ? logits[size_t(id)] : kNeg);
  for (size_t w = 0; w < mask.size(); ++w) {
    const uint64_t bits = mask[w];
    count += __builtin_popcountll(bits);
    if (bits == ~uint64_t(0)) continue;
    const size_t end = std::min(n, (w + 1) * 64);
    for (size_t i = w * 64; i < end; ++i)
      if (!((bits >> (i & 63)) & 1)) logits[i] = kNeg;
  }
  for (size_t i = n; i < logits.size(); ++i) logits[i] = kNeg;
  for (size_t k = 0; k < end_ids.size(); ++k) {
    const int32_t id = end_ids[k];
    if (id < 0 || size_t(id) >= logits.size()) continue;
    const bool was_allowed = logits[size_t(id)] != kNeg;
    if (done) {
      logits[size_t(id)] = keep[k];
      if (!was_allowed) ++count;
    } else if (was_allowed) {
      logits[size_t(id)] = kNeg;
      --count;
    }
  }
  return count;
}

void TokenConstraint::accept(int32_t id, bool first) {
  if (id < 0 || id >= trie_->n_vocab()) throw Error("grammar: token id " + std::to_string(id) + " out of range");
  std::string_view b = trie_->bytes(id);
  if (first && trie_->strips_leading_space() && !b.empty() && b[0] == ' ') b.remove_prefix(1);
  if (b.empty() || !m_.advance(b))
    throw Error("grammar: token " + std::to_string(id) + " does not continue the grammar");
}

}  // namespace pensieve
