// The Anthropic translation layer without sockets: request validation and folding, the response
// body, and the exact SSE bytes of a stream.
#include <gtest/gtest.h>

#include "server/anthropic_api.h"

using namespace pensieve;
using namespace pensieve::server;
using nlohmann::json;

namespace {

json base_request() {
  return json::parse(R"({"model":"claude-3-sonnet-20240229","max_tokens":100,
                         "messages":[{"role":"user","content":"Hello!"}]})");
}

// The ApiError a body produces, or fails the test.
ApiError rejection(const json& body, bool for_count = false) {
  try {
    parse_anthropic_request(body, for_count);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return ApiError::internal("none");
}

// Splits an SSE byte stream into (event, data) pairs, checking the framing as it goes.
std::vector<std::pair<std::string, json>> parse_sse(const std::string& bytes) {
  std::vector<std::pair<std::string, json>> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t end = bytes.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event";
    if (end == std::string::npos) break;
    std::string block = bytes.substr(pos, end - pos);
    EXPECT_EQ(block.rfind("event: ", 0), 0u) << block;
    size_t nl = block.find('\n');
    std::string name = block.substr(7, nl - 7);
    EXPECT_EQ(block.compare(nl + 1, 6, "data: "), 0) << block;
    out.push_back({name, json::parse(block.substr(nl + 7))});
    pos = end + 2;
  }
  return out;
}

}  // namespace

TEST(AnthropicRequest, MinimalRequestFromTheReadme) {
  ChatRequest r = parse_anthropic_request(base_request());
  EXPECT_EQ(r.model, "claude-3-sonnet-20240229");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "Hello!");
  EXPECT_EQ(r.max_tokens.value(), 100);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.temperature.has_value());
  EXPECT_TRUE(r.tools.is_null());
}

TEST(AnthropicRequest, ReadsSamplingStopAndStream) {
  json b = base_request();
  b["temperature"] = 0.5;
  b["top_p"] = 0.9;
  b["top_k"] = 7;
  b["stream"] = true;
  b["stop_sequences"] = {"END", "\n\nHuman:"};
  b["metadata"] = {{"user_id", "u-1"}};
  b["some_future_field"] = {{"x", 1}};  // unknown fields are ignored
  ChatRequest r = parse_anthropic_request(b);
  EXPECT_FLOAT_EQ(*r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*r.top_p, 0.9f);
  EXPECT_EQ(*r.top_k, 7);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"END", "\n\nHuman:"}));
  EXPECT_EQ(r.user, "u-1");
}

TEST(AnthropicRequest, SystemBlocksAndSystemMessagesFoldInOrder) {
  json b = base_request();
  b["system"] = json::parse(R"([{"type":"text","text":"x-anthropic-billing-header: abc"},
                                {"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}])");
  b["messages"] = json::parse(R"([
      {"role":"system","content":"First rule."},
      {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]},
      {"role":"user","content":"again"},
      {"role":"assistant","content":"Hello"},
      {"role":"user","content":"Q"},
      {"role":"system","content":[{"type":"text","text":"Last rule."}]}])");
  ChatRequest r = parse_anthropic_request(b);
  // Claude Code's per-request billing line is dropped (it would defeat the prefix cache).
  EXPECT_EQ(r.system, "You are helpful.\n\nFirst rule.\n\nLast rule.");
  ASSERT_EQ(r.messages.size(), 3u);  // the two user turns merged
  EXPECT_EQ(r.messages[0].content, "Hi\n\nthere\n\nagain");
  EXPECT_EQ(r.messages[1].role, "assistant");
  EXPECT_EQ(r.messages[2].content, "Q");
  EXPECT_TRUE(r.assistant_prefill.empty());
}

// The shape of Claude Code's requests: the billing line changes with every request, the preamble
// after it does not; both requests must give the same prompt so its tokens come from the cache.
TEST(AnthropicRequest, ClaudeCodeBillingLineDoesNotChangeThePrompt) {
  auto system_of = [](const std::string& billing) {
    json b = base_request();
    b["system"] = json::array();
    b["system"].push_back({{"type", "text"}, {"text", "x-anthropic-billing-header: cc_version=2.0.14.abc; cc_entrypoint=cli; cch=" + billing + ";"}});
    b["system"].push_back({{"type", "text"}, {"text", "You are Claude Code, Anthropic's official CLI for Claude."}, {"cache_control", {{"type", "ephemeral"}}}});
    b["system"].push_back({{"type", "text"}, {"text", "You are an interactive CLI tool.\nx-anthropic-billing-header: inline\nUse the tools."}});
    return parse_anthropic_request(b).system;
  };
  const std::string a = system_of("1f2e3"), b = system_of("9a8b7");
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, "You are Claude Code, Anthropic's official CLI for Claude.\n\nYou are an interactive CLI tool.\nUse the tools.");
}

TEST(AnthropicRequest, TrailingAssistantTurnIsAPrefill) {
  json b = base_request();
  b["messages"].push_back({{"role", "assistant"}, {"content", "The answer is"}});
  ChatRequest r = parse_anthropic_request(b);
  EXPECT_EQ(r.assistant_prefill, "The answer is");
  ASSERT_EQ(r.messages.size(), 1u);
}

TEST(AnthropicRequest, ToolsBecomeFunctionToolsForTheTemplate) {
  json b = base_request();
  b["tools"] = json::parse(R"([{"name":"Bash","description":"Run a command",
      "input_schema":{"type":"object","properties":{"command":{"type":"string"}}}},
      {"type":"web_search_20250305","name":"web_search","max_uses":5}])");
  b["tool_choice"] = {{"type", "auto"}};
  ChatRequest r = parse_anthropic_request(b);
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0]["type"], "function");
  EXPECT_EQ(r.tools[0]["function"]["name"], "Bash");
  EXPECT_EQ(r.tools[0]["function"]["parameters"]["properties"]["command"]["type"], "string");
  b["tool_choice"] = {{"type", "none"}};
  EXPECT_TRUE(parse_anthropic_request(b).tools.is_null());
}

// Templates print tools with tojson, so key order reaches the prompt: the client's schema order
// must survive (a sorting JSON object would put "alpha" first) and the function form keeps the
// conventional name, description, parameters order.
TEST(AnthropicRequest, ToolKeysKeepTheClientsOrder) {
  const auto b = nlohmann::ordered_json::parse(R"({"model":"m","max_tokens":10,
      "messages":[{"role":"user","content":"hi"}],
      "tools":[{"name":"grep","description":"Search",
                "input_schema":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}},
                                "required":["zeta"]}}]})");
  const ChatRequest r = parse_anthropic_request(b);
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].dump(),
            R"({"type":"function","function":{"name":"grep","description":"Search","parameters":{"type":"object",)"
            R"("properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}},"required":["zeta"]}}})");
}

TEST(AnthropicRequest, ClaudeCodeFieldsAreAccepted) {
  json b = base_request();
  b["max_tokens"] = 128000;
  b["thinking"] = {{"type", "adaptive"}};
  b["context_management"] = {{"edits", json::array()}};
  b["output_config"] = {{"effort", "high"}};
  b["messages"][0]["content"] = json::parse(R"([{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}])");
  b["messages"].push_back({{"role", "system"}, {"content", "reminder"}});
  ChatRequest r = parse_anthropic_request(b);
  EXPECT_EQ(*r.max_tokens, 128000);
  EXPECT_EQ(r.system, "reminder");
}

TEST(AnthropicRequest, MaxTokensBeyond64BitsIsClampedNotRejected) {
  json b = base_request();
  for (const char* huge : {"9223372036854775808", "18446744073709551616", "1e30", "4.0e9"}) {
    b["max_tokens"] = json::parse(huge);
    EXPECT_EQ(parse_anthropic_request(b).max_tokens.value(), INT32_MAX) << huge;
  }
  b["max_tokens"] = json::parse("-1e30");
  EXPECT_THROW(parse_anthropic_request(b), ApiError);
}

TEST(AnthropicRequest, RejectsEachInvalidFieldByName) {
  auto expect = [](json b, const std::string& needle, bool for_count = false) {
    ApiError e = rejection(b, for_count);
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.type(), "invalid_request_error");
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  };
  json b = base_request();
  b.erase("max_tokens");
  expect(b, "max_tokens");
  b = base_request(), b["max_tokens"] = 0, expect(b, "max_tokens");
  b = base_request(), b["max_tokens"] = -5, expect(b, "max_tokens");
  b = base_request(), b["max_tokens"] = "100", expect(b, "max_tokens");
  b = base_request(), b["max_tokens"] = 1.5, expect(b, "max_tokens");
  b = base_request(), b["messages"] = json::array(), expect(b, "messages");
  b = base_request(), b.erase("messages"), expect(b, "messages");
  b = base_request(), b["messages"][0]["role"] = "tool", expect(b, "messages.0.role");
  b = base_request(), b["messages"][0]["content"] = 5, expect(b, "messages.0.content");
  b = base_request(), b["temperature"] = 1.5, expect(b, "temperature");
  b = base_request(), b["top_p"] = -0.1, expect(b, "top_p");
  b = base_request(), b["top_k"] = -1, expect(b, "top_k");
  b = base_request(), b["stream"] = "yes", expect(b, "stream");
  b = base_request(), b["stop_sequences"] = "END", expect(b, "stop_sequences");
  b = base_request(), b.erase("model"), expect(b, "model");
  b = base_request(), b["system"] = json::parse(R"([{"type":"image","source":{}}])"), expect(b, "system.0");
  b = base_request();
  b["messages"][0]["content"] = json::parse(R"([{"type":"image","source":{"type":"base64"}}])");
  expect(b, "image");
  b = base_request(), b["tools"] = json::parse(R"([{"name":"x"}])"), expect(b, "tools.0.input_schema");
  b = base_request(), b["tool_choice"] = {{"type", "sometimes"}}, expect(b, "tool_choice.type");
  expect(json::array(), "JSON object");
  b = base_request(), b.erase("max_tokens");
  EXPECT_NO_THROW(parse_anthropic_request(b, true));  // count_tokens needs no max_tokens
}

TEST(AnthropicResponse, MessageBodyHasEveryField) {
  GenerateResult r;
  r.reason = StopReason::StopString;
  r.stop_string = "END";
  r.prompt_tokens = 12;
  r.completion_tokens = 3;
  json m = anthropic_message("msg_1", "claude-x", "Hi there", r);
  EXPECT_EQ(m["id"], "msg_1");
  EXPECT_EQ(m["type"], "message");
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_EQ(m["model"], "claude-x");
  EXPECT_EQ(m["content"], json::parse(R"([{"type":"text","text":"Hi there"}])"));
  EXPECT_EQ(m["stop_reason"], "stop_sequence");
  EXPECT_EQ(m["stop_sequence"], "END");
  EXPECT_EQ(m["usage"], json::parse(R"({"input_tokens":12,"output_tokens":3,
      "cache_creation_input_tokens":0,"cache_read_input_tokens":0})"));
  // Tokens read from the prefix cache are counted apart, as the Messages API does.
  r.cached_tokens = 8;
  EXPECT_EQ(json(anthropic_message("m", "x", "", r)["usage"]), json::parse(R"({"input_tokens":4,"output_tokens":3,
      "cache_creation_input_tokens":0,"cache_read_input_tokens":8})"));
  r.reason = StopReason::MaxTokens;
  EXPECT_EQ(anthropic_message("m", "x", "", r)["stop_reason"], "max_tokens");
  EXPECT_TRUE(anthropic_message("m", "x", "", r)["stop_sequence"].is_null());
  r.reason = StopReason::EndOfTurn;
  EXPECT_EQ(anthropic_message("m", "x", "", r)["stop_reason"], "end_turn");
}

TEST(AnthropicStream, EventSequenceAndFieldsAreExact) {
  AnthropicStream s("msg_abc", "claude-3-haiku");
  GenerateResult r;
  r.reason = StopReason::EndOfTurn;
  r.prompt_tokens = 9;
  r.completion_tokens = 2;
  std::string bytes = s.start(9);
  bytes += s.delta("Hel");
  bytes += s.ping();
  bytes += s.delta("lo");
  bytes += s.finish(r);
  auto events = parse_sse(bytes);
  std::vector<std::string> names;
  for (auto& [n, d] : events) {
    names.push_back(n);
    EXPECT_EQ(d["type"], n) << "data.type must repeat the event name";
  }
  EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "ping",
                                             "content_block_delta", "ping", "content_block_delta",
                                             "content_block_stop", "message_delta", "message_stop"}));
  const json& start = events[0].second["message"];
  EXPECT_EQ(start["id"], "msg_abc");
  EXPECT_EQ(start["model"], "claude-3-haiku");
  EXPECT_EQ(start["content"], json::array());
  EXPECT_TRUE(start["stop_reason"].is_null());
  EXPECT_EQ(start["usage"]["input_tokens"], 9);
  EXPECT_EQ(events[1].second["index"], 0);
  EXPECT_EQ(events[1].second["content_block"], json::parse(R"({"type":"text","text":""})"));
  EXPECT_EQ(events[3].second["delta"], json::parse(R"({"type":"text_delta","text":"Hel"})"));
  EXPECT_EQ(events[6].second["index"], 0);
  EXPECT_EQ(events[7].second["delta"], json::parse(R"({"stop_reason":"end_turn","stop_sequence":null})"));
  EXPECT_EQ(events[7].second["usage"]["output_tokens"], 2);
  EXPECT_EQ(events[7].second["usage"]["input_tokens"], 9);
  // The exact framing of one event.
  EXPECT_EQ(s.ping(), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

TEST(AnthropicStream, ErrorEventAfterTheStatusWasSent) {
  AnthropicStream s("msg_1", "m");
  auto events = parse_sse(s.error(ApiError::overloaded("busy")));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, "error");
  EXPECT_EQ(events[0].second, json::parse(R"({"type":"error","error":{"type":"overloaded_error","message":"busy"}})"));
}

TEST(AnthropicErrors, BodyShape) {
  json b = anthropic_error_body(ApiError::not_found("model: nope"), "req_1");
  EXPECT_EQ(b, json::parse(R"({"type":"error","error":{"type":"not_found_error","message":"model: nope"},"request_id":"req_1"})"));
  EXPECT_EQ(ApiError::too_large("x").status(), 413);
  EXPECT_EQ(ApiError::too_large("x").type(), "request_too_large");
  EXPECT_EQ(ApiError::overloaded("x").status(), 529);
}

TEST(AnthropicStream, InvalidUtf8IsReplacedNotThrown) {
  AnthropicStream s("msg_1", "m");
  std::string bytes;
  EXPECT_NO_THROW(bytes = s.delta("ok\xff"));
  EXPECT_NE(bytes.find("ok\xEF\xBF\xBD"), std::string::npos);  // U+FFFD
}
