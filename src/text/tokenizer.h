// Text <-> token ids for the two BPE families real checkpoints use: SentencePiece-style BPE with
// byte fallback (Llama 2, Phi-3, Mistral; GGUF tokenizer.ggml.model = "llama") and byte-level BPE
// (GPT-2, Llama 3, Qwen2, DeepSeek, StarCoder...; GGUF "gpt2"). Loaded from GGUF metadata or a
// Hugging Face tokenizer.json, and exact against the Hugging Face tokenizers. Once built a
// Tokenizer is read-only, so one instance serves concurrent requests.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"
#include "text/vocab.h"

namespace pensieve {

class Tokenizer {
 public:
  // Throws Error naming the file and key when the metadata is missing or inconsistent.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& gguf);
  // A folder holding tokenizer.json (and optionally tokenizer_config.json).
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::string& dir);
  // Either of the above, chosen by what `path` is (a .gguf file or a folder).
  static std::unique_ptr<Tokenizer> from_path(const std::string& path);
  explicit Tokenizer(Vocab vocab);

  // parse_special: control tokens written in the text (<|im_start|>...) become their ids; without
  // it they are tokenized as plain text. User-defined added tokens are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  // Invalid UTF-8 that the tokens spell (e.g. a cut multi-byte character) comes out as U+FFFD.
  // Throws Error on an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  std::string token_text(int32_t id) const;  // the token as stored (for debugging/logprobs)
  // The raw bytes one token stands for ("" for a skipped special token); throws Error when out of
  // range. The leading-space rule of SentencePiece decoding is not applied here.
  std::string token_bytes(int32_t id, bool skip_special = false) const;

  int n_vocab() const { return int(v_.tokens.size()); }
  int bos_id() const { return v_.bos_id; }
  int eos_id() const { return v_.eos_id; }
  int eot_id() const { return v_.eot_id; }
  std::vector<int32_t> stop_ids() const;
  bool add_bos_default() const { return v_.add_bos; }
  const std::string& bos_token() const { return bos_text_; }
  const std::string& eos_token() const { return eos_text_; }
  const std::string& chat_template() const { return v_.chat_template; }
  bool is_special(int32_t id) const;
  // True when decoding drops one leading space (SentencePiece's dummy prefix).
  bool strips_leading_space() const { return v_.strip_leading_space; }
  const Vocab& vocab() const { return v_; }

 private:
  struct Segment {
    size_t begin = 0, end = 0;  // raw text when token < 0
    int32_t token = -1;
  };
  std::vector<Segment> partition(std::string_view text, bool parse_special) const;
  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& out,
                   struct WordCache& cache) const;
  void build_matcher();

  Vocab v_;
  std::string bos_text_, eos_text_;
  // A trie over the added tokens' bytes for leftmost-longest matching.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node
    int32_t added = -1;                                  // index into v_.added ending here
  };
  std::vector<TrieNode> trie_;
  bool first_byte_[256] = {};
  bool words_independent_ = false;  // SentencePiece text may be cut before each word (see ctor)
};

// Streams valid UTF-8: a multi-byte character split across tokens is emitted only when complete.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  std::string push(int32_t id);  // text that became complete with this token
  std::string flush();           // whatever is left (invalid bytes as U+FFFD)

 private:
  std::string take_complete();
  const Tokenizer& tok_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace pensieve
