// The tokenizer's building blocks on small inputs: UTF-8 and byte-level helpers, NFC, split
// behaviours, BPE on a hand-made tokenizer.json, streaming decode, and errors on bad files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "text/bpe.h"
#include "text/pretokenize.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace pensieve {
namespace {

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("pensieve_tok_test_" + std::to_string(::getpid())) / name;
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string cps(std::initializer_list<uint32_t> list) {
  std::string s;
  for (uint32_t c : list) utf8::append(s, c);
  return s;
}

TEST(Utf8, ValidPrefixStopsAtIncompleteOrInvalid) {
  bool incomplete = false;
  const std::string llama = "\xF0\x9F\xA6\x99";  // U+1F999
  EXPECT_EQ(utf8::valid_prefix("ab" + llama.substr(0, 2), &incomplete), 2u);
  EXPECT_TRUE(incomplete);
  EXPECT_EQ(utf8::valid_prefix("ab\xFF" "cd", &incomplete), 2u);
  EXPECT_FALSE(incomplete);
  EXPECT_EQ(utf8::valid_prefix("ab\xED\xA0\x80", &incomplete), 2u);  // a surrogate is not UTF-8
  EXPECT_FALSE(incomplete);
  EXPECT_EQ(utf8::valid_prefix("a" + llama), 5u);
}

TEST(Utf8, SanitizeReplacesEachMaximalInvalidRunOnce) {
  EXPECT_EQ(utf8::sanitize("a\xF0\x9F\xA6" "b"), "a\xEF\xBF\xBD" "b");  // truncated 4-byte char
  EXPECT_EQ(utf8::sanitize("a\xFF\xFE" "b"), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
  EXPECT_EQ(utf8::sanitize("h\xC3\xA9llo"), "h\xC3\xA9llo");
}

TEST(ByteLevel, MapIsABijectionOntoPrintableCharacters) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  const std::string mapped = byte_level::encode(all);
  EXPECT_EQ(byte_level::decode(mapped), all);
  EXPECT_EQ(byte_level::encode(" "), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(byte_level::encode("\n"), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(byte_level::encode("A~"), "A~");        // printable ASCII maps to itself
}

TEST(Nfc, ComposesReordersAndKeepsNormalizedText) {
  EXPECT_EQ(utf8::nfc(cps({'e', 0x301})), cps({0xE9}));
  EXPECT_EQ(utf8::nfc(cps({0x1100, 0x1161, 0x11A8})), cps({0xAC01}));  // Hangul jamo -> syllable
  EXPECT_EQ(utf8::nfc(cps({'q', 0x307, 0x323})), cps({'q', 0x323, 0x307}));  // canonical order
  EXPECT_EQ(utf8::nfc(cps({0x2126})), cps({0x3A9}));                         // singleton
  EXPECT_EQ(utf8::nfc(cps({'A', 0x30A, 0x301})), cps({0x1FA}));              // two-step composition
  EXPECT_EQ(utf8::nfc(cps({'e', 0x327, 0x301})), cps({0x229, 0x301}));
  EXPECT_EQ(utf8::nfc(cps({0xFF76, 0xFF9E})), cps({0xFF76, 0xFF9E}));        // compatibility kept
  const std::string already = "Cửa Việt, naïve café, 日本語";
  EXPECT_EQ(utf8::nfc(already), already);
}

std::vector<std::string> split_with(SplitBehavior b, const std::string& text) {
  PreTokenStep s;
  s.regex = std::make_shared<Regex>("-");
  s.behavior = b;
  return PreTokenizer({s}).split(text, true);
}

TEST(PreTokenizer, SplitBehavioursFollowHuggingFace) {
  using V = std::vector<std::string>;
  const std::string t = "the-final--countdown";
  EXPECT_EQ(split_with(SplitBehavior::Removed, t), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::Isolated, t), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::MergedWithPrevious, t), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::MergedWithNext, t), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::Contiguous, t), (V{"the", "-", "final", "--", "countdown"}));
}

TEST(PreTokenizer, Gpt2PatternSplitsWordsNumbersAndSpaces) {
  using V = std::vector<std::string>;
  const Regex re(kGpt2Pattern);
  PreTokenStep s;
  s.regex = std::shared_ptr<const Regex>(&re, [](const Regex*) {});
  EXPECT_EQ(PreTokenizer({s}).split("Hello world's 42  x", true),
            (V{"Hello", " world", "'s", " 42", " ", " x"}));
}

TEST(PreTokenizer, EveryKnownGgufPreCompiles) {
  for (const char* pre : {"default", "gpt-2", "mpt", "olmo", "gpt-neox", "llama-bpe", "llama3", "dbrx",
                          "smaug-bpe", "qwen2", "deepseek-r1-qwen", "stablelm2", "chatglm-bpe", "tekken",
                          "gpt-4o", "deepseek-v3", "deepseek-llm", "deepseek-coder", "falcon", "starcoder",
                          "refact", "command-r", "smollm"}) {
    EXPECT_NO_THROW(PreTokenizer::for_gguf_pre(pre)) << pre;
    EXPECT_TRUE(PreTokenizer::for_gguf_pre(pre).maps_bytes()) << pre;
  }
}

TEST(PreTokenizer, UnknownGgufPreIsAnError) {
  EXPECT_THROW(PreTokenizer::for_gguf_pre("no-such-pre"), Error);
  EXPECT_THROW(Regex("(unclosed"), Error);
}

// A SentencePiece-style tokenizer.json written by hand: Metaspace pre-tokenizer, merges by rank,
// byte fallback, and an added token that strips whitespace on its left.
fs::path write_small_spm_tokenizer(const std::string& name = "small_spm",
                                   const std::string& model_flags = R"("byte_fallback": true)") {
  const fs::path dir = temp_dir(name);
  std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2)";
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b)
    vocab += std::string(", \"<0x") + kHex[b >> 4] + kHex[b & 15] + ">\": " + std::to_string(3 + b);
  vocab += R"(, "▁": 259, "a": 260, "b": 261, "▁a": 262, "ab": 263, "▁ab": 264, "c": 265)";
  write_file(dir / "tokenizer.json", R"({
    "added_tokens": [
      {"id": 0, "content": "<unk>", "special": true, "lstrip": false, "rstrip": false},
      {"id": 1, "content": "<s>", "special": true, "lstrip": false, "rstrip": false},
      {"id": 2, "content": "</s>", "special": true, "lstrip": false, "rstrip": false},
      {"id": 266, "content": "<|end|>", "special": true, "lstrip": true, "rstrip": false}
    ],
    "normalizer": null,
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
    "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
    "model": {"type": "BPE", )" + model_flags + R"(, "unk_token": "<unk>", "vocab": {)" + vocab + R"(},
              "merges": ["▁ a", "a b", "▁a b"]}
  })");
  write_file(dir / "tokenizer_config.json",
             R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true,
                 "chat_template": [{"name": "default", "template": "{{ messages }}"}]})");
  return dir;
}

TEST(HfTokenizer, SmallSentencePieceStyleVocabulary) {
  auto tok = Tokenizer::from_hf_dir(write_small_spm_tokenizer().string());
  using V = std::vector<int32_t>;
  EXPECT_EQ(tok->encode("ab ab", false), (V{264, 264}));
  EXPECT_EQ(tok->encode("ab ab", true), (V{1, 264, 264}));
  EXPECT_EQ(tok->encode("abc", false), (V{264, 265}));
  // 'é' is not in the vocabulary: its two UTF-8 bytes become byte tokens.
  EXPECT_EQ(tok->encode("a\xC3\xA9", false), (V{262, 3 + 0xC3, 3 + 0xA9}));
  // lstrip: the spaces before <|end|> go with it; "first": no prefix after the added token.
  EXPECT_EQ(tok->encode("ab   <|end|>ab", false), (V{264, 266, 263}));
  EXPECT_EQ(tok->encode("ab <|end|>", false, /*parse_special=*/false).front(), 264);
  EXPECT_EQ(tok->decode(std::vector<int32_t>{264, 264}), "ab ab");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{262, 3 + 0xC3, 3 + 0xA9}), "a\xC3\xA9");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{1, 264, 2}, /*skip_special=*/true), "ab");
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->bos_token(), "<s>");
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  EXPECT_TRUE(tok->is_special(266));
  EXPECT_FALSE(tok->is_special(264));
  EXPECT_EQ(tok->token_text(264), "▁ab");
  EXPECT_THROW(tok->token_text(100000), Error);
  EXPECT_THROW(tok->decode(std::vector<int32_t>{-1}), Error);
}

TEST(HfTokenizer, GenerationConfigAddsStopIds) {
  const fs::path dir = write_small_spm_tokenizer("genconfig");
  write_file(dir / "generation_config.json", R"({"eos_token_id": [2, 264, 999999]})");
  auto tok = Tokenizer::from_hf_dir(dir.string());
  // eos, then <|end|> (an end-of-turn token), then the extra ids; out-of-range ids are ignored.
  EXPECT_EQ(tok->stop_ids(), (std::vector<int32_t>{2, 266, 264}));
  EXPECT_EQ(tok->eot_id(), 266);
}

TEST(HfTokenizer, UnknownCharactersWithoutByteFallback) {
  using V = std::vector<int32_t>;
  auto fused = Tokenizer::from_hf_dir(
      write_small_spm_tokenizer("fuse", R"("byte_fallback": false, "fuse_unk": true)").string());
  EXPECT_EQ(fused->encode("a\xC3\xA9\xC3\xA9" "b", false), (V{262, 0, 261}));
  auto unfused = Tokenizer::from_hf_dir(
      write_small_spm_tokenizer("nofuse", R"("byte_fallback": false, "fuse_unk": false)").string());
  EXPECT_EQ(unfused->encode("a\xC3\xA9\xC3\xA9" "b", false), (V{262, 0, 0, 261}));
}

TEST(StreamDecoder, HoldsASplitCharacterUntilItIsComplete) {
  auto tok = Tokenizer::from_hf_dir(write_small_spm_tokenizer().string());
  StreamDecoder sd(*tok);
  // U+1F999 as four byte-fallback tokens, after "▁a".
  EXPECT_EQ(sd.push(262), "a");  // the SentencePiece leading space is dropped
  EXPECT_EQ(sd.push(3 + 0xF0), "");
  EXPECT_EQ(sd.push(3 + 0x9F), "");
  EXPECT_EQ(sd.push(3 + 0xA6), "");
  EXPECT_EQ(sd.push(3 + 0x99), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(sd.push(264), " ab");
  EXPECT_EQ(sd.flush(), "");
}

TEST(StreamDecoder, InvalidAndTruncatedBytesBecomeReplacementCharacters) {
  auto tok = Tokenizer::from_hf_dir(write_small_spm_tokenizer().string());
  StreamDecoder sd(*tok);
  EXPECT_EQ(sd.push(3 + 0xFF), "\xEF\xBF\xBD");  // can never start a character
  EXPECT_EQ(sd.push(3 + 0xE2), "");
  EXPECT_EQ(sd.push(3 + 0x96), "");
  EXPECT_EQ(sd.push(260), "\xEF\xBF\xBD" "a");  // the cut character is abandoned
  EXPECT_EQ(sd.push(3 + 0xC3), "");
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
}

TEST(HfTokenizer, BadFilesGiveErrorsNamingThem) {
  const fs::path missing = temp_dir("missing");
  try {
    Tokenizer::from_hf_dir(missing.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
  const fs::path bad = temp_dir("bad_json");
  write_file(bad / "tokenizer.json", "{\"model\": ");
  EXPECT_THROW(Tokenizer::from_hf_dir(bad.string()), Error);
  const fs::path unigram = temp_dir("unigram");
  write_file(unigram / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  try {
    Tokenizer::from_hf_dir(unigram.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos) << e.what();
  }
  const fs::path bad_merge = temp_dir("bad_merge");
  write_file(bad_merge / "tokenizer.json",
             R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a zz"]}})");
  EXPECT_THROW(Tokenizer::from_hf_dir(bad_merge.string()), Error);
  const fs::path bad_cfg = write_small_spm_tokenizer("bad_cfg");
  write_file(bad_cfg / "tokenizer_config.json", R"({"chat_template": [{"name": "default", "template": 5}]})");
  EXPECT_THROW(Tokenizer::from_hf_dir(bad_cfg.string()), Error);
  write_file(bad_cfg / "tokenizer_config.json", "[1, 2]");
  EXPECT_THROW(Tokenizer::from_hf_dir(bad_cfg.string()), Error);
  const fs::path wrong_type = temp_dir("wrong_type");
  write_file(wrong_type / "tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})");
  EXPECT_THROW(Tokenizer::from_hf_dir(wrong_type.string()), Error);
}

TEST(GgufTokenizer, MissingOrInconsistentMetadataIsAnError) {
  const fs::path dir = temp_dir("gguf");
  auto write = [&](const std::string& name, auto fill) {
    GgufWriter w((dir / name).string());
    fill(w);
    w.write_header();
    w.finish();
    return GgufFile::open((dir / name).string());
  };
  const GgufFile no_tok = write("none.gguf", [](GgufWriter& w) { w.set("general.architecture", GgufValue::of(std::string("llama"))); });
  EXPECT_THROW(Tokenizer::from_gguf(no_tok), Error);
  const GgufFile short_types = write("types.gguf", [](GgufWriter& w) {
    w.set("tokenizer.ggml.model", GgufValue::of(std::string("llama")));
    w.set("tokenizer.ggml.tokens", GgufValue::of(std::vector<std::string>{"<unk>", "<s>", "</s>", "a"}));
    w.set("tokenizer.ggml.token_type", GgufValue::of(std::vector<int32_t>{2, 3, 3}));
  });
  try {
    Tokenizer::from_gguf(short_types);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.token_type"), std::string::npos) << e.what();
  }
  const GgufFile bad_model = write("model.gguf", [](GgufWriter& w) {
    w.set("tokenizer.ggml.model", GgufValue::of(std::string("t5")));
    w.set("tokenizer.ggml.tokens", GgufValue::of(std::vector<std::string>{"a"}));
  });
  EXPECT_THROW(Tokenizer::from_gguf(bad_model), Error);
  const GgufFile bad_bos = write("bos.gguf", [](GgufWriter& w) {
    w.set("tokenizer.ggml.model", GgufValue::of(std::string("llama")));
    w.set("tokenizer.ggml.tokens", GgufValue::of(std::vector<std::string>{"<unk>", "<s>", "</s>"}));
    w.set("tokenizer.ggml.bos_token_id", GgufValue::of(int64_t(7)));
  });
  EXPECT_THROW(Tokenizer::from_gguf(bad_bos), Error);
}

}  // namespace
}  // namespace pensieve
