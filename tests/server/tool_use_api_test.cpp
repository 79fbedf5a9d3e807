// Tool use in the API translation, without sockets: content blocks in requests, tool_use blocks and
// tool_calls in answers, and the streamed event sequences.
#include <gtest/gtest.h>

#include "server/anthropic_api.h"
#include "server/openai_api.h"

using namespace pensieve;
using namespace pensieve::server;
using json = nlohmann::ordered_json;

namespace {

json anthropic_body(json messages) {
  return {{"model", "claude-x"}, {"max_tokens", 10}, {"messages", std::move(messages)}};
}

void expect_400(const json& body, const std::string& field, bool openai = false) {
  try {
    if (openai) parse_openai_request(body);
    else parse_anthropic_request(body);
    ADD_FAILURE() << "accepted " << body.dump();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

ToolCall weather_call(const std::string& id) { return {id, "get_weather", json{{"city", "Zürich"}}}; }

}  // namespace

TEST(ToolUseRequest, AnthropicBlocksBecomeCallsAndResults) {
  json body = anthropic_body(json::parse(R"([
    {"role":"user","content":"Weather?"},
    {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Checking."},
      {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Oslo"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"cold"}],
      "is_error":true},{"type":"text","text":"and?"}]}])"));
  const ChatRequest r = parse_anthropic_request(body);
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_TRUE(r.assistant_prefill.empty());
  EXPECT_EQ(r.messages[1].content, "Checking.");
  ASSERT_EQ(r.messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(r.messages[1].tool_calls[0].id, "toolu_1");
  EXPECT_EQ(r.messages[1].tool_calls[0].arguments, json({{"city", "Oslo"}}));
  ASSERT_EQ(r.messages[2].tool_results.size(), 1u);
  EXPECT_EQ(r.messages[2].tool_results[0].tool_call_id, "toolu_1");
  EXPECT_EQ(r.messages[2].tool_results[0].content, "cold");
  EXPECT_TRUE(r.messages[2].tool_results[0].is_error);
  EXPECT_EQ(r.messages[2].content, "and?");
}

TEST(ToolUseRequest, AnthropicRejectsMisplacedOrBrokenBlocks) {
  expect_400(anthropic_body(json::parse(R"([{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}])")),
             "messages.0.content.0");
  expect_400(anthropic_body(json::parse(R"([{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"a"}]}])")),
             "messages.0.content.0");
  expect_400(anthropic_body(json::parse(R"([{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"b","input":[]}]}])")),
             "messages.1.content.0.input");
  expect_400(anthropic_body(json::parse(R"([{"role":"user","content":[{"type":"tool_result"}]}])")), "tool_use_id");
}

TEST(ToolUseRequest, AnthropicToolChoiceModes) {
  json body = anthropic_body(json::parse(R"([{"role":"user","content":"x"}])"));
  body["tools"] = json::parse(R"([{"name":"f","input_schema":{"type":"object"}}])");
  body["tool_choice"] = {{"type", "tool"}, {"name", "f"}, {"disable_parallel_tool_use", true}};
  ChatRequest r = parse_anthropic_request(body);
  EXPECT_EQ(r.tool_choice.mode, ToolChoice::Mode::Named);
  EXPECT_EQ(r.tool_choice.name, "f");
  EXPECT_FALSE(r.tool_choice.parallel);
  body["tool_choice"] = {{"type", "any"}};
  r = parse_anthropic_request(body);
  EXPECT_EQ(r.tool_choice.mode, ToolChoice::Mode::Any);
  EXPECT_TRUE(r.tool_choice.parallel);
}

TEST(ToolUseRequest, OpenAIToolChoiceAndParallelFlag) {
  json body = json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
      "tool_choice":"required","parallel_tool_calls":false})");
  ChatRequest r = parse_openai_request(body);
  EXPECT_EQ(r.tool_choice.mode, ToolChoice::Mode::Any);
  EXPECT_FALSE(r.tool_choice.parallel);
  body["tool_choice"] = json::parse(R"({"type":"function","function":{"name":"g"}})");
  expect_400(body, "tool_choice", true);
  body["tool_choice"] = "required";
  body.erase("tools");
  expect_400(body, "tool_choice", true);
}

TEST(ToolUseResponse, AnthropicMessageHasTextThenToolUse) {
  GenerateResult res;
  res.reason = StopReason::EndOfTurn;
  std::vector<OutputPiece> out;
  out.push_back({OutputPiece::Kind::Text, "Let me see.", {}});
  out.push_back({OutputPiece::Kind::Call, "", weather_call("toolu_9")});
  const json m = anthropic_message("msg_1", "claude-x", out, res);
  ASSERT_EQ(m["content"].size(), 2u);
  EXPECT_EQ(m["content"][1], json({{"type", "tool_use"}, {"id", "toolu_9"}, {"name", "get_weather"},
                                   {"input", {{"city", "Zürich"}}}}));
  EXPECT_EQ(m["stop_reason"], "tool_use");
}

TEST(ToolUseResponse, AnthropicStreamOpensBlocksAsNeeded) {
  AnthropicStream s("msg_1", "claude-x", true);
  std::string bytes = s.start(5);
  EXPECT_EQ(bytes.find("content_block_start"), std::string::npos);  // nothing to open yet
  bytes += s.delta("Hi.");
  bytes += s.tool_call(weather_call("toolu_a"));
  bytes += s.tool_call(weather_call("toolu_b"));
  GenerateResult res;
  res.reason = StopReason::EndOfTurn;
  bytes += s.finish(res);
  std::vector<std::string> seq;
  std::string partial;
  for (size_t pos = 0; (pos = bytes.find("data: ", pos)) != std::string::npos; pos += 6) {
    const json d = json::parse(bytes.substr(pos + 6, bytes.find('\n', pos) - pos - 6));
    std::string t = d["type"];
    if (d.contains("index")) t += std::to_string(d["index"].get<int>());
    if (t == "content_block_delta1" && seq.back() == t) continue;  // several input_json_delta pieces
    if (t == "content_block_delta2" && seq.back() == t) continue;
    if (d["type"] == "content_block_delta" && d["index"] == 1) partial += d["delta"]["partial_json"].get<std::string>();
    seq.push_back(t);
  }
  EXPECT_EQ(seq, (std::vector<std::string>{"message_start", "ping", "content_block_start0", "content_block_delta0",
                                           "content_block_stop0", "content_block_start1", "content_block_delta1",
                                           "content_block_stop1", "content_block_start2", "content_block_delta2",
                                           "content_block_stop2", "message_delta", "message_stop"}));
  EXPECT_NE(bytes.find("\"stop_reason\":\"tool_use\""), std::string::npos);
}

TEST(ToolUseResponse, JsonPiecesNeverSplitACharacter) {
  const std::string text = "{\"city\":\"Zürich — ünïcödé\"}";
  std::string joined;
  for (const auto& piece : utf8_chunks(text, 3)) {
    EXPECT_NO_THROW(json(piece).dump());  // each piece is valid UTF-8
    joined += piece;
  }
  EXPECT_EQ(joined, text);
}

TEST(ToolUseResponse, OpenAICompletionHasToolCalls) {
  GenerateResult res;
  res.reason = StopReason::EndOfTurn;
  std::vector<OutputPiece> out;
  out.push_back({OutputPiece::Kind::Call, "", weather_call("call_1")});
  const json c = openai_completion("chatcmpl-1", 1, "m", out, res);
  const json& msg = c["choices"][0]["message"];
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Zürich\"}");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "tool_calls");
}
