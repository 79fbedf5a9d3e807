#include "text/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <unordered_map>

#include "text/bpe.h"
#include "text/unicode.h"
#include "util/error.h"

namespace pensieve {

// Pieces repeat a lot in real text ("the", " of"), so one encode call remembers what each piece
// merged into. The cache lives per call, which keeps the Tokenizer itself immutable.
struct WordCache {
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> ids;
};

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Token texts that end a turn in chat models, beyond the EOS/EOT the metadata names.
const char* const kEndOfTurnTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>", "<|eom_id|>",
    "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>",
};

const char kMetaspace[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// True when some token has a U+2581 right after another character that is not U+2581: only then
// can a merge join a word to the space-led word after it.
bool tokens_cross_word_starts(const std::vector<std::string>& tokens) {
  for (const auto& t : tokens)
    for (size_t i = t.find(kMetaspace, 1); i != std::string::npos; i = t.find(kMetaspace, i + 1))
      if (i < 3 || t.compare(i - 3, 3, kMetaspace) != 0) return true;
  return false;
}

// Cuts "▁the▁cat" into "▁the", "▁cat": before every U+2581 that follows another character.
std::vector<std::string> split_before_metaspace(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = s.find(kMetaspace, 1); i != std::string::npos; i = s.find(kMetaspace, i + 3)) {
    if (i >= 3 && s.compare(i - 3, 3, kMetaspace) == 0) continue;
    out.push_back(s.substr(start, i - start));
    start = i;
  }
  out.push_back(s.substr(start));
  return out;
}

}  // namespace

Tokenizer::Tokenizer(Vocab vocab) : v_(std::move(vocab)) {
  // Without a pre-tokenizer a SentencePiece-style span is one piece; when no token can span a word
  // start it may be cut there, which gives the same tokens and lets words be cached.
  words_independent_ = v_.pre.empty() && v_.decoding == Vocab::Decoding::Metaspace &&
                       !tokens_cross_word_starts(v_.tokens);
  if (v_.bos_id >= n_vocab()) v_.bos_id = -1;
  if (v_.eos_id >= n_vocab()) v_.eos_id = -1;
  if (v_.eot_id >= n_vocab()) v_.eot_id = -1;
  if (v_.unk_id >= n_vocab()) v_.unk_id = -1;
  if (v_.eot_id < 0) {
    for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>", "<EOT>"}) {
      const int32_t id = v_.find(t);
      if (id >= 0 && v_.kinds[id] != TokenKind::Normal) {
        v_.eot_id = id;
        break;
      }
    }
  }
  if (v_.bos_id >= 0) bos_text_ = v_.tokens[v_.bos_id];
  if (v_.eos_id >= 0) eos_text_ = v_.tokens[v_.eos_id];
  build_matcher();
}

std::unique_ptr<Tokenizer> Tokenizer::from_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return from_hf_dir(path);
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or folder");
  if (fs::path(path).filename() == "tokenizer.json") return from_hf_dir(fs::path(path).parent_path().string());
  return from_gguf(GgufFile::open(path));
}

void Tokenizer::build_matcher() {
  trie_.assign(1, TrieNode{});
  for (size_t i = 0; i < v_.added.size(); ++i) {
    const std::string& text = v_.added[i].text;
    if (text.empty()) continue;
    first_byte_[uint8_t(text[0])] = true;
    int32_t node = 0;
    for (unsigned char c : text) {
      int32_t child = -1;
      for (auto& [b, n] : trie_[node].children)
        if (b == c) child = n;
      if (child < 0) {
        child = int32_t(trie_.size());
        trie_[node].children.push_back({c, child});
        trie_.push_back(TrieNode{});
      }
      node = child;
    }
    if (trie_[node].added < 0) trie_[node].added = int32_t(i);
  }
}

std::vector<Tokenizer::Segment> Tokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Segment> segs;
  size_t seg_start = 0, pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[uint8_t(text[pos])]) {
      ++pos;
      continue;
    }
    // Longest added token starting here (control tokens only when parse_special).
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t k = pos; k < text.size(); ++k) {
      int32_t child = -1;
      for (auto& [b, n] : trie_[node].children)
        if (b == uint8_t(text[k])) child = n;
      if (child < 0) break;
      node = child;
      const int32_t a = trie_[node].added;
      if (a >= 0 && (parse_special || !v_.added[a].special)) {
        best = a;
        best_end = k + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = v_.added[best];
    size_t text_end = pos;
    if (tok.lstrip)
      while (text_end > seg_start && is_space(text[text_end - 1])) --text_end;
    if (text_end > seg_start) segs.push_back({seg_start, text_end, -1});
    segs.push_back({pos, best_end, tok.id});
    pos = best_end;
    if (tok.rstrip)
      while (pos < text.size() && is_space(text[pos])) ++pos;
    seg_start = pos;
  }
  if (seg_start < text.size()) segs.push_back({seg_start, text.size(), -1});
  return segs;
}

void Tokenizer::encode_text(std::string_view text, bool at_start, std::vector<int32_t>& out,
                            WordCache& cache) const {
  std::string normalized(text);
  apply_normalizers(v_.normalizers, normalized);
  std::vector<std::string> pieces;
  if (!v_.pre.empty())
    pieces = v_.pre.split(normalized, at_start);
  else if (words_independent_)
    pieces = split_before_metaspace(normalized);
  else
    pieces.push_back(std::move(normalized));  // SentencePiece-style: the whole span is one piece
  const bool map_here = v_.map_bytes && !v_.pre.maps_bytes();
  for (std::string& piece : pieces) {
    if (map_here) piece = byte_level::encode(piece);
    auto it = cache.ids.find(piece);
    if (it == cache.ids.end()) {
      std::vector<int32_t> ids;
      bpe_encode_piece(v_, piece, ids);
      it = cache.ids.emplace(std::move(piece), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && v_.bos_id >= 0) out.push_back(v_.bos_id);
  WordCache cache;
  for (const Segment& s : partition(text, parse_special)) {
    if (s.token >= 0)
      out.push_back(s.token);
    else
      encode_text(text.substr(s.begin, s.end - s.begin), s.begin == 0, out, cache);
  }
  return out;
}

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= n_vocab()) throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(n_vocab()) + ")");
  return v_.tokens[id];
}

std::string Tokenizer::token_bytes(int32_t id, bool skip_special) const {
  if (id < 0 || id >= n_vocab()) token_text(id);  // throws the out-of-range error
  const std::string& text = v_.tokens[id];
  switch (v_.kinds[id]) {
    case TokenKind::Control:
    case TokenKind::Unknown:
      return skip_special ? std::string() : text;
    case TokenKind::Unused:
      return skip_special ? std::string() : text;
    case TokenKind::UserDefined:
      return text;
    case TokenKind::Byte:
      if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
          std::isxdigit(uint8_t(text[3])) && std::isxdigit(uint8_t(text[4])))
        return std::string(1, char(std::stoi(text.substr(3, 2), nullptr, 16)));
      break;  // a byte token with another name decodes as its text
    case TokenKind::Normal:
      break;
  }
  switch (v_.decoding) {
    case Vocab::Decoding::ByteLevel:
      return byte_level::decode(text);
    case Vocab::Decoding::Metaspace: {
      std::string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size(); ++i) {
        if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
          out += ' ';
          i += 2;
        } else {
          out += text[i];
        }
      }
      return out;
    }
    case Vocab::Decoding::Plain:
      break;
  }
  return text;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id, skip_special);
  if (v_.strip_leading_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return utf8::sanitize(out);
}

std::vector<int32_t> Tokenizer::stop_ids() const {
  std::vector<int32_t> ids;
  auto add = [&](int32_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  add(v_.eos_id);
  add(v_.eot_id);
  for (int32_t id : v_.extra_stop_ids)
    if (id < n_vocab()) add(id);
  for (const char* t : kEndOfTurnTexts) {
    const int32_t id = v_.find(t);
    if (id >= 0 && v_.kinds[id] != TokenKind::Normal) add(id);
  }
  return ids;
}

bool Tokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return false;
  const TokenKind k = v_.kinds[id];
  return k == TokenKind::Control || k == TokenKind::UserDefined || k == TokenKind::Unknown;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::take_complete() {
  std::string out;
  for (;;) {
    bool incomplete = false;
    const size_t n = utf8::valid_prefix(pending_, &incomplete);
    out.append(pending_, 0, n);
    pending_.erase(0, n);
    if (pending_.empty() || incomplete) break;
    // Bytes that can never become valid: one U+FFFD for the maximal invalid run, as decode() does.
    out += "\xEF\xBF\xBD";
    pending_.erase(0, utf8::invalid_run_length(pending_));
  }
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_bytes(id, skip_special_);
  if (at_start_ && !pending_.empty()) {
    if (tok_.strips_leading_space() && pending_[0] == ' ') pending_.erase(0, 1);
    at_start_ = false;
  }
  return take_complete();
}

std::string StreamDecoder::flush() {
  std::string out = take_complete();
  if (!pending_.empty()) out += "\xEF\xBF\xBD";  // a character cut short at the end
  pending_.clear();
  return out;
}

}  // namespace pensieve
