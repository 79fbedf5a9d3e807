// Text normalizers and pre-tokenizers: the steps that turn a span of user text (between added
// tokens) into the pieces that the BPE model merges. They follow the Hugging Face `tokenizers`
// semantics (Split behaviours, ByteLevel, Metaspace, Digits, Punctuation) so that a tokenizer.json
// is reproduced exactly; GGUF vocabularies name their pre-tokenizer (`tokenizer.ggml.pre`) and get
// the equivalent sequence from a table.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace pensieve {

// A compiled PCRE2 pattern (UTF-8, Unicode properties, JIT when available). Matching is
// thread-safe: each call uses its own match data.
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // throws Error quoting the pattern
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-empty matches in order, as [begin, end) byte offsets into `s`.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// One normalizer step; a tokenizer holds a list of them, applied in order.
struct Normalizer {
  enum class Kind { Prepend, Replace, Nfc, Lowercase, Strip };
  Kind kind = Kind::Replace;
  std::string a, b;  // Prepend: a = prefix; Replace: a -> b
  bool strip_left = false, strip_right = false;
};
void apply_normalizers(const std::vector<Normalizer>& steps, std::string& text);

// One pre-tokenizer step. Each step splits every current piece further (and may rewrite it).
struct PreTokenStep {
  enum class Kind { Split, ByteLevel, Metaspace };
  Kind kind = Kind::Split;
  std::shared_ptr<const Regex> regex;  // Split (and ByteLevel when it splits)
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;      // ByteLevel
  std::string replacement = "\xE2\x96\x81";  // Metaspace: U+2581
  enum class Prepend { Always, First, Never } prepend = Prepend::Always;
  bool metaspace_split = true;

  static PreTokenStep split(const std::string& pattern, SplitBehavior b = SplitBehavior::Isolated);
  static PreTokenStep byte_level(bool use_regex);
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<PreTokenStep> steps) : steps_(std::move(steps)) {}

  // The sequence a GGUF `tokenizer.ggml.pre` name stands for (byte-level vocabularies); throws
  // Error naming the value when it is not known.
  static PreTokenizer for_gguf_pre(const std::string& pre);
  // From tokenizer.json's "pre_tokenizer" (null gives an empty sequence); throws Error naming the
  // unsupported type.
  static PreTokenizer from_hf_json(const nlohmann::json& j);

  // Splits `text` into pieces. `at_start` says the text begins the input (Metaspace "first").
  std::vector<std::string> split(std::string_view text, bool at_start) const;
  // True when a ByteLevel step maps the pieces to the printable byte alphabet.
  bool maps_bytes() const;
  bool empty() const { return steps_.empty(); }

 private:
  std::vector<PreTokenStep> steps_;
};

// The GPT-2 pre-tokenizer pattern (ByteLevel's built-in regex).
extern const char* const kGpt2Pattern;
// One punctuation character as HF's Punctuation pre-tokenizer sees it: ASCII punctuation or P*.
extern const char* const kPunctuationPattern;

}  // namespace pensieve
