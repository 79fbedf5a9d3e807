// The generation loop on the shipped demo model (part of the repository, so no test data needed):
// prompt assembly, stop conditions, seeds, cancellation, and that it answers in real words.
#include "runtime/generator.h"

#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>

#include "text/tokenizer.h"

namespace pensieve {
namespace {

std::shared_ptr<ModelInstance> demo() {
  static std::shared_ptr<ModelInstance> inst = [] {
    EngineOptions o;
    o.threads = 2;
    return ModelInstance::load(std::string(PENSIEVE_SOURCE_DIR) + "/models/pensieve-demo.gguf", o);
  }();
  return inst;
}

GenerateRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

std::string ask(const std::string& question, GenerateRequest* req_out = nullptr, GenerateResult* res = nullptr) {
  auto inst = demo();
  GenerateRequest req = greedy(inst->chat_tokens({{{"user", question}}, nullptr, true}), 80);
  if (req_out) req = *req_out, req.prompt = inst->chat_tokens({{{"user", question}}, nullptr, true});
  std::string text;
  GenerateResult r = inst->generate(req, [&](std::string_view t) { text += t; return true; });
  if (res) *res = r;
  return text;
}

TEST(Generator, ChatPromptUsesTheModelTemplateWithoutDoubleBos) {
  auto inst = demo();
  EXPECT_EQ(inst->id(), "pensieve-demo");
  const std::string text = inst->render_chat({{{"system", "Be brief."}, {"user", "Hi"}}, nullptr, true});
  EXPECT_EQ(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const auto ids = inst->chat_tokens({{{"user", "Hi"}}, nullptr, true});
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(inst->tokenizer().decode(ids), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(Generator, DemoModelAnswersWithRealWordsOnTopic) {
  GenerateResult r;
  const std::string answer = ask("What does the word library mean?", nullptr, &r);
  EXPECT_EQ(r.reason, StopReason::EndOfTurn) << answer;
  EXPECT_NE(answer.find("library"), std::string::npos) << answer;
  int words = 0;
  for (size_t i = 0; i < answer.size();) {
    size_t j = i;
    while (j < answer.size() && std::isalpha(static_cast<unsigned char>(answer[j]))) ++j;
    if (j - i >= 2) ++words;
    i = j == i ? i + 1 : j;
  }
  EXPECT_GE(words, 6) << answer;
}

TEST(Generator, MaxTokensStopsAndCountsTokens) {
  GenerateRequest req = greedy({}, 3);
  GenerateResult r;
  ask("What does happy mean?", &req, &r);
  EXPECT_EQ(r.reason, StopReason::MaxTokens);
  EXPECT_EQ(r.completion_tokens, 3);
  EXPECT_GT(r.prompt_tokens, 5);
}

TEST(Generator, StopStringEndsGenerationAndIsNotEmitted) {
  const std::string full = ask("What does happy mean?");
  ASSERT_GT(full.size(), 12u) << full;
  const std::string stop = full.substr(6, 5);  // somewhere inside the answer, likely mid-token
  GenerateRequest req = greedy({}, 80);
  req.stop_strings = {stop};
  GenerateResult r;
  const std::string cut = ask("What does happy mean?", &req, &r);
  EXPECT_EQ(r.reason, StopReason::StopString);
  EXPECT_EQ(r.stop_string, stop);
  EXPECT_EQ(cut, full.substr(0, full.find(stop)));
}

TEST(Generator, SeedMakesSamplingReproducible) {
  GenerateRequest req = greedy({}, 24);
  req.sampling.temperature = 1.2f;
  req.sampling.seed = 42;
  const std::string a = ask("Define ocean.", &req);
  const std::string b = ask("Define ocean.", &req);
  EXPECT_EQ(a, b);
}

TEST(Generator, CancellationStopsAtOnce) {
  auto inst = demo();
  GenerateRequest req = greedy(inst->chat_tokens({{{"user", "Define ocean."}}, nullptr, true}), 50);
  int pieces = 0;
  const GenerateResult r = inst->generate(req, [&](std::string_view) { return ++pieces < 2; });
  EXPECT_EQ(r.reason, StopReason::Cancelled);
  EXPECT_EQ(pieces, 2);
}

TEST(Generator, PromptLongerThanTheContextIsAClearError) {
  auto inst = demo();
  std::vector<int32_t> prompt(size_t(inst->context_length()) + 5, 100);
  try {
    inst->generate(greedy(prompt, 4), [](std::string_view) { return true; });
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(prompt.size())), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(inst->context_length())), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pensieve
