// Template capabilities and polyfills over every chat template in tests/data/templates: whatever
// the template supports, the system prompt, the tools, earlier tool calls and tool results all
// reach the rendered prompt, and rendering never fails for a well-formed conversation.
#include "runtime/chat_format.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "testdata.h"

namespace pensieve {
namespace {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> template_files() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(test::testdata_dir() / "templates" / "src"))
    if (e.path().extension() == ".jinja") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

ChatFormatter formatter_for(const fs::path& p) { return ChatFormatter(read_file(p), "<s>", "</s>"); }

ChatMessage msg(std::string role, std::string text) { return ChatMessage{std::move(role), std::move(text), {}, {}}; }

json weather_tools() {
  json params = {{"type", "object"},
                 {"properties", {{"city", {{"type", "string"}}}}},
                 {"required", {"city"}}};
  return json::array({{{"type", "function"},
                       {"function", {{"name", "get_weather"}, {"description", "Weather now."}, {"parameters", params}}}}});
}

TEST(ChatFormat, EveryTemplateKeepsTheSystemPrompt) {
  PENSIEVE_REQUIRE_TESTDATA();
  const auto files = template_files();
  ASSERT_GE(files.size(), 18u);
  for (const auto& f : files) {
    SCOPED_TRACE(f.filename().string());
    ChatFormatter fmt = formatter_for(f);
    ChatPrompt p;
    p.messages = {msg("system", "SYSTEM-MARKER-41"), msg("user", "USER-MARKER-42")};
    std::string out;
    ASSERT_NO_THROW(out = fmt.render(p));
    EXPECT_NE(out.find("SYSTEM-MARKER-41"), std::string::npos) << out;
    EXPECT_NE(out.find("USER-MARKER-42"), std::string::npos) << out;
    // Also in a longer conversation, where only the first user turn may carry it.
    p.messages = {msg("system", "SYSTEM-MARKER-41"), msg("user", "U1"), msg("assistant", "A1"), msg("user", "U2")};
    ASSERT_NO_THROW(out = fmt.render(p));
    EXPECT_NE(out.find("SYSTEM-MARKER-41"), std::string::npos) << out;
  }
}

TEST(ChatFormat, Phi3DropsTheSystemRoleSoItIsFolded) {
  PENSIEVE_REQUIRE_TESTDATA();
  ChatFormatter fmt = formatter_for(test::testdata_dir() / "templates" / "src" / "microsoft-Phi-3-mini-4k-instruct.jinja");
  EXPECT_FALSE(fmt.caps().system_role);
  ChatPrompt p;
  p.messages = {msg("system", "Be terse."), msg("user", "Hi")};
  const std::string out = fmt.render(p);
  EXPECT_NE(out.find("<|user|>\nBe terse.\n\nHi<|end|>"), std::string::npos) << out;
}

TEST(ChatFormat, EveryTemplateShowsToolsCallsAndResults) {
  PENSIEVE_REQUIRE_TESTDATA();
  for (const auto& f : template_files()) {
    SCOPED_TRACE(f.filename().string());
    ChatFormatter fmt = formatter_for(f);
    ChatPrompt p;
    p.tools = weather_tools();
    p.messages = {msg("system", "SYSTEM-MARKER-41"), msg("user", "What is the weather in Paris?")};
    std::string out;
    ASSERT_NO_THROW(out = fmt.render(p));
    EXPECT_NE(out.find("get_weather"), std::string::npos) << out;
    EXPECT_NE(out.find("SYSTEM-MARKER-41"), std::string::npos) << out;

    ChatMessage call = msg("assistant", "");
    call.tool_calls.push_back({"toolu_01ABCdef", "get_weather", json{{"city", "CITY-MARKER-43"}}});
    ChatMessage result = msg("user", "");
    result.tool_results.push_back({"toolu_01ABCdef", "RESULT-MARKER-44", false});
    p.messages.push_back(call);
    p.messages.push_back(result);
    ASSERT_NO_THROW(out = fmt.render(p));
    EXPECT_NE(out.find("CITY-MARKER-43"), std::string::npos) << out;
    EXPECT_NE(out.find("RESULT-MARKER-44"), std::string::npos) << out;
  }
}

TEST(ChatFormat, DetectsEachFamilysCallSyntax) {
  PENSIEVE_REQUIRE_TESTDATA();
  const std::map<std::string, ToolCallFormat> expected = {
      {"CohereForAI-c4ai-command-r-plus-tool_use", ToolCallFormat::CommandR},
      {"CohereForAI-c4ai-command-r7b-12-2024-tool_use", ToolCallFormat::CommandR7B},
      {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", ToolCallFormat::Hermes},
      {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ToolCallFormat::Hermes},
      {"Qwen-Qwen2.5-7B-Instruct", ToolCallFormat::Hermes},
      {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", ToolCallFormat::DeepSeekR1},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ToolCallFormat::DeepSeekR1},
      {"fireworks-ai-llama-3-firefunction-v2", ToolCallFormat::FireFunction},
      {"google-gemma-2-2b-it", ToolCallFormat::Generic},
      {"llama-cpp-deepseek-r1", ToolCallFormat::DeepSeekR1},
      {"meetkai-functionary-medium-v3.1", ToolCallFormat::FunctionaryV31},
      {"meetkai-functionary-medium-v3.2", ToolCallFormat::FunctionaryV32},
      {"meta-llama-Llama-3.1-8B-Instruct", ToolCallFormat::Llama3},
      {"meta-llama-Llama-3.2-3B-Instruct", ToolCallFormat::Llama3},
      {"meta-llama-Llama-3.3-70B-Instruct", ToolCallFormat::Llama3},
      {"microsoft-Phi-3-mini-4k-instruct", ToolCallFormat::Generic},
      {"microsoft-Phi-3.5-mini-instruct", ToolCallFormat::Generic},
      {"mistralai-Mistral-Nemo-Instruct-2407", ToolCallFormat::Mistral},
  };
  for (const auto& f : template_files()) {
    const std::string name = f.stem().string();
    auto it = expected.find(name);
    ASSERT_NE(it, expected.end()) << "no expectation for " << name;
    EXPECT_EQ(tool_call_format_name(formatter_for(f).tool_format()), std::string(tool_call_format_name(it->second)))
        << name;
  }
}

TEST(ChatFormat, ProbesWhatQwenAndGemmaSupport) {
  PENSIEVE_REQUIRE_TESTDATA();
  const fs::path dir = test::testdata_dir() / "templates" / "src";
  const TemplateCaps qwen = formatter_for(dir / "Qwen-Qwen2.5-7B-Instruct.jinja").caps();
  EXPECT_TRUE(qwen.system_role);
  EXPECT_TRUE(qwen.tools);
  EXPECT_TRUE(qwen.tool_calls);
  EXPECT_TRUE(qwen.tool_responses);
  const TemplateCaps gemma = formatter_for(dir / "google-gemma-2-2b-it.jinja").caps();
  EXPECT_FALSE(gemma.system_role);  // it raises on one
  EXPECT_FALSE(gemma.tools);
  EXPECT_FALSE(gemma.tool_calls);
  EXPECT_FALSE(gemma.tool_responses);
}

TEST(ChatFormat, MistralGetsNineCharacterCallIds) {
  PENSIEVE_REQUIRE_TESTDATA();
  ChatFormatter fmt = formatter_for(test::testdata_dir() / "templates" / "src" / "mistralai-Mistral-Nemo-Instruct-2407.jinja");
  ChatPrompt p;
  p.tools = weather_tools();
  ChatMessage call = msg("assistant", "");
  call.tool_calls.push_back({"toolu_0123456789abcdef", "get_weather", json{{"city", "Oslo"}}});
  ChatMessage result = msg("user", "");
  result.tool_results.push_back({"toolu_0123456789abcdef", "cold", false});
  p.messages = {msg("user", "Weather?"), call, result};
  const json ctx = fmt.context(p);
  const std::string id = ctx["messages"][1]["tool_calls"][0]["id"];
  EXPECT_EQ(id.size(), 9u);
  EXPECT_EQ(ctx["messages"][2]["tool_call_id"], id);
  EXPECT_NO_THROW(fmt.render(p));
}

}  // namespace
}  // namespace pensieve
