// Constrained decoding, part one: a byte-level context-free grammar and its matcher. A Grammar is
// an immutable program of rules; each rule is a list of alternatives and each alternative a run of
// elements (a set of bytes, or a call of another rule). Grammars compose (sequence, choice,
// repeat) by copying their programs into a new one, so a GrammarPtr can be shared by any number of
// generations. The JSON-Schema compiler (json_schema_grammar.cpp) builds on the same builder.
//
// The matcher keeps the set of parse stacks that the bytes so far leave alive, as in a pushdown
// automaton. Stacks are interned (a stack is an id: its top position and the id of the rest), and
// so are the sets of stacks, so a set is a state id and each (state, byte) step is computed once and
// then looked up: the matcher becomes a lazily built DFA over the reachable states, which is what
// makes walking the token trie for a sampling mask cheap (runtime/token_constraint.h).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace pensieve {

// A schema the compiler cannot turn into a grammar: an unsupported keyword, a bad value, an
// unsupported regex construct. `keyword` names the keyword (the server answers 400 naming it).
struct SchemaError : Error {
  SchemaError(std::string kw, const std::string& message) : Error(message), keyword(std::move(kw)) {}
  std::string keyword;
};

struct ByteSet {
  uint64_t w[4] = {0, 0, 0, 0};
  void set(uint8_t b) { w[b >> 6] |= uint64_t(1) << (b & 63); }
  void set_range(uint8_t lo, uint8_t hi) {
    for (int b = lo; b <= hi; ++b) set(uint8_t(b));
  }
  bool has(uint8_t b) const { return (w[b >> 6] >> (b & 63)) & 1; }
  bool empty() const { return !(w[0] | w[1] | w[2] | w[3]); }
  bool operator==(const ByteSet& o) const {
    return w[0] == o.w[0] && w[1] == o.w[1] && w[2] == o.w[2] && w[3] == o.w[3];
  }
};

class Grammar {
 public:
  struct Elem {
    enum Kind : uint8_t { End, Bytes, Call } kind = End;
    int32_t arg = 0;  // Bytes: index into classes(); Call: rule index
  };
  const std::vector<Elem>& elems() const { return elems_; }
  const std::vector<ByteSet>& classes() const { return classes_; }
  // Rule -> the positions in elems() where its alternatives start (each closed by an End).
  const std::vector<std::vector<int32_t>>& rules() const { return rules_; }
  int root() const { return root_; }
  // Bytes that every byte set of the program treats alike share a group: a step over one byte of
  // a group is a step over all of them.
  const std::vector<std::vector<uint8_t>>& byte_groups() const { return groups_; }
  int byte_group(uint8_t b) const { return group_of_[b]; }

  // Whole-text checks (tests, tools): `text` is a complete sentence / a prefix of one.
  bool accepts(std::string_view text) const;
  bool accepts_prefix(std::string_view text) const;

 private:
  friend class GrammarBuilder;
  std::vector<Elem> elems_;
  std::vector<ByteSet> classes_;
  std::vector<std::vector<int32_t>> rules_;
  int root_ = 0;
  std::array<int, 256> group_of_{};
  std::vector<std::vector<uint8_t>> groups_;
};
using GrammarPtr = std::shared_ptr<const Grammar>;

// Builds one program. Rules may be reserved first and defined later (recursion).
class GrammarBuilder {
 public:
  using Elem = Grammar::Elem;
  using Alt = std::vector<Elem>;
  int reserve();
  void define(int rule, std::vector<Alt> alts);
  int rule(std::vector<Alt> alts) {
    const int r = reserve();
    define(r, std::move(alts));
    return r;
  }
  Elem bytes(const ByteSet& set);
  Elem byte(uint8_t b) {
    ByteSet s;
    s.set(b);
    return bytes(s);
  }
  static Elem call(int rule) { return {Elem::Call, rule}; }
  Alt literal(std::string_view text);       // one element per byte
  int import(const Grammar& g);             // copies g's program; returns the rule of its root
  // X{min,max} with `sep` between items (sep < 0: none); max < 0: unbounded.
  int repeat(int item, int min, int max, int sep = -1);
  int optional(int r) { return rule({{call(r)}, {}}); }
  GrammarPtr build(int root) const;

 private:
  std::vector<std::vector<Alt>> rules_;
  std::vector<bool> defined_;
  std::vector<ByteSet> classes_;
};

// Any JSON value matching the schema (SchemaError when it cannot be compiled). Objects are written
// with their properties in `properties` order: pass an ordered_json to keep the client's order (a
// plain json sorts keys).
GrammarPtr grammar_json_schema(const nlohmann::ordered_json& schema);
GrammarPtr grammar_json_schema(const nlohmann::json& schema);
GrammarPtr grammar_json_value();                                // any JSON value
GrammarPtr grammar_json_object();                               // any JSON object (json_object mode)
GrammarPtr grammar_literal(std::string_view bytes);
GrammarPtr grammar_sequence(std::vector<GrammarPtr> parts);
GrammarPtr grammar_choice(std::vector<GrammarPtr> options);
GrammarPtr grammar_repeat(GrammarPtr item, int min, int max /* -1: unbounded */, GrammarPtr separator = nullptr);

// The parse state of one generation. Not thread-safe; one per sequence.
class GrammarMatcher {
 public:
  using State = int32_t;  // -1: dead
  explicit GrammarMatcher(GrammarPtr g);

  State state() const { return cur_; }
  // The state after `byte` from `s` (-1 when the byte leaves the grammar). Memoized.
  State step(State s, uint8_t byte);
  bool accepting(State s) const { return states_[size_t(s)].accepting; }
  bool can_continue(State s) const { return states_[size_t(s)].live; }

  // Advances over `bytes`; false (and no change) when they leave the grammar.
  bool advance(std::string_view bytes);
  bool complete() const { return accepting(cur_); }          // the bytes so far form a sentence
  bool finished() const { return complete() && !can_continue(cur_); }  // ... and nothing may follow
  size_t n_states() const { return states_.size(); }

 private:
  struct Node {
    int32_t pos, parent;
  };
  struct StateInfo {
    std::vector<int32_t> stacks;  // sorted node ids whose top is a Bytes element
    bool accepting = false, live = false;
    std::unique_ptr<std::array<int32_t, 256>> next;  // -2: not computed yet
  };
  int32_t node(int32_t pos, int32_t parent);
  void expand(std::vector<int32_t>& work, std::vector<int32_t>& out, bool& accepting);
  State intern(const std::vector<int32_t>& stacks, bool accepting);

  GrammarPtr g_;
  std::vector<Node> nodes_;  // node 0: the empty stack
  std::unordered_map<uint64_t, int32_t> node_ids_;
  std::vector<StateInfo> states_;
  std::unordered_map<uint64_t, std::vector<State>> state_ids_;  // hash of the stacks -> states
  std::vector<int32_t> work_, out_;  // scratch for step()
  std::vector<int32_t> seen_;  // expansion marks, indexed by node
  int32_t mark_ = 0;
  State cur_ = 0;
};

}  // namespace pensieve
