// Every golden tokenization made by the Hugging Face tokenizers, through our GGUF and tokenizer.json
// loaders, and the decode round trip on the same strings.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "text/tokenizer.h"
#include "text/unicode.h"
#include "tokenizer_golden.h"

namespace pensieve {
namespace {

using test::GoldenCase;

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// Compares every case; returns the number that failed (each failure is reported).
int check_cases(const Tokenizer& tok, const std::vector<GoldenCase>& cases, const std::string& name) {
  int failed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = tok.encode(cases[i].text, /*add_bos=*/false, /*parse_special=*/true);
    if (ids != cases[i].ids) {
      ++failed;
      ADD_FAILURE() << name << " case " << i << " text [" << cases[i].text << "]\n  want "
                    << show_ids(cases[i].ids) << "\n  got  " << show_ids(ids);
    }
  }
  return failed;
}

void check_round_trip(const Tokenizer& tok, const std::vector<GoldenCase>& cases, const std::string& name) {
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = tok.encode(cases[i].text, false, true);
    EXPECT_EQ(tok.decode(ids), cases[i].text) << name << " case " << i;
    // The streaming decoder, fed one token at a time, gives the same text.
    StreamDecoder sd(tok);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string part = sd.push(id);
      EXPECT_EQ(utf8::valid_prefix(part), part.size()) << name << " case " << i << ": invalid UTF-8 chunk";
      streamed += part;
    }
    streamed += sd.flush();
    EXPECT_EQ(streamed, cases[i].text) << name << " case " << i;
  }
}

class GgufVocab : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufVocab, MatchesHuggingFaceGoldens) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string name = GetParam();
  const auto path = test::testdata_dir() / "vocab" / ("ggml-vocab-" + name + ".gguf");
  auto tok = Tokenizer::from_gguf(GgufFile::open(path.string()));
  const auto cases = test::read_golden(name);
  ASSERT_EQ(cases.size(), 46u) << name;
  const int failed = check_cases(*tok, cases, name);
  std::printf("[ vocab    ] %-16s %zu/%zu exact\n", name.c_str(), cases.size() - failed, cases.size());
}

TEST_P(GgufVocab, DecodeRoundTrips) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::string name = GetParam();
  const auto path = test::testdata_dir() / "vocab" / ("ggml-vocab-" + name + ".gguf");
  auto tok = Tokenizer::from_gguf(GgufFile::open(path.string()));
  check_round_trip(*tok, test::read_golden(name), name);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, GgufVocab,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "falcon", "mpt", "starcoder",
                                           "refact", "deepseek-llm", "deepseek-coder"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

struct HfCase {
  const char* golden;   // vocab name of the .inp/.out pair
  const char* package;  // npm package holding models/tokenizer.json
};

class HfTokenizerJson : public ::testing::TestWithParam<HfCase> {};

TEST_P(HfTokenizerJson, MatchesHuggingFaceGoldens) {
  PENSIEVE_REQUIRE_TESTDATA();
  PENSIEVE_REQUIRE_NPM_TOKENIZER(GetParam().package);
  auto tok = Tokenizer::from_hf_dir(test::npm_fixture_dir(GetParam().package).string());
  const auto cases = test::read_golden(GetParam().golden);
  ASSERT_EQ(cases.size(), 46u);
  const int failed = check_cases(*tok, cases, GetParam().golden);
  std::printf("[ vocab    ] %-16s %zu/%zu exact (tokenizer.json of %s)\n", GetParam().golden,
              cases.size() - failed, cases.size(), GetParam().package);
  check_round_trip(*tok, cases, GetParam().golden);
}

INSTANTIATE_TEST_SUITE_P(Npm, HfTokenizerJson,
                         ::testing::Values(HfCase{"llama-bpe", "tokenizer-llama3"},
                                           HfCase{"qwen2", "tokenizer-qwen3"},
                                           HfCase{"deepseek-r1-qwen", "tokenizer-qwen3"}),
                         [](const auto& info) {
                           std::string n = info.param.golden;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// The same vocabularies as GGUF files (written here from the tokenizer.json, as a converter would),
// so that the GGUF path and its `tokenizer.ggml.pre` table are checked on Llama 3 and Qwen2 too.
std::string write_gguf_copy(const Tokenizer& hf, const std::string& pre, const std::string& name) {
  const Vocab& v = hf.vocab();
  std::vector<std::pair<int32_t, uint64_t>> ranked;
  for (const auto& [key, rank_id] : v.merges) ranked.push_back({rank_id.first, key});
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> merges;
  for (const auto& [rank, key] : ranked)
    merges.push_back(v.tokens[key >> 32] + " " + v.tokens[key & 0xffffffffu]);
  std::vector<int32_t> types;
  for (TokenKind k : v.kinds) types.push_back(int32_t(k));
  const auto path = std::filesystem::temp_directory_path() /
                    ("pensieve_tok_gguf_" + std::to_string(::getpid()) + "_" + name + ".gguf");
  GgufWriter w(path.string());
  w.set("tokenizer.ggml.model", GgufValue::of(std::string("gpt2")));
  w.set("tokenizer.ggml.pre", GgufValue::of(pre));
  w.set("tokenizer.ggml.tokens", GgufValue::of(v.tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::of(types));
  w.set("tokenizer.ggml.merges", GgufValue::of(merges));
  w.write_header();
  w.finish();
  return path.string();
}

TEST_P(HfTokenizerJson, SameVocabularyAsGgufMatchesGoldens) {
  PENSIEVE_REQUIRE_TESTDATA();
  PENSIEVE_REQUIRE_NPM_TOKENIZER(GetParam().package);
  auto hf = Tokenizer::from_hf_dir(test::npm_fixture_dir(GetParam().package).string());
  const std::string path = write_gguf_copy(*hf, GetParam().golden, GetParam().golden);
  auto tok = Tokenizer::from_gguf(GgufFile::open(path));
  const auto cases = test::read_golden(GetParam().golden);
  const int failed = check_cases(*tok, cases, std::string(GetParam().golden) + " (GGUF)");
  std::printf("[ vocab    ] %-16s %zu/%zu exact (as GGUF, pre '%s')\n", GetParam().golden,
              cases.size() - failed, cases.size(), GetParam().golden);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace pensieve
