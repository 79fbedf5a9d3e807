#include "text/vocab.h"

#include "util/error.h"

namespace pensieve {

void Vocab::add_merge(std::string_view left, std::string_view right, int32_t rank) {
  const int32_t l = find(left), r = find(right);
  std::string merged;
  merged.reserve(left.size() + right.size());
  merged.append(left).append(right);
  const int32_t m = find(merged);
  if (l < 0 || r < 0 || m < 0)
    throw Error(source + ": merge #" + std::to_string(rank) + " '" + std::string(left) + " " +
                std::string(right) + "' names a token that is not in the vocabulary");
  merges.emplace(pair_key(l, r), std::make_pair(rank, m));  // the first (best) rank wins
}

void Vocab::build_index() {
  index.clear();
  index.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) index.emplace(tokens[i], int32_t(i));
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const std::string name = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    const int32_t id = find(name);
    byte_tokens_[b] = (id >= 0 && kinds[id] == TokenKind::Byte) ? id : -1;
  }
}

}  // namespace pensieve
