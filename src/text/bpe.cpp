#include "text/bpe.h"

#include <queue>

#include "text/unicode.h"

namespace pensieve {

namespace {

struct Symbol {
  int32_t start = 0, len = 0;  // bytes of the piece; len 0 once merged into its left neighbour
  int32_t prev = -1, next = -1;
  int32_t id = -1;  // the token this symbol is, -1 when the vocabulary lacks it
};

struct Candidate {
  double priority;  // lower merges first: the merge rank, or minus the merged token's score
  int32_t left, right;
  int32_t left_len, right_len;  // to detect a pair made stale by an earlier merge
  int32_t merged_id;
  bool operator<(const Candidate& o) const {  // std::priority_queue pops the largest
    if (priority != o.priority) return priority > o.priority;
    return left > o.left;  // ties: leftmost first
  }
};

class Merger {
 public:
  Merger(const Vocab& v, std::string_view piece) : v_(v), piece_(piece) {}

  void run(std::vector<int32_t>& out) {
    split_characters();
    for (size_t i = 1; i < syms_.size(); ++i) consider(int32_t(i - 1), int32_t(i));
    while (!queue_.empty()) {
      const Candidate c = queue_.top();
      queue_.pop();
      Symbol& l = syms_[c.left];
      Symbol& r = syms_[c.right];
      if (l.len != c.left_len || r.len != c.right_len || l.next != c.right) continue;
      l.len += r.len;
      l.id = c.merged_id;
      l.next = r.next;
      if (r.next >= 0) syms_[r.next].prev = c.left;
      r.len = 0;
      if (l.prev >= 0) consider(l.prev, c.left);
      if (l.next >= 0) consider(c.left, l.next);
    }
    emit(out);
  }

 private:
  void split_characters() {
    syms_.reserve(piece_.size());
    for (size_t pos = 0; pos < piece_.size();) {
      Symbol s;
      s.start = int32_t(pos);
      s.len = std::min<int32_t>(utf8::sequence_length(uint8_t(piece_[pos])), int32_t(piece_.size() - pos));
      s.id = v_.find(piece_.substr(pos, s.len));
      s.prev = int32_t(syms_.size()) - 1;
      s.next = int32_t(syms_.size()) + 1;
      pos += s.len;
      syms_.push_back(s);
    }
    if (!syms_.empty()) syms_.back().next = -1;
  }

  void consider(int32_t li, int32_t ri) {
    const Symbol& l = syms_[li];
    const Symbol& r = syms_[ri];
    if (v_.merging == Vocab::Merging::ByRank) {
      if (l.id < 0 || r.id < 0) return;
      auto it = v_.merges.find(Vocab::pair_key(l.id, r.id));
      if (it == v_.merges.end()) return;
      queue_.push({double(it->second.first), li, ri, l.len, r.len, it->second.second});
    } else {
      const int32_t id = v_.find(piece_.substr(l.start, l.len + r.len));
      if (id < 0) return;
      queue_.push({-double(v_.scores[id]), li, ri, l.len, r.len, id});
    }
  }

  void emit(std::vector<int32_t>& out) const {
    for (int32_t i = syms_.empty() ? -1 : 0; i >= 0; i = syms_[i].next) {
      const Symbol& s = syms_[i];
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      bool all_bytes = v_.byte_fallback;
      for (int32_t k = 0; all_bytes && k < s.len; ++k)
        all_bytes = v_.byte_token(uint8_t(piece_[s.start + k])) >= 0;
      if (all_bytes) {
        for (int32_t k = 0; k < s.len; ++k) out.push_back(v_.byte_token(uint8_t(piece_[s.start + k])));
      } else if (v_.unk_id >= 0) {
        const bool after_unknown = s.prev >= 0 && syms_[s.prev].id < 0;
        if (!(v_.fuse_unk && after_unknown)) out.push_back(v_.unk_id);
      }
    }
  }

  const Vocab& v_;
  std::string_view piece_;
  std::vector<Symbol> syms_;
  std::priority_queue<Candidate> queue_;
};

}  // namespace

void bpe_encode_piece(const Vocab& vocab, std::string_view piece, std::vector<int32_t>& out) {
  if (piece.empty()) return;
  if (vocab.ignore_merges) {
    const int32_t id = vocab.find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  Merger(vocab, piece).run(out);
}

}  // namespace pensieve
