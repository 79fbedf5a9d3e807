// `pensieve tokenize` / `pensieve detokenize` run as a user would: text in on stdin, JSON out.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_util.h"
#include "tokenizer_golden.h"

namespace fs = std::filesystem;

namespace pensieve {
namespace {

using RunResult = test::CommandResult;

RunResult run_cli(const std::string& args, const std::string& stdin_text) {
  return test::run_pensieve(args, stdin_text);
}

std::string phi3_model() { return (test::testdata_dir() / "vocab" / "ggml-vocab-phi-3.gguf").string(); }

TEST(TokenizeCli, PrintsIdsAsJsonWithAndWithoutBos) {
  PENSIEVE_REQUIRE_TESTDATA();
  RunResult r = run_cli("tokenize --model '" + phi3_model() + "' --no-bos", "Hello world");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[15043, 3186]\n");
  r = run_cli("tokenize --model '" + phi3_model() + "'", "Hello world");
  EXPECT_EQ(r.out, "[1, 15043, 3186]\n");
  // Special tokens in the text are parsed.
  r = run_cli("tokenize --model '" + phi3_model() + "' --no-bos", "<|user|>\nHello<|end|>");
  EXPECT_EQ(r.out, "[32010, 15043, 32007]\n");
}

TEST(TokenizeCli, DetokenizeRoundTripsAGoldenText) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const char* name : {"phi-3", "gpt-2", "deepseek-llm"}) {
    const std::string model = (test::testdata_dir() / "vocab" / (std::string("ggml-vocab-") + name + ".gguf")).string();
    const auto cases = test::read_golden(name);
    for (size_t index : {1, 17, 28}) {  // "Führer", emoji, mixed scripts
      const auto& c = cases.at(index);
      const RunResult ids = run_cli("tokenize --model '" + model + "' --no-bos", c.text);
      ASSERT_EQ(ids.status, 0) << ids.err;
      std::string want = "[";
      for (size_t i = 0; i < c.ids.size(); ++i) want += (i ? ", " : "") + std::to_string(c.ids[i]);
      EXPECT_EQ(ids.out, want + "]\n") << name;
      const RunResult text = run_cli("detokenize --model '" + model + "'", ids.out);
      ASSERT_EQ(text.status, 0) << text.err;
      EXPECT_EQ(text.out, c.text) << name;
    }
  }
}

TEST(TokenizeCli, AcceptsATokenizerJsonFolder) {
  PENSIEVE_REQUIRE_NPM_TOKENIZER("tokenizer-qwen3");
  const std::string dir = test::npm_fixture_dir("tokenizer-qwen3").string();
  const RunResult r = run_cli("tokenize --model '" + dir + "'", "<|im_start|>user\n");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("[151644, ", 0), 0u) << r.out;
  const RunResult back = run_cli("detokenize --model '" + dir + "'", r.out);
  EXPECT_EQ(back.out, "<|im_start|>user\n");
}

TEST(TokenizeCli, BadInputFailsWithAMessage) {
  PENSIEVE_REQUIRE_TESTDATA();
  RunResult r = run_cli("detokenize --model '" + phi3_model() + "'", "[1, \"x\"]");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not a token id"), std::string::npos) << r.err;
  r = run_cli("detokenize --model '" + phi3_model() + "'", "[99999999]");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("outside the vocabulary"), std::string::npos) << r.err;
  r = run_cli("tokenize --model /nonexistent/model.gguf", "hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/model.gguf"), std::string::npos) << r.err;
  r = run_cli("detokenize --model '" + phi3_model() + "'", "not json");
  EXPECT_EQ(r.status, 1);
}

}  // namespace
}  // namespace pensieve
