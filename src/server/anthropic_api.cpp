#include "server/anthropic_api.h"

#include "server/json_fields.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

namespace {

// The text of a tool_result's content: a string or text blocks.
std::string result_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw ApiError::invalid_request(where + ": expected a string or an array");
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string at = where + "." + std::to_string(i);
    const json& b = content[i];
    if (!b.is_object()) throw ApiError::invalid_request(at + ": expected an object");
    const std::string type = fields::require_string(b, "type", at);
    if (type != "text")
      throw ApiError::invalid_request(at + ".type: '" + type +
                                      "' blocks in a tool result are not supported: the served models read text only");
    if (!out.empty()) out += "\n";
    out += fields::require_string(b, "text", at);
  }
  return out;
}

// Adds one content block to `turn`: text to its text, tool_use to its calls, tool_result to its
// results; thinking blocks carry nothing for the model.
void add_block(ChatMessage& turn, const json& block, const std::string& where) {
  if (!block.is_object()) throw ApiError::invalid_request(where + ": expected an object");
  const std::string type = fields::require_string(block, "type", where);
  auto add_text = [&](const std::string& t) {
    if (!turn.content.empty() && !t.empty()) turn.content += "\n\n";
    turn.content += t;
  };
  if (type == "text") return add_text(fields::require_string(block, "text", where));
  if (type == "image" || type == "document")
    throw ApiError::invalid_request(where + ": '" + type +
                                    "' content blocks are not supported: the served models read text only");
  if (type == "thinking" || type == "redacted_thinking") return;
  if (type == "tool_use" || type == "server_tool_use") {
    if (turn.role != "assistant")
      throw ApiError::invalid_request(where + ": tool_use blocks belong in assistant messages");
    ToolCall call;
    call.id = fields::require_string(block, "id", where);
    call.name = fields::require_string(block, "name", where);
    const json* input = fields::find(block, "input");
    if (!input || !input->is_object()) throw ApiError::invalid_request(where + ".input: expected an object");
    call.arguments = *input;
    turn.tool_calls.push_back(std::move(call));
    return;
  }
  if (type == "tool_result") {
    if (turn.role != "user")
      throw ApiError::invalid_request(where + ": tool_result blocks belong in user messages");
    ToolResult r;
    r.tool_call_id = fields::require_string(block, "tool_use_id", where);
    if (const json* content = fields::find(block, "content")) r.content = result_text(*content, where + ".content");
    r.is_error = fields::optional_bool(block, "is_error").value_or(false);
    turn.tool_results.push_back(std::move(r));
    return;
  }
  throw ApiError::invalid_request(where + ".type: unsupported content block type '" + type + "'");
}

// The system prompt: a string or text blocks.
std::string system_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError::invalid_request("system: expected a string or an array of content blocks, got " +
                                    fields::json_type_name(content));
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string at = "system." + std::to_string(i);
    if (!content[i].is_object()) throw ApiError::invalid_request(at + ": expected an object");
    if (fields::require_string(content[i], "type", at) != "text")
      throw ApiError::invalid_request(at + ": only text blocks are allowed here");
    std::string t = fields::require_string(content[i], "text", at);
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
  MessageTurn turn;
  turn.role = fields::require_string(m, "role", where);
  if (turn.role != "user" && turn.role != "assistant" && turn.role != "system")
    throw ApiError::invalid_request(where + ".role: expected 'user', 'assistant' or 'system', got '" + turn.role + "'");
  const json* content = fields::find(m, "content");
  if (!content) throw ApiError::invalid_request(where + ".content: Field required");
  if (content->is_string()) {
    turn.content = content->get<std::string>();
  } else if (content->is_array()) {
    for (size_t i = 0; i < content->size(); ++i) {
      const std::string at = where + ".content." + std::to_string(i);
      if (turn.role == "system" && fields::optional_string((*content)[i], "type", at).value_or("") != "text")
        throw ApiError::invalid_request(at + ": only text blocks are allowed here");
      add_block(turn, (*content)[i], at);
    }
  } else {
    throw ApiError::invalid_request(where + ".content: expected a string or an array of content blocks, got " +
                                    fields::json_type_name(*content));
  }
  return turn;
}

// Tools are validated and handed to the chat template in the OpenAI function form that templates
// expect; server tools (typed, without a schema) have nothing to render and are left out.
void parse_tools(const json& body, ChatRequest& req) {
  if (const json* choice = fields::optional_object(body, "tool_choice")) {
    const std::string type = fields::require_string(*choice, "type", "tool_choice");
    if (type == "auto") req.tool_choice.mode = ToolChoice::Mode::Auto;
    else if (type == "any") req.tool_choice.mode = ToolChoice::Mode::Any;
    else if (type == "none") req.tool_choice.mode = ToolChoice::Mode::None;
    else if (type == "tool") {
      req.tool_choice.mode = ToolChoice::Mode::Named;
      req.tool_choice.name = fields::require_string(*choice, "name", "tool_choice");
    } else {
      throw ApiError::invalid_request("tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got '" + type + "'");
    }
    if (fields::optional_bool(*choice, "disable_parallel_tool_use").value_or(false)) req.tool_choice.parallel = false;
  }
  const json* tools = fields::optional_array(body, "tools");
  json out = json::array();
  for (size_t i = 0; tools && i < tools->size(); ++i) {
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
  const ToolChoice& choice = req.tool_choice;
  if (choice.mode == ToolChoice::Mode::Any && out.empty())
    throw ApiError::invalid_request("tool_choice: 'any' needs at least one tool in 'tools'");
  if (choice.mode == ToolChoice::Mode::Named) {
    bool found = false;
    for (const auto& t : out) found = found || t["function"]["name"] == choice.name;
    if (!found) throw ApiError::invalid_request("tool_choice.name: no tool named '" + choice.name + "' in 'tools'");
  }
  if (choice.mode != ToolChoice::Mode::None && !out.empty()) req.tools = std::move(out);
}

}  // namespace

ChatRequest parse_anthropic_request(const json& body, bool for_count) {
  if (!body.is_object()) throw ApiError::invalid_request("request body: expected a JSON object");
  ChatRequest req;
  req.model = fields::require_string(body, "model");
  if (req.model.empty()) throw ApiError::invalid_request("model: must not be empty");
  if (const json* system = fields::find(body, "system"))
    req.system = without_billing_lines(system_text(*system));
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

static const char* stop_reason_with_calls(const GenerateResult& r, int calls) {
  return calls > 0 ? "tool_use" : anthropic_stop_reason(r.reason);
}

json anthropic_usage(int prompt_tokens, int cached_tokens, int output_tokens) {
  // As the Messages API counts: input_tokens are the prompt tokens not read from the cache.
  return {{"input_tokens", prompt_tokens - cached_tokens},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", cached_tokens},
          {"output_tokens", output_tokens}};
}

static json stop_sequence_value(const GenerateResult& r, int calls = 0) {
  return r.reason == StopReason::StopString && calls == 0 ? json(r.stop_string) : json(nullptr);
}

json anthropic_message(const std::string& id, const std::string& model, const std::vector<OutputPiece>& output,
                       const GenerateResult& result) {
  json content = json::array();
  int calls = 0;
  for (const auto& p : output) {
    if (p.kind == OutputPiece::Kind::Call) {
      ++calls;
      content.push_back({{"type", "tool_use"}, {"id", p.call.id}, {"name", p.call.name}, {"input", p.call.arguments}});
    } else if (!p.text.empty()) {
      if (!content.empty() && content.back()["type"] == "text")
        content.back()["text"] = content.back()["text"].get<std::string>() + p.text;
      else
        content.push_back({{"type", "text"}, {"text", p.text}});
    }
  }
  if (content.empty()) content.push_back({{"type", "text"}, {"text", ""}});
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model},
          {"content", content},
          {"stop_reason", stop_reason_with_calls(result, calls)},
          {"stop_sequence", stop_sequence_value(result, calls)},
          {"usage", anthropic_usage(result.prompt_tokens, result.cached_tokens, result.completion_tokens)}};
}

json anthropic_message(const std::string& id, const std::string& model, const std::string& text,
                       const GenerateResult& result) {
  std::vector<OutputPiece> output;
  output.push_back({OutputPiece::Kind::Text, text, {}});
  return anthropic_message(id, model, output, result);
}

std::vector<std::string> utf8_chunks(const std::string& text, size_t size) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = std::min(text.size(), at + std::max<size_t>(size, 1));
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    out.push_back(text.substr(at, end - at));
    at = end;
  }
  return out;
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
  std::string out = sse_event("message_start", {{"type", "message_start"}, {"message", message}});
  if (!tools_) out += open_text();
  return out + ping();
}

std::string AnthropicStream::open_text() {
  block_open_ = true;
  ++index_;
  return sse_event("content_block_start", {{"type", "content_block_start"},
                                           {"index", index_},
                                           {"content_block", {{"type", "text"}, {"text", ""}}}});
}

std::string AnthropicStream::close_block() {
  if (!block_open_) return {};
  block_open_ = false;
  return sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", index_}});
}

std::string AnthropicStream::delta(const std::string& text) {
  std::string out;
  if (!block_open_) out = open_text();
  return out + sse_event("content_block_delta", {{"type", "content_block_delta"},
                                                 {"index", index_},
                                                 {"delta", {{"type", "text_delta"}, {"text", text}}}});
}

std::string AnthropicStream::tool_call(const ToolCall& call) {
  std::string out = close_block();
  ++index_;
  ++calls_;
  out += sse_event("content_block_start",
                   {{"type", "content_block_start"},
                    {"index", index_},
                    {"content_block",
                     {{"type", "tool_use"}, {"id", call.id}, {"name", call.name}, {"input", json::object()}}}});
  // The input goes out in pieces, as the API streams it; clients concatenate them.
  for (const std::string& piece : utf8_chunks(json_text(call.arguments), 24))
    out += sse_event("content_block_delta", {{"type", "content_block_delta"},
                                             {"index", index_},
                                             {"delta", {{"type", "input_json_delta"}, {"partial_json", piece}}}});
  out += sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", index_}});
  return out;
}

std::string AnthropicStream::ping() const { return sse_event("ping", {{"type", "ping"}}); }

std::string AnthropicStream::finish(const GenerateResult& result) {
  std::string out;
  if (index_ < 0) out += open_text();  // an empty answer still has its (empty) text block
  out += close_block();
  return out +
         sse_event("message_delta",
                   {{"type", "message_delta"},
                    {"delta", {{"stop_reason", stop_reason_with_calls(result, calls_)},
                               {"stop_sequence", stop_sequence_value(result, calls_)}}},
                    {"usage", anthropic_usage(input_tokens_, result.cached_tokens, result.completion_tokens)}}) +
         sse_event("message_stop", {{"type", "message_stop"}});
}

std::string AnthropicStream::error(const ApiError& e) const {
  return sse_event("error", {{"type", "error"}, {"error", {{"type", e.type()}, {"message", e.what()}}}});
}

}  // namespace pensieve::server
