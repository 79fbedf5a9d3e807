// The sampling mask over a real 32k vocabulary (phi-3): the trie walk equals a token-by-token
// check, random sampling under the mask always ends in output that validates, the mask cost, and
// generations of a random-weight model through the scheduler that parse and validate.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <unistd.h>

#include "formats/synth.h"
#include "runtime/generator.h"
#include "runtime/json_schema.h"
#include "runtime/sampler.h"
#include "runtime/token_constraint.h"
#include "testdata.h"
#include "text/tokenizer.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

const Tokenizer& phi3() {
  static std::unique_ptr<Tokenizer> tok =
      Tokenizer::from_path((test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string());
  return *tok;
}

std::shared_ptr<const TokenTrie> phi3_trie() {
  static auto trie = std::make_shared<const TokenTrie>(phi3());
  return trie;
}

// Schemas whose every instance is short (bounded strings, counts and depth), for the fuzz.
const char* kBounded[] = {
    R"({"type":"object","properties":{"location":{"type":"string","maxLength":12},
        "unit":{"enum":["celsius","fahrenheit"]}},"required":["location","unit"],"additionalProperties":false})",
    R"({"type":"array","items":{"type":"integer","minimum":-50,"maximum":50},"minItems":1,"maxItems":4})",
    R"({"type":"object","properties":{"id":{"type":"string","format":"uuid"},"ok":{"type":"boolean"},
        "n":{"type":"number"}},"required":["id"],"additionalProperties":false})",
    R"({"anyOf":[{"type":"null"},{"type":"string","pattern":"^[A-Z][a-z]{1,6}( [A-Z][a-z]{1,6})?$"}]})",
    R"({"type":"object","properties":{"p":{"type":"object","properties":{"q":{"type":"array","maxItems":3,
        "items":{"type":"string","maxLength":5}}},"required":["q"],"additionalProperties":false},
        "when":{"type":"string","format":"date"}},"required":["p","when"],"additionalProperties":false})",
    R"({"type":"string","maxLength":30})",
};

TEST(GrammarMask, TrieWalkEqualsTokenByTokenCheck) {
  PENSIEVE_REQUIRE_TESTDATA();
  const Tokenizer& tok = phi3();
  auto trie = phi3_trie();
  ASSERT_GE(trie->n_vocab(), 32000);
  const std::pair<const char*, const char*> cases[] = {
      {kBounded[0], R"({"location": "Par)"},
      {kBounded[0], R"({"location":"Paris","unit":)"},
      {kBounded[1], "[1, -"},
      {kBounded[3], ""},
      {R"({"type":"string"})", "\"abc\\"},
  };
  for (const auto& [schema, prefix] : cases) {
    for (bool first : {true, false}) {
      if (first && prefix[0] != '\0') continue;
      SCOPED_TRACE(std::string(schema) + " after '" + prefix + "'");
      TokenConstraint tc(grammar_json_schema(ojson::parse(schema)), trie);
      GrammarMatcher m(grammar_json_schema(ojson::parse(schema)));
      ASSERT_TRUE(m.advance(prefix));
      if (prefix[0] != '\0') {
        // Bring the constraint to the same state, token by token.
        // (the first token's SentencePiece space is dropped, as decoding drops it)
        const std::vector<int32_t> ids = tok.encode(prefix, false, false);
        for (size_t i = 0; i < ids.size(); ++i) tc.accept(ids[i], i == 0);
      }
      const std::vector<uint64_t>& mask = tc.allowed(first);
      int allowed = 0;
      for (int32_t id = 0; id < trie->n_vocab(); ++id) {
        std::string_view b = trie->bytes(id);
        if (first && tok.strips_leading_space() && !b.empty() && b[0] == ' ') b.remove_prefix(1);
        GrammarMatcher::State s = b.empty() ? -1 : m.state();
        for (char c : b) s = m.step(s, uint8_t(c));
        const bool expect = s >= 0;
        const bool got = (mask[size_t(id) >> 6] >> (id & 63)) & 1;
        ASSERT_EQ(got, expect) << "token " << id << " '" << trie->bytes(id) << "'";
        allowed += got;
      }
      EXPECT_GT(allowed, 0);
    }
  }
}

struct FuzzStats {
  double mask_seconds = 0;
  int tokens = 0;
};

// Random logits, sampled under the mask until the grammar ends; the text must validate.
std::string fuzz_one(const ojson& schema, uint64_t seed, int max_tokens, FuzzStats& stats, bool greedy) {
  const Tokenizer& tok = phi3();
  TokenConstraint tc(grammar_json_schema(schema), phi3_trie());
  SamplingParams sp;
  sp.temperature = greedy ? 0.0f : 1.0f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = seed;
  Sampler sampler(sp);
  std::mt19937_64 rng(seed * 7919 + 1);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(size_t(tok.n_vocab()));
  std::vector<int32_t> ids;
  const std::vector<int32_t> ends = tok.stop_ids();
  for (int step = 0; step < max_tokens; ++step) {
    for (float& l : logits) l = normal(rng);
    const auto t0 = Clock::now();
    const int n = tc.apply(logits, ends, ids.empty());
    stats.mask_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++stats.tokens;
    if (n == 0) {
      EXPECT_TRUE(tc.complete());
      break;
    }
    const int32_t id = sampler.sample(logits, ids);
    if (std::find(ends.begin(), ends.end(), id) != ends.end()) {
      EXPECT_TRUE(tc.complete());
      break;
    }
    tc.accept(id, ids.empty());
    ids.push_back(id);
    if (tc.finished()) break;
  }
  EXPECT_TRUE(tc.complete()) << "not complete after " << max_tokens << " tokens: " << tok.decode(ids, true);
  return tok.decode(ids, true);
}

TEST(GrammarMask, RandomSamplingUnderTheMaskValidates) {
  PENSIEVE_REQUIRE_TESTDATA();
  FuzzStats stats;
  int runs = 0;
  for (const char* s : kBounded) {
    const ojson schema = ojson::parse(s);
    const nlohmann::json plain = nlohmann::json::parse(s);
    for (uint64_t seed = 1; seed <= 12; ++seed) {
      const std::string text = fuzz_one(schema, seed, 400, stats, seed == 1);
      SCOPED_TRACE(std::string(s) + " seed " + std::to_string(seed) + ": " + text);
      nlohmann::json v;
      ASSERT_NO_THROW(v = nlohmann::json::parse(text));
      EXPECT_EQ(json_schema_check(plain, v), "");
      ++runs;
    }
  }
  std::printf("[mask] %d runs, %d tokens, %.1f us per mask (phi-3 vocabulary, %zu trie nodes)\n", runs,
              stats.tokens, 1e6 * stats.mask_seconds / stats.tokens, phi3_trie()->n_nodes());
}

// The cost of a mask whose state has not been seen: the walk from a string body (nearly every
// token allowed) and from between members (few allowed).
TEST(GrammarMask, ColdMaskCost) {
  PENSIEVE_REQUIRE_TESTDATA();
  const Tokenizer& tok = phi3();
  const ojson schema = ojson::parse(kBounded[0]);
  for (const char* prefix : {R"({"location":")", R"({"location":"Paris",)"}) {
    double total = 0;
    int allowed = 0;
    const int reps = 20;
    for (int r = 0; r < reps; ++r) {
      TokenConstraint tc(grammar_json_schema(schema), phi3_trie());
      const std::vector<int32_t> ids = tok.encode(prefix, false, false);
      for (size_t i = 0; i < ids.size(); ++i) tc.accept(ids[i], i == 0);
      std::vector<float> logits(size_t(tok.n_vocab()), 0.0f);
      const auto t0 = Clock::now();
      allowed = tc.apply(logits, {}, false);
      total += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    std::printf("[mask] cold, after '%s': %d tokens allowed, %.1f us\n", prefix, allowed, 1e6 * total / reps);
    EXPECT_GT(allowed, 0);
  }
}

// A random-weight model with the phi-3 vocabulary, through the scheduler.
class GrammarModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("pensieve_grammar_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    SynthOptions o;
    o.config = synth_preset("tiny");
    o.type = "f32";
    o.vocab_path = (test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string();
    o.threads = 2;
    write_synthetic_model(o, (dir_ / "tiny.gguf").string());
    EngineOptions e;
    e.threads = 2;
    e.context = 2048;
    model_ = ModelInstance::load((dir_ / "tiny.gguf").string(), e);
  }
  static void TearDownTestSuite() {
    model_.reset();
    fs::remove_all(dir_);
  }
  static inline fs::path dir_;
  static inline std::shared_ptr<ModelInstance> model_;
};

TEST_F(GrammarModel, GenerationsParseAndValidate) {
  PENSIEVE_REQUIRE_TESTDATA();
  double grammar_s = 0, decode_s = 0;
  int tokens = 0;
  for (const char* s : kBounded) {
    const ojson schema = ojson::parse(s);
    for (int k = 0; k < 3; ++k) {
      GenerateRequest req;
      req.prompt = model_->chat_tokens({{{"user", "Answer in JSON."}}, nullptr, true});
      req.max_tokens = 400;
      req.grammar = grammar_json_schema(schema);
      if (k == 0) {
        req.sampling.temperature = 0;
      } else {
        req.sampling.seed = uint64_t(k);
        req.sampling.temperature = 1.0f;
      }
      std::string text;
      const GenerateResult r = model_->generate(req, [&](std::string_view t) {
        text += t;
        return true;
      });
      SCOPED_TRACE(std::string(s) + " run " + std::to_string(k) + ": " + text);
      EXPECT_EQ(r.reason, StopReason::EndOfTurn);
      nlohmann::json v;
      ASSERT_NO_THROW(v = nlohmann::json::parse(text));
      EXPECT_EQ(json_schema_check(nlohmann::json::parse(s), v), "");
      grammar_s += r.grammar_seconds;
      decode_s += r.decode_seconds + r.prefill_seconds;
      tokens += r.completion_tokens;
    }
  }
  std::printf("[mask] tiny model: %d tokens, mask %.1f us/token, generation %.1f us/token\n", tokens,
              1e6 * grammar_s / tokens, 1e6 * decode_s / tokens);
}

// An unbounded schema ends at max_tokens at worst, with a valid prefix; never a broken one.
TEST_F(GrammarModel, MaxTokensLeavesAValidPrefix) {
  PENSIEVE_REQUIRE_TESTDATA();
  auto g = grammar_json_value();
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    GenerateRequest req;
    req.prompt = model_->chat_tokens({{{"user", "Any JSON."}}, nullptr, true});
    req.max_tokens = 40;
    req.grammar = g;
    req.sampling.seed = seed;
    std::string text;
    const GenerateResult r = model_->generate(req, [&](std::string_view t) {
      text += t;
      return true;
    });
    EXPECT_TRUE(g->accepts_prefix(text)) << text;
    if (r.reason == StopReason::EndOfTurn) {
      EXPECT_TRUE(g->accepts(text)) << text;
    } else {
      EXPECT_EQ(r.reason, StopReason::MaxTokens);
    }
  }
}

}  // namespace
}  // namespace pensieve
