// Constrained decoding, part two: which tokens may come next. A TokenTrie holds every token's bytes
// as the client sees them (special and control tokens, which decode to nothing, are left out) in a
// trie, built once per tokenizer. A TokenConstraint walks that trie from the matcher's state,
// stepping the matcher's memoized DFA one byte per trie edge and pruning at the first dead byte, so
// a mask costs one walk over the live part of the trie. Masks are also cached per state: inside a
// string the state repeats from token to token and the walk is skipped.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/grammar.h"

namespace pensieve {

class Tokenizer;

class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tok);
  // One entry per token id; "" for a token that can never be generated under a grammar.
  explicit TokenTrie(std::vector<std::string> token_bytes, bool strips_leading_space = false);

  int n_vocab() const { return int(bytes_.size()); }
  const std::string& bytes(int32_t id) const { return bytes_[size_t(id)]; }
  bool strips_leading_space() const { return strip_; }
  size_t n_nodes() const { return nodes_.size(); }

  struct Node {
    int32_t first_edge = 0, n_edges = 0;    // into edges()
    int32_t first_token = 0, n_tokens = 0;  // into tokens(): the ids whose bytes end here
  };
  struct Edge {
    uint8_t byte;
    int32_t child;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<Edge>& edges() const { return edges_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  void build();
  std::vector<std::string> bytes_;
  bool strip_ = false;
  std::vector<Node> nodes_;  // node 0: the root
  std::vector<Edge> edges_;
  std::vector<int32_t> tokens_;
};

// The grammar side of one generation: masks logits and follows the sampled tokens.
class TokenConstraint {
 public:
  TokenConstraint(GrammarPtr grammar, std::shared_ptr<const TokenTrie> trie);

  // The allowed tokens as a bitset over the vocabulary (bit i of word i/64). `first`: no token
  // generated yet, so a leading space of a SentencePiece token is dropped by decoding.
  const std::vector<uint64_t>& allowed(bool first);
  // Sets the logit of every token that would leave the grammar to -inf. `end_ids` (end of turn)
  // stay allowed only while the grammar is complete. Returns how many tokens stay allowed.
  int apply(std::span<float> logits, std::span<const int32_t> end_ids, bool first);
  // Follows a sampled token (not an end id). Error when it leaves the grammar.
  void accept(int32_t id, bool first);

  bool complete() const { return m_.complete(); }
  bool finished() const { return m_.finished(); }
  const GrammarMatcher& matcher() const { return m_; }

 private:
  void walk(GrammarMatcher::State s, bool first, std::vector<uint64_t>& out);

  GrammarMatcher m_;
  std::shared_ptr<const TokenTrie> trie_;
  std::unordered_map<int64_t, std::vector<uint64_t>> cache_;  // (state, first) -> mask
  std::vector<std::pair<int32_t, GrammarMatcher::State>> stack_;
};

}  // namespace pensieve
