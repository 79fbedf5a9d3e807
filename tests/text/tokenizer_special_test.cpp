// Real vocabularies beyond the goldens: chat/special tokens inside text, stop ids and metadata,
// the SentencePiece word cut, and concurrent use.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <thread>

#include "text/bpe.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "tokenizer_golden.h"

namespace pensieve {
namespace {

using V = std::vector<int32_t>;

std::unique_ptr<Tokenizer> vocab_gguf(const std::string& name) {
  return Tokenizer::from_gguf(
      GgufFile::open((test::testdata_dir() / "vocab" / ("ggml-vocab-" + name + ".gguf")).string()));
}

V concat(std::initializer_list<V> parts) {
  V out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(Phi3Tokenizer, ChatTokensSwallowTheNewlineAfterThem) {
  PENSIEVE_REQUIRE_TESTDATA();
  auto tok = vocab_gguf("phi-3");
  // As the HF Phi-3 tokenizer: its chat tokens strip whitespace on their right.
  EXPECT_EQ(tok->encode("<|user|>\nHello<|end|>\n<|assistant|>\n", false), (V{32010, 15043, 32007, 32001}));
  EXPECT_EQ(tok->encode("<|user|>\nHello", true), (V{1, 32010, 15043}));
  const V plain = tok->encode("<|user|>", false, /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 32010), 0);
  EXPECT_EQ(tok->decode(plain), "<|user|>");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 32000);
  EXPECT_EQ(tok->eot_id(), 32007);
  EXPECT_EQ(tok->bos_token(), "<s>");
  EXPECT_EQ(tok->eos_token(), "<|endoftext|>");
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->n_vocab(), 32064);
  const V stops = tok->stop_ids();
  EXPECT_NE(std::find(stops.begin(), stops.end(), 32000), stops.end());
  EXPECT_NE(std::find(stops.begin(), stops.end(), 32007), stops.end());
  EXPECT_NE(tok->chat_template().find("<|assistant|>"), std::string::npos);
  EXPECT_EQ(tok->decode(V{1, 15043, 32007}), "<s> Hello<|end|>");
  EXPECT_EQ(tok->decode(V{1, 15043, 32007}, /*skip_special=*/true), "Hello");
}

// GGUF does not record HF's rstrip flags; Phi-3 gets them from its name (as llama.cpp does), and a
// vocabulary with another name keeps the whitespace.
TEST(Phi3Tokenizer, WhitespaceStrippingFollowsTheModelName) {
  PENSIEVE_REQUIRE_TESTDATA();
  const GgufFile phi3 = GgufFile::open((test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string());
  auto renamed = [&](const std::string& name) {
    const auto path = std::filesystem::temp_directory_path() /
                      ("pensieve_tok_name_" + std::to_string(::getpid()) + ".gguf");
    GgufWriter w(path.string());
    for (const auto& [key, value] : phi3.metadata())
      w.set(key, key == "general.name" ? GgufValue::of(name) : value);
    w.write_header();
    w.finish();
    auto tok = Tokenizer::from_gguf(GgufFile::open(path.string()));
    std::filesystem::remove(path);
    return tok;
  };
  const std::string chat = "<|user|>\nHi<|end|>";
  EXPECT_EQ(renamed("Phi 3.5 Mini Instruct")->encode(chat, false), (V{32010, 6324, 32007}));
  const V kept = renamed("Some Llama")->encode(chat, false);
  EXPECT_EQ(kept.size(), 5u);  // <|user|> ▁ \n Hi <|end|>: the newline stays
  EXPECT_EQ(kept.front(), 32010);
  EXPECT_EQ(kept.back(), 32007);
}

TEST(Qwen3Tokenizer, ImStartAndImEndAreSingleTokens) {
  PENSIEVE_REQUIRE_NPM_TOKENIZER("tokenizer-qwen3");
  auto tok = Tokenizer::from_hf_dir(test::npm_fixture_dir("tokenizer-qwen3").string());
  const std::string text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
  const V ids = tok->encode(text, tok->add_bos_default());
  EXPECT_EQ(ids, concat({{151644}, tok->encode("user\nWhat is 2+2?", false), {151645},
                         tok->encode("\n", false), {151644}, tok->encode("assistant\n", false)}));
  EXPECT_EQ(tok->decode(ids), text);
  const V plain = tok->encode(text, false, /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 151644), 0);
  EXPECT_EQ(tok->decode(plain), text);
  EXPECT_FALSE(tok->add_bos_default());
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), 151645);
  EXPECT_EQ(tok->eot_id(), 151645);
  const V stops = tok->stop_ids();
  EXPECT_NE(std::find(stops.begin(), stops.end(), 151643), stops.end());  // <|endoftext|>
  EXPECT_NE(tok->chat_template().find("im_start"), std::string::npos);
  // "</think>" is an added token that is not special: recognised even without parse_special.
  const int32_t think_end = 151668;
  EXPECT_EQ(tok->encode("</think>", false, false), (V{think_end}));
  EXPECT_FALSE(tok->decode(V{think_end}, /*skip_special=*/true).empty());
}

TEST(Llama3Tokenizer, AddsBeginOfTextByDefault) {
  PENSIEVE_REQUIRE_NPM_TOKENIZER("tokenizer-llama3");
  auto tok = Tokenizer::from_hf_dir(test::npm_fixture_dir("tokenizer-llama3").string());
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->bos_token(), "<|begin_of_text|>");
  const V ids = tok->encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(ids[1], 128006);
  EXPECT_EQ(ids.back(), 128009);
  EXPECT_EQ(tok->eot_id(), 128009);
}

// Cutting SentencePiece text before each word (for caching) must give what merging the whole span
// at once gives.
TEST(SpmTokenizer, WordCutMatchesWholeSpanMerging) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const char* name : {"llama-spm", "phi-3"}) {
    auto tok = vocab_gguf(name);
    std::string text;
    for (const auto& c : test::read_golden(name)) text += c.text + " ";
    text += "The quick brown fox   jumps over\tthe lazy dog.\n\n  int main() { return 0; }";
    std::string normalized = text;
    apply_normalizers(tok->vocab().normalizers, normalized);
    V whole;
    bpe_encode_piece(tok->vocab(), normalized, whole);
    EXPECT_EQ(tok->encode(text, false, false), whole) << name;
  }
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  PENSIEVE_REQUIRE_TESTDATA();
  auto tok = vocab_gguf("gpt-2");
  std::string text;
  for (const auto& c : test::read_golden("gpt-2")) text += c.text;
  const V expected = tok->encode(text, false);
  std::vector<V> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) got[t] = tok->encode(text, false);
    });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

TEST(Tokenizer, VocabulariesWithoutGoldensLoadAndRoundTrip) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string text = "Hello, y'all! 3333 Führer 🦙\n\tend";
  for (const char* name : {"gpt-neox", "baichuan"}) {
    auto tok = vocab_gguf(name);
    const V ids = tok->encode(text, false);
    EXPECT_FALSE(ids.empty()) << name;
    EXPECT_EQ(tok->decode(ids), text) << name;
  }
}

// Untrusted input: arbitrary bytes (invalid UTF-8 included) never crash the tokenizer, and text
// comes back from decode wherever the vocabulary can spell every byte.
TEST(Tokenizer, ArbitraryBytesRoundTrip) {
  PENSIEVE_REQUIRE_TESTDATA();
  struct Case {
    const char* name;
    bool valid_round_trip;  // every valid UTF-8 string comes back
    bool raw_round_trip;    // invalid bytes come back as U+FFFD too
  };
  // Falcon has no tokens for some control bytes (dropped, as the HF tokenizer drops them); DeepSeek
  // LLM spells the bytes valid UTF-8 never uses as user-defined characters, so a stray byte comes
  // back as that character.
  const Case cases[] = {{"phi-3", true, true}, {"gpt-2", true, true}, {"deepseek-llm", true, false},
                        {"falcon", false, false}};
  std::mt19937 rng(1234);
  const std::string alphabet = std::string("ab \n\t<|>!1\xC3\xA9\xE2\x96\x81\xF0\x9F\xA6\x99") + '\0';
  for (const Case& c : cases) {
    auto tok = vocab_gguf(c.name);
    for (int i = 0; i < 150; ++i) {
      std::string s;
      const int len = int(rng() % 48);
      for (int k = 0; k < len; ++k)
        s += (rng() % 3 == 0) ? char(rng() % 256) : alphabet[rng() % alphabet.size()];
      const std::string valid = utf8::sanitize(s);
      const V ids = tok->encode(valid, false, /*parse_special=*/false);
      const V raw = tok->encode(s, false, false);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->n_vocab());
      for (int32_t id : raw) ASSERT_TRUE(id >= 0 && id < tok->n_vocab());
      if (c.valid_round_trip) {
        EXPECT_EQ(tok->decode(ids), valid) << c.name << " case " << i;
      }
      if (c.raw_round_trip) {
        EXPECT_EQ(tok->decode(raw), valid) << c.name << " case " << i;
      }
    }
  }
}

}  // namespace
}  // namespace pensieve
