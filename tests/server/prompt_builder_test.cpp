// Prompt building over a fake model: system folding, prefill, exact counts, context clamping.
#include <gtest/gtest.h>

#include "fake_model.h"
#include "server/api_error.h"
#include "server/prompt_builder.h"

using namespace pensieve;
using namespace pensieve::server;

namespace {
ChatRequest request(std::string system, std::string user) {
  ChatRequest r;
  r.model = "fake-model";
  r.system = std::move(system);
  r.messages.push_back({"user", std::move(user)});
  r.max_tokens = 10;
  return r;
}
std::string as_text(const std::vector<int32_t>& t) { return std::string(t.begin(), t.end()); }
}  // namespace

TEST(PromptBuilder, SystemRoleWhenTheTemplateHasOne) {
  test::FakeModel m;
  EXPECT_EQ(as_text(prompt_tokens(m, request("S", "U"))), "<system>S<user>U<assistant>");
}

TEST(PromptBuilder, FoldsSystemIntoFirstUserTurnWhenTheTemplateRejectsIt) {
  test::FakeModel m;
  m.system_role = false;
  EXPECT_EQ(as_text(prompt_tokens(m, request("S", "U"))), "<user>S\n\nU<assistant>");
  ChatRequest only_system = request("S", "");
  only_system.messages.clear();
  EXPECT_EQ(as_text(prompt_tokens(m, only_system)), "<user>S<assistant>");
}

TEST(PromptBuilder, PrefillIsAppendedAfterTheGenerationPrompt) {
  test::FakeModel m;
  ChatRequest r = request("", "U");
  r.assistant_prefill = "Sure:";
  EXPECT_EQ(as_text(prompt_tokens(m, r)), "<user>U<assistant>Sure:");
}

TEST(PromptBuilder, ClampsMaxTokensToTheRoomLeftAndTheServerCap) {
  test::FakeModel m("fake-model", 40);
  ChatRequest r = request("", "U");  // "<user>U<assistant>": 18 tokens
  r.max_tokens = 128000;
  PreparedPrompt p = prepare_prompt(m, r, 0);
  EXPECT_EQ(p.tokens.size(), 18u);
  EXPECT_EQ(p.max_tokens, 22);
  EXPECT_EQ(prepare_prompt(m, r, 5).max_tokens, 5);
  r.max_tokens.reset();  // OpenAI without max_tokens: the room left
  EXPECT_EQ(prepare_prompt(m, r, 0).max_tokens, 22);
}

TEST(PromptBuilder, PromptLongerThanTheContextNamesBothCounts) {
  test::FakeModel m("fake-model", 20);
  try {
    prepare_prompt(m, request("", std::string(30, 'x')), 0);
    FAIL() << "accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    std::string msg = e.what();
    EXPECT_NE(msg.find("47 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("20 tokens"), std::string::npos) << msg;
  }
}

TEST(PromptBuilder, SamplingDefaultsStayUnlessGiven) {
  ChatRequest r = request("", "U");
  GenerateRequest g = to_generate_request(r, {{1, 2}, 7});
  SamplingParams defaults;
  EXPECT_EQ(g.max_tokens, 7);
  EXPECT_EQ(g.sampling.temperature, defaults.temperature);
  r.temperature = 0.0f;
  r.top_k = 3;
  r.stop = {"X"};
  g = to_generate_request(r, {{1}, 1});
  EXPECT_EQ(g.sampling.temperature, 0.0f);
  EXPECT_EQ(g.sampling.top_k, 3);
  EXPECT_EQ(g.stop_strings, std::vector<std::string>{"X"});
}
