#include "runtime/grammar.h"

#include <algorithm>
#include <cstring>

namespace pensieve {

// ---- builder ----

int GrammarBuilder::reserve() {
  rules_.emplace_back();
  defined_.push_back(false);
  return int(rules_.size()) - 1;
}

void GrammarBuilder::define(int rule, std::vector<Alt> alts) {
  rules_[size_t(rule)] = std::move(alts);
  defined_[size_t(rule)] = true;
}

GrammarBuilder::Elem GrammarBuilder::bytes(const ByteSet& set) {
  for (size_t i = 0; i < classes_.size(); ++i)
    if (classes_[i] == set) return {Elem::Bytes, int32_t(i)};
  classes_.push_back(set);
  return {Elem::Bytes, int32_t(classes_.size() - 1)};
}

GrammarBuilder::Alt GrammarBuilder::literal(std::string_view text) {
  Alt a;
  for (char c : text) a.push_back(byte(uint8_t(c)));
  return a;
}

int GrammarBuilder::import(const Grammar& g) {
  const int base = int(rules_.size());
  for (size_t r = 0; r < g.rules().size(); ++r) reserve();
  for (size_t r = 0; r < g.rules().size(); ++r) {
    std::vector<Alt> alts;
    for (int32_t start : g.rules()[r]) {
      Alt a;
      for (size_t p = size_t(start); g.elems()[p].kind != Elem::End; ++p) {
        const Elem& e = g.elems()[p];
        a.push_back(e.kind == Elem::Call ? call(base + e.arg) : bytes(g.classes()[size_t(e.arg)]));
      }
      alts.push_back(std::move(a));
    }
    define(base + int(r), std::move(alts));
  }
  return base + g.root();
}

int GrammarBuilder::repeat(int item, int min, int max, int sep) {
  if (min < 0 || (max >= 0 && max < min)) throw Error("grammar: bad repetition bounds");
  if (max == 0) return rule({{}});
  // After the first item: more items, each preceded by the separator.
  auto sep_item = [&](Alt a) {
    if (sep >= 0) a.push_back(call(sep));
    a.push_back(call(item));
    return a;
  };
  int rest;
  if (max < 0) {
    // rest = (sep item rest) | ε, then min-1 mandatory ones before it.
    rest = reserve();
    Alt loop = sep_item({});
    loop.push_back(call(rest));
    define(rest, {loop, {}});
  } else {
    // The optional tail: up to max-min further items, nested so that each is optional.
    rest = rule({{}});
    for (int i = 0; i < max - std::max(min, 1); ++i) {
      Alt more = sep_item({});
      more.push_back(call(rest));
      rest = rule({more, {}});
    }
  }
  Alt body{call(item)};
  for (int i = 1; i < min; ++i) body = sep_item(std::move(body));
  body.push_back(call(rest));
  if (min == 0) return rule({body, {}});
  return rule({body});
}

GrammarPtr GrammarBuilder::build(int root) const {
  auto g = std::make_shared<Grammar>();
  g->classes_ = classes_;
  g->root_ = root;
  g->rules_.resize(rules_.size());
  for (size_t r = 0; r < rules_.size(); ++r) {
    if (!defined_[r]) throw Error("grammar: rule " + std::to_string(r) + " was never defined");
    for (const Alt& a : rules_[r]) {
      g->rules_[r].push_back(int32_t(g->elems_.size()));
      g->elems_.insert(g->elems_.end(), a.begin(), a.end());
      g->elems_.push_back({Grammar::Elem::End, 0});
    }
  }
  std::unordered_map<std::string, int> group_ids;
  for (int b = 0; b < 256; ++b) {
    std::string sig(classes_.size(), '0');
    for (size_t c = 0; c < classes_.size(); ++c)
      if (classes_[c].has(uint8_t(b))) sig[c] = '1';
    auto [it, fresh] = group_ids.try_emplace(sig, int(g->groups_.size()));
    if (fresh) g->groups_.emplace_back();
    g->groups_[size_t(it->second)].push_back(uint8_t(b));
    g->group_of_[size_t(b)] = it->second;
  }
  return g;
}

// ---- combinators ----

GrammarPtr grammar_literal(std::string_view bytes) {
  GrammarBuilder b;
  return b.build(b.rule({b.literal(bytes)}));
}

GrammarPtr grammar_sequence(std::vector<GrammarPtr> parts) {
  GrammarBuilder b;
  GrammarBuilder::Alt a;
  for (const GrammarPtr& p : parts) {
    if (!p) throw Error("grammar_sequence: null part");
    a.push_back(GrammarBuilder::call(b.import(*p)));
  }
  return b.build(b.rule({a}));
}

GrammarPtr grammar_choice(std::vector<GrammarPtr> options) {
  GrammarBuilder b;
  std::vector<GrammarBuilder::Alt> alts;
  for (const GrammarPtr& p : options) {
    if (!p) throw Error("grammar_choice: null option");
    alts.push_back({GrammarBuilder::call(b.import(*p))});
  }
  return b.build(b.rule(std::move(alts)));
}

GrammarPtr grammar_repeat(GrammarPtr item, int min, int max, GrammarPtr separator) {
  if (!item) throw Error("grammar_repeat: null item");
  GrammarBuilder b;
  const int it = b.import(*item);
  const int sep = separator ? b.import(*separator) : -1;
  return b.build(b.repeat(it, min, max, sep));
}

bool Grammar::accepts(std::string_view text) const {
  GrammarMatcher m(std::shared_ptr<const Grammar>(std::shared_ptr<const Grammar>{}, this));
  return m.advance(text) && m.complete();
}

bool Grammar::accepts_prefix(std::string_view text) const {
  GrammarMatcher m(std::shared_ptr<const Grammar>(std::shared_ptr<const Grammar>{}, this));
  return m.advance(text);
}

// ---- matcher ----

GrammarMatcher::GrammarMatcher(GrammarPtr g) : g_(std::move(g)) {
  nodes_.push_back({-1, -1});
  std::vector<int32_t> work, out;
  for (int32_t start : g_->rules()[size_t(g_->root())]) work.push_back(node(start, 0));
  bool acc = false;
  expand(work, out, acc);
  cur_ = intern(out, acc);
}

int32_t GrammarMatcher::node(int32_t pos, int32_t parent) {
  const uint64_t key = (uint64_t(uint32_t(pos)) << 32) | uint32_t(parent);
  auto [it, fresh] = node_ids_.try_emplace(key, int32_t(nodes_.size()));
  if (fresh) nodes_.push_back({pos, parent});
  return it->second;
}

// Follows calls and returns from every stack in `work` until each top is a Bytes element (kept in
// `out`) or the stack is empty (`accepting`). Each node is expanded once per call, which also
// stops a loop through rules that can match nothing.
void GrammarMatcher::expand(std::vector<int32_t>& work, std::vector<int32_t>& out, bool& accepting) {
  ++mark_;
  const auto& elems = g_->elems();
  while (!work.empty()) {
    const int32_t n = work.back();
    work.pop_back();
    if (seen_.size() < nodes_.size()) seen_.resize(nodes_.size() * 2, 0);
    if (seen_[size_t(n)] == mark_) continue;
    seen_[size_t(n)] = mark_;
    if (n == 0) {
      accepting = true;
      continue;
    }
    const Node nd = nodes_[size_t(n)];
    const Grammar::Elem& e = elems[size_t(nd.pos)];
    if (e.kind == Grammar::Elem::Bytes) {
      out.push_back(n);
    } else if (e.kind == Grammar::Elem::End) {
      work.push_back(nd.parent);
    } else {
      // The caller continues after the call; a call in tail position returns straight to it.
      const int32_t cont = elems[size_t(nd.pos) + 1].kind == Grammar::Elem::End ? nd.parent
                                                                                 : node(nd.pos + 1, nd.parent);
      for (int32_t start : g_->rules()[size_t(e.arg)]) work.push_back(node(start, cont));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

GrammarMatcher::State GrammarMatcher::intern(const std::vector<int32_t>& stacks, bool accepting) {
  uint64_t h = accepting ? 0x9e3779b97f4a7c15ull : 0x51afd7ed558ccd5ull;
  for (int32_t n : stacks) h = (h ^ uint64_t(uint32_t(n))) * 0x100000001b3ull;
  std::vector<State>& bucket = state_ids_[h];
  for (State id : bucket)
    if (states_[size_t(id)].accepting == accepting && states_[size_t(id)].stacks == stacks) return id;
  StateInfo s;
  s.live = !stacks.empty();
  s.accepting = accepting;
  s.stacks = stacks;
  states_.push_back(std::move(s));
  bucket.push_back(State(states_.size() - 1));
  return bucket.back();
}

GrammarMatcher::State GrammarMatcher::step(State s, uint8_t byte) {
  if (s < 0) return -1;
  {
    StateInfo& si = states_[size_t(s)];
    if (!si.next) {
      si.next = std::make_unique<std::array<int32_t, 256>>();
      si.next->fill(-2);
    }
    const int32_t known = (*si.next)[byte];
    if (known != -2) return known;
  }
  std::vector<int32_t>& work = work_;
  std::vector<int32_t>& out = out_;
  work.clear();
  out.clear();
  const auto& elems = g_->elems();
  const auto& classes = g_->classes();
  for (int32_t n : states_[size_t(s)].stacks) {
    const Node nd = nodes_[size_t(n)];
    if (classes[size_t(elems[size_t(nd.pos)].arg)].has(byte)) work.push_back(node(nd.pos + 1, nd.parent));
  }
  State r = -1;
  if (!work.empty()) {
    bool acc = false;
    expand(work, out, acc);
    if (!out.empty() || acc) r = intern(out, acc);
  }
  // Every byte of the group steps alike (states_ may have grown: index again).
  for (uint8_t b : g_->byte_groups()[size_t(g_->byte_group(byte))]) (*states_[size_t(s)].next)[b] = r;
  return r;
}

bool GrammarMatcher::advance(std::string_view bytes) {
  State s = cur_;
  for (char c : bytes) {
    s = step(s, uint8_t(c));
    if (s < 0) return false;
  }
  cur_ = s;
  return true;
}

}  // namespace pensieve
