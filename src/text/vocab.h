// The data a tokenizer is made of, independent of where it was loaded from (GGUF metadata or a
// Hugging Face tokenizer.json): the tokens with their kinds and scores, the merge table, the added
// tokens matched verbatim in text, and the pipeline settings (normalizers, pre-tokenizer, model
// flavour, decoder).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/pretokenize.h"

namespace pensieve {

// GGUF token types (tokenizer.ggml.token_type).
enum class TokenKind : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A token matched verbatim in the input before normalization (special and user-defined tokens).
struct AddedToken {
  int32_t id = -1;
  std::string text;
  bool special = true;  // a control token: parsed only when parse_special, skippable on decode
  bool lstrip = false;  // swallows whitespace on its left
  bool rstrip = false;  // swallows whitespace on its right
};

struct Vocab {
  // How pieces become tokens: SentencePiece-style merging by the score of the merged token (GGUF
  // `llama`), or merging by merge rank (GGUF `gpt2`, every HF BPE).
  enum class Merging { ByScore, ByRank };
  // How tokens become text again.
  enum class Decoding { ByteLevel, Metaspace, Plain };

  std::string source;  // the file it came from, for error messages
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenKind> kinds;
  TokenIndex index;  // token text -> id
  // Merge table for ByRank: (left id, right id) -> (rank, merged id).
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  std::vector<AddedToken> added;

  Merging merging = Merging::ByRank;
  Decoding decoding = Decoding::ByteLevel;
  std::vector<Normalizer> normalizers;
  PreTokenizer pre;
  bool byte_fallback = false;  // characters missing from the vocabulary become <0xXX> tokens
  bool ignore_merges = false;  // a piece that is itself a token is not merged (Llama 3)
  bool fuse_unk = false;       // consecutive unknown characters give one unknown token
  bool strip_leading_space = false;  // decoding drops one leading space (SentencePiece prefix)
  bool map_bytes = false;      // pieces are in the byte-level alphabet after pre-tokenization

  int32_t unk_id = -1, bos_id = -1, eos_id = -1, eot_id = -1, pad_id = -1;
  std::vector<int32_t> extra_stop_ids;  // e.g. generation_config.json's eos_token_id list
  bool add_bos = false;
  std::string chat_template;

  int32_t find(std::string_view text) const {
    auto it = index.find(text);
    return it == index.end() ? -1 : it->second;
  }
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  // Registers "left right" merges in order (rank = position); a merge naming unknown tokens throws
  // Error naming the file and the merge.
  void add_merge(std::string_view left, std::string_view right, int32_t rank);
  // Fills `index` from `tokens` (later duplicates do not replace earlier ids) and the <0xXX> table.
  void build_index();
  int32_t byte_token(uint8_t b) const { return byte_tokens_[b]; }

 private:
  int32_t byte_tokens_[256] = {};
};

}  // namespace pensieve
