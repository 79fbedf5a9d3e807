#include "server/anthropic_api.h"

#include "server/json_fields.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

namespace {

// Text of one content block, or "" for blocks that carry nothing for a text model (thinking).
std::string block_text(const json& block, const std::string& where) {
  if (!block.is_object()) throw ApiError::invalid_request(where + ": expected an object");
  const std::string type = fields::require_string(block, "type", where);
  if (type == "text") return fields::require_string(block, "text", where);
  if (type == "image" || type == "document")
    throw ApiError::invalid_request(where + ": '" + type +
                                    "' content blocks are not supported: the served models read text only");
  if (type == "thinking" || type == "redacted_thinking") return "";
  if (type == "tool_use") {
    // Prior tool calls are shown to the model as text until tool use is supported.
    std::string name = fields::optional_string(block, "name", where).value_or("");
    const json* input = fields::find(block, "input");
    return "[tool_use " + name + "] " + (input ? input->dump() : "{}");
  }
  if (type == "tool_result") {
    const json* content = fields::find(block, "content");
    if (!content) return "";
    if (content->is_string()) return content->get<std::string>();
    if (!content->is_array()) throw ApiError::invalid_request(where + ".content: expected a string or an array");
    std::string out;
    for (size_t i = 0; i < content->size(); ++i) {
      std::string t = block_text((*content)[i], where + ".content." + std::to_string(i));
      if (!out.empty() && !t.empty()) out += "\n";
      out += t;
    }
    return out;
  }
  throw ApiError::invalid_request(where + ".type: unsupported content block type '" + type + "'");
}

// A message's or the system prompt's content: a string or an array of blocks.
std::string content_text(const json& content, const std::string& where, bool text_blocks_only) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError::invalid_request(where + ": expected a string or an array of content blocks, got " +
                                    fields::json_type_name(content));
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string at = where + "." + std::to_string(i);
    if (text_blocks_only && fields::optional_string(content[i], "type", at).value_or("") != "text")
      throw ApiError::invalid_request(at + ": only text blocks are allowed here");
    std::string t = block_text(content[i], at);
    if (!out.empty() && !t.empty()) out += "\n\n";
    out += t;
  }
  return out;
}

// Claude Code starts its system prompt with a block holding a line
// `x-anthropic-billing-header: ...` that changes with every request. It means nothing to a local
// model, and left in it would make every prompt differ from its first tokens, so the prefix cache
// could never reuse the long preamble that follows. Such lines are dropped.
std::string without_billing_lines(const std::string& text) {
  constexpr std::string_view kPrefix = "x-anthropic-billing-header:";
  if (text.find(kPrefix) == std::string::npos) return text;
  std::string out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string_view line(text.data() + at, end - at);
    if (line.rfind(kPrefix, 0) != 0) out += line;
    at = end;
  }
  while (!out.empty() && (out.front() == '\n')) out.erase(0, 1);
  return out;
}

MessageTurn read_message(const json& m, const std::string& where) {
  const std::string role = fields::require_string(m, "role", where);
  if (role != "user" && role != "assistant" && role != "system")
    throw ApiError::invalid_request(where + ".role: expected 'user', 'assistant' or 'system', got '" + role + "'");
  const json* content = fields::find(m, "content");
  if (!content) throw ApiError::invalid_request(where + ".content: Field required");
  return {role, content_text(*content, where + ".content", false)};
}

// Tools are validated and handed to the chat template in the OpenAI function form that templates
// expect; server tools (typed, without a schema) have nothing to render and are left out.
void parse_tools(const json& body, ChatRequest& req) {
  bool tools_off = false;
  if (const json* choice = fields::optional_object(body, "tool_choice")) {
    const std::string type = fields::require_string(*choice, "type", "tool_choice");
    if (type != "auto" && type != "any" && type != "tool" && type != "none")
      throw ApiError::invalid_request("tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got '" + type + "'");
    if (type == "tool") fields::require_string(*choice, "name", "tool_choice");
    tools_off = type == "none";
  }
  const json* tools = fields::optional_array(body, "tools");
  if (!tools) return;
  json out = json::array();
  for (size_t i = 0; i < tools->size(); ++i) {
    const json& t = (*tools)[i];
    const std::string where = "tools." + std::to_string(i);
    if (!t.is_object()) throw ApiError::invalid_request(where + ": expected an object");
    const std::string name = fields::require_string(t, "name", where);
    if (name.empty()) throw ApiError::invalid_request(where + ".name: must not be empty");
    const std::string type = fields::optional_string(t, "type", where).value_or("custom");
    const json* schema = fields::find(t, "input_schema");
    if (schema && !schema->is_object())
      throw ApiError::invalid_request(where + ".input_schema: expected an object");
    if (type == "custom" && !schema) throw ApiError::invalid_request(where + ".input_schema: Field required");
    if (!schema) continue;
    // Keys in the order of the OpenAI function form; the schema keeps the client's own order.
    json fn = {{"name", name}};
    if (auto d = fields::optional_string(t, "description", where)) fn["description"] = *d;
    fn["parameters"] = *schema;
    out.push_back({{"type", "function"}, {"function", fn}});
  }
  if (!tools_off && !out.empty()) req.tools = std::move(out);
}

}  // namespace

ChatRequest parse_anthropic_request(const json& body, bool for_count) {
  if (!body.is_object()) throw ApiError::invalid_request("request body: expected a JSON object");
  ChatRequest req;
  req.model = fields::require_string(body, "model");
  if (req.model.empty()) throw ApiError::invalid_request("model: must not be empty");
  if (const json* system = fields::find(body, "system"))
    req.system = without_billing_lines(content_text(*system, "system", true));
  read_messages(body, req, read_message);
  req.max_tokens = fields::optional_int(body, "max_tokens", 1);
  if (!req.max_tokens && !for_count) throw ApiError::invalid_request("max_tokens: Field required");
  req.temperature = fields::optional_number_in(body, "temperature", 0.0, 1.0);
  req.top_p = fields::optional_number_in(body, "top_p", 0.0, 1.0);
  req.top_k = fields::optional_int(body, "top_k", 0);
  req.stream = fields::optional_bool(body, "stream").value_or(false);
  if (const json* stops = fields::optional_array(body, "stop_sequences")) {
    for (size_t i = 0; i < stops->size(); ++i) {
      const json& s = (*stops)[i];
      if (!s.is_string() || s.get<std::string>().empty())
        throw ApiError::invalid_request("stop_sequences." + std::to_string(i) + ": expected a non-empty string");
      req.stop.push_back(s.get<std::string>());
    }
  }
  if (const json* metadata = fields::optional_object(body, "metadata"))
    req.user = fields::optional_string(*metadata, "user_id", "metadata").value_or("");
  parse_tools(body, req);
  return req;
}

const char* anthropic_stop_reason(StopReason r) {
  switch (r) {
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::StopString: return "stop_sequence";
    default: return "end_turn";
  }
}

json anthropic_usage(int prompt_tokens, int cached_tokens, int output_tokens) {
  // As the Messages API counts: input_tokens are the prompt tokens not read from the cache.
  return {{"input_tokens", prompt_tokens - cached_tokens},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", cached_tokens},
          {"output_tokens", output_tokens}};
}

static json stop_sequence_value(const GenerateResult& r) {
  return r.reason == StopReason::StopString ? json(r.stop_string) : json(nullptr);
}

json anthropic_message(const std::string& id, const std::string& model, const std::string& text,
                       const GenerateResult& result) {
  json content = json::array();
  content.push_back({{"type", "text"}, {"text", text}});
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model},
          {"content", content},
          {"stop_reason", anthropic_stop_reason(result.reason)},
          {"stop_sequence", stop_sequence_value(result)},
          {"usage", anthropic_usage(result.prompt_tokens, result.cached_tokens, result.completion_tokens)}};
}

// Text from a model is UTF-8 by contract; should a byte slip through, it is replaced, not thrown.
std::string json_text(const json& data) { return data.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const std::string& name, const json& data) {
  return "event: " + name + "\ndata: " + json_text(data) + "\n\n";
}

std::string sse_data(const std::string& data) { return "data: " + data + "\n\n"; }

std::string AnthropicStream::start(int input_tokens) {
  input_tokens_ = input_tokens;
  json message = {{"id", id_},
                  {"type", "message"},
                  {"role", "assistant"},
                  {"model", model_},
                  {"content", json::array()},
                  {"stop_reason", nullptr},
                  {"stop_sequence", nullptr},
                  {"usage", anthropic_usage(input_tokens, 0, 0)}};
  return sse_event("message_start", {{"type", "message_start"}, {"message", message}}) +
         sse_event("content_block_start", {{"type", "content_block_start"},
                                           {"index", 0},
                                           {"content_block", {{"type", "text"}, {"text", ""}}}}) +
         ping();
}

std::string AnthropicStream::delta(const std::string& text) {
  return sse_event("content_block_delta", {{"type", "content_block_delta"},
                                           {"index", 0},
                                           {"delta", {{"type", "text_delta"}, {"text", text}}}});
}

std::string AnthropicStream::ping() const { return sse_event("ping", {{"type", "ping"}}); }

std::string AnthropicStream::finish(const GenerateResult& result) {
  return sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}) +
         sse_event("message_delta",
                   {{"type", "message_delta"},
                    {"delta", {{"stop_reason", anthropic_stop_reason(result.reason)},
                               {"stop_sequence", stop_sequence_value(result)}}},
                    {"usage", anthropic_usage(input_tokens_, result.cached_tokens, result.completion_tokens)}}) +
         sse_event("message_stop", {{"type", "message_stop"}});
}

std::string AnthropicStream::error(const ApiError& e) const {
  return sse_event("error", {{"type", "error"}, {"error", {{"type", e.type()}, {"message", e.what()}}}});
}

}  // namespace pensieve::server
