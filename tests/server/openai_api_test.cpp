// The OpenAI chat-completions translation without sockets.
#include <gtest/gtest.h>

#include "runtime/grammar.h"
#include "server/anthropic_api.h"
#include "server/openai_api.h"

using namespace pensieve;
using namespace pensieve::server;
using nlohmann::json;

namespace {
json base_request() {
  return json::parse(R"({"model":"fake","messages":[{"role":"system","content":"Be brief."},
                         {"role":"user","content":"Hi"}]})");
}
}  // namespace

TEST(OpenAIRequest, ReadsMessagesAndOptions) {
  json b = base_request();
  b["max_completion_tokens"] = 20;
  b["max_tokens"] = 99;  // the newer field wins
  b["temperature"] = 1.7;
  b["seed"] = 42;
  b["stop"] = "END";
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  b["messages"].push_back({{"role", "developer"}, {"content", json::parse(R"([{"type":"text","text":"More."}])")}});
  ChatRequest r = parse_openai_request(b);
  EXPECT_EQ(r.system, "Be brief.\n\nMore.");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(*r.max_tokens, 20);
  EXPECT_FLOAT_EQ(*r.temperature, 1.7f);
  EXPECT_EQ(*r.seed, 42u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FALSE(parse_openai_request(base_request()).max_tokens.has_value());
}

TEST(OpenAIRequest, ToolsPassThroughInTheClientsKeyOrder) {
  const char* tools = R"([{"type":"function","function":{"name":"grep","parameters":{"type":"object",)"
                      R"("properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}}}}}])";
  auto b = nlohmann::ordered_json::parse(R"({"model":"fake","messages":[{"role":"user","content":"Hi"}]})");
  b["tools"] = nlohmann::ordered_json::parse(tools);
  EXPECT_EQ(parse_openai_request(b).tools.dump(), tools);
  b["tool_choice"] = "none";
  EXPECT_TRUE(parse_openai_request(b).tools.is_null());
  b["tools"][0].erase("function");
  EXPECT_THROW(parse_openai_request(b), ApiError);
}

TEST(OpenAIRequest, ToolChoiceIsValidated) {
  auto b = nlohmann::ordered_json::parse(R"({"model":"fake","messages":[{"role":"user","content":"Hi"}],
      "tools":[{"type":"function","function":{"name":"f"}}]})");
  for (const char* ok : {R"("auto")", R"("required")", R"({"type":"function","function":{"name":"f"}})",
                         R"({"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[]}})"}) {
    b["tool_choice"] = nlohmann::ordered_json::parse(ok);
    EXPECT_FALSE(parse_openai_request(b).tools.is_null()) << ok;
  }
  for (const char* bad : {"5", "[]", R"({"type":"bogus"})", R"("sometimes")", R"({"type":"function"})",
                          R"({"type":"function","function":{}})", "true"}) {
    b["tool_choice"] = nlohmann::ordered_json::parse(bad);
    try {
      parse_openai_request(b);
      ADD_FAILURE() << "accepted tool_choice " << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_NE(std::string(e.what()).find("tool_choice"), std::string::npos) << e.what();
    }
  }
}

TEST(OpenAIRequest, HugeMaxTokensAreClamped) {
  json b = base_request();
  for (const char* huge : {"9223372036854775808", "18446744073709551616", "1e30", "1e300"}) {
    b["max_tokens"] = json::parse(huge);
    EXPECT_EQ(parse_openai_request(b).max_tokens.value(), INT32_MAX) << huge;
  }
}

TEST(OpenAIRequest, RejectsInvalidFields) {
  auto rejects = [](json b, const std::string& needle) {
    try {
      parse_openai_request(b);
      ADD_FAILURE() << "accepted " << b.dump();
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  json b = base_request();
  b["temperature"] = 2.5, rejects(b, "temperature");
  b = base_request(), b["n"] = 2, rejects(b, "n");
  b = base_request(), b["stop"] = {"a", "b", "c", "d", "e"}, rejects(b, "stop");
  b = base_request(), b["max_tokens"] = 0, rejects(b, "max_tokens");
  b = base_request(), b["messages"][1]["role"] = "robot", rejects(b, "role");
  b = base_request(), b["messages"] = json::array(), rejects(b, "messages");
  b = base_request();
  b["messages"][1]["content"] = json::parse(R"([{"type":"image_url","image_url":{"url":"x"}}])");
  rejects(b, "image_url");
}

TEST(OpenAIResponse, CompletionBody) {
  GenerateResult r;
  r.reason = StopReason::MaxTokens;
  r.prompt_tokens = 5;
  r.completion_tokens = 4;
  json c = openai_completion("chatcmpl-1", 1700000000, "fake", "text", r);
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"]["content"], "text");
  EXPECT_EQ(c["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"], json::parse(R"({"prompt_tokens":5,"completion_tokens":4,"total_tokens":9,
                                             "prompt_tokens_details":{"cached_tokens":0}})"));
}

TEST(OpenAIStream, ChunksUsageAndDone) {
  OpenAIStream s("chatcmpl-1", 1700000000, "fake", true);
  GenerateResult r;
  r.reason = StopReason::EndOfTurn;
  r.prompt_tokens = 5;
  r.completion_tokens = 1;
  std::string bytes = s.start() + s.delta("Hi") + s.finish(r);
  std::vector<std::string> datas;
  for (size_t pos = 0; pos < bytes.size();) {
    size_t end = bytes.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    ASSERT_EQ(bytes.compare(pos, 6, "data: "), 0);
    datas.push_back(bytes.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  ASSERT_EQ(datas.size(), 5u);
  EXPECT_EQ(datas.back(), "[DONE]");
  json first = json::parse(datas[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["usage"].is_null());
  EXPECT_EQ(json::parse(datas[1])["choices"][0]["delta"]["content"], "Hi");
  EXPECT_EQ(json::parse(datas[2])["choices"][0]["finish_reason"], "stop");
  json usage = json::parse(datas[3]);
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);
}

TEST(OpenAIErrors, ShapeAndStatus) {
  json b = openai_error_body(ApiError::authentication("bad key"));
  EXPECT_EQ(b["error"]["message"], "bad key");
  EXPECT_EQ(b["error"]["code"], "invalid_api_key");
  EXPECT_TRUE(b["error"].contains("param"));
  EXPECT_EQ(openai_status(ApiError::overloaded("busy")), 429);
  EXPECT_EQ(openai_status(ApiError::not_found("m")), 404);
}

TEST(OpenAIRequest, ResponseFormatBecomesAGrammar) {
  using ojson = nlohmann::ordered_json;
  ojson b = ojson::parse(base_request().dump());
  EXPECT_EQ(parse_openai_request(b).grammar, nullptr);
  b["response_format"] = {{"type", "text"}};
  EXPECT_EQ(parse_openai_request(b).grammar, nullptr);
  b["response_format"] = {{"type", "json_object"}};
  GrammarPtr g = parse_openai_request(b).grammar;
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(g->accepts(R"({"a": [1]})"));
  EXPECT_FALSE(g->accepts("[1]"));
  // The client's property order is kept.
  b["response_format"] = ojson::parse(R"({"type":"json_schema","json_schema":{"name":"w","strict":true,
      "schema":{"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"string"}},
                "required":["z","a"],"additionalProperties":false}}})");
  g = parse_openai_request(b).grammar;
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(g->accepts(R"({"z": 1, "a": "x"})"));
  EXPECT_FALSE(g->accepts(R"({"a": "x", "z": 1})"));
  EXPECT_FALSE(g->accepts(R"({"z": "1", "a": "x"})"));
}

TEST(OpenAIRequest, BadResponseFormatsAre400sNamingTheField) {
  json b = base_request();
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type":"xml"})", "response_format.type"},
      {R"({"type":"json_schema"})", "response_format.json_schema"},
      {R"({"type":"json_schema","json_schema":{"schema":{}}})", "response_format.json_schema.name"},
      {R"({"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","patternProperties":{}}}})",
       "patternProperties"},
      {R"J({"type":"json_schema","json_schema":{"name":"n","schema":{"type":"string","pattern":"(?!x)"}}})J", "pattern"},
  };
  for (const auto& [rf, needle] : cases) {
    b["response_format"] = json::parse(rf);
    try {
      parse_openai_request(b);
      ADD_FAILURE() << rf << " was accepted";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << rf;
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}
