#include "server/openai_api.h"

#include "runtime/grammar.h"
#include "server/anthropic_api.h"  // sse_data
#include "server/json_fields.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

namespace {

std::string part_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError::invalid_request(where + ": expected a string or an array of content parts, got " +
                                    fields::json_type_name(content));
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string at = where + "." + std::to_string(i);
    const json& part = content[i];
    if (!part.is_object()) throw ApiError::invalid_request(at + ": expected an object");
    const std::string type = fields::require_string(part, "type", at);
    if (type != "text")
      throw ApiError::invalid_request(at + ".type: '" + type +
                                      "' content parts are not supported: the served models read text only");
    if (!out.empty()) out += "\n\n";
    out += fields::require_string(part, "text", at);
  }
  return out;
}

// An assistant turn's tool_calls: [{id, type: "function", function: {name, arguments: JSON text}}].
void read_tool_calls(const json& calls, ChatMessage& turn, const std::string& where) {
  if (!calls.is_array()) throw ApiError::invalid_request(where + ": expected an array");
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string at = where + "." + std::to_string(i);
    const json& c = calls[i];
    if (!c.is_object()) throw ApiError::invalid_request(at + ": expected an object");
    const json* fn = fields::find(c, "function");
    if (!fn || !fn->is_object()) throw ApiError::invalid_request(at + ".function: Field required");
    ToolCall call;
    call.id = fields::optional_string(c, "id", at).value_or("");
    call.name = fields::require_string(*fn, "name", at + ".function");
    if (const json* args = fields::find(*fn, "arguments")) {
      if (args->is_object()) {
        call.arguments = *args;
      } else if (args->is_string()) {
        const std::string& text = args->get_ref<const std::string&>();
        json parsed = text.empty() ? json::object() : json::parse(text, nullptr, false);
        if (parsed.is_discarded() || !parsed.is_object())
          throw ApiError::invalid_request(at + ".function.arguments: expected a JSON object encoded as a string");
        call.arguments = std::move(parsed);
      } else {
        throw ApiError::invalid_request(at + ".function.arguments: expected a string");
      }
    }
    turn.tool_calls.push_back(std::move(call));
  }
}

MessageTurn read_message(const json& m, const std::string& where) {
  const std::string role = fields::require_string(m, "role", where);
  const json* content = fields::find(m, "content");
  std::string text = content && !content->is_null() ? part_text(*content, where + ".content") : "";
  MessageTurn turn;
  if (role == "system" || role == "developer") {
    turn.role = "system";
    turn.content = std::move(text);
    return turn;
  }
  if (role == "user" || role == "assistant") {
    if (!content && role == "user") throw ApiError::invalid_request(where + ".content: Field required");
    turn.role = role;
    turn.content = std::move(text);
    if (role == "assistant")
      if (const json* calls = fields::find(m, "tool_calls"); calls && !calls->is_null())
        read_tool_calls(*calls, turn, where + ".tool_calls");
    return turn;
  }
  if (role == "tool") {
    // A tool's output: a tool result in the next user turn.
    turn.role = "user";
    turn.tool_results.push_back({fields::require_string(m, "tool_call_id", where), std::move(text), false});
    return turn;
  }
  throw ApiError::invalid_request(where + ".role: expected 'system', 'developer', 'user', 'assistant' or 'tool', got '" + role + "'");
}

void parse_stop(const json& body, ChatRequest& req) {
  const json* stop = fields::find(body, "stop");
  if (!stop) return;
  if (stop->is_string()) {
    req.stop.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    if (stop->size() > 4) throw ApiError::invalid_request("stop: at most 4 sequences");
    for (const auto& s : *stop) {
      if (!s.is_string()) throw ApiError::invalid_request("stop: expected strings");
      req.stop.push_back(s.get<std::string>());
    }
  } else {
    throw ApiError::invalid_request("stop: expected a string or an array of strings");
  }
  for (const auto& s : req.stop)
    if (s.empty()) throw ApiError::invalid_request("stop: sequences must not be empty");
}

// tool_choice: "none", "auto", "required", or an object naming a function (or a custom tool, or
// the allowed tools: their mode counts, the list does not narrow the tools).
ToolChoice read_tool_choice(const json& body) {
  ToolChoice out;
  const json* choice = fields::find(body, "tool_choice");
  if (!choice) return out;
  if (choice->is_string()) {
    const std::string mode = choice->get<std::string>();
    if (mode != "none" && mode != "auto" && mode != "required")
      throw ApiError::invalid_request("tool_choice: expected 'none', 'auto', 'required' or an object, got '" + mode + "'");
    out.mode = mode == "none" ? ToolChoice::Mode::None : mode == "required" ? ToolChoice::Mode::Any : ToolChoice::Mode::Auto;
    return out;
  }
  if (!choice->is_object())
    throw ApiError::invalid_request("tool_choice: expected a string or an object, got " + fields::json_type_name(*choice));
  const std::string type = fields::require_string(*choice, "type", "tool_choice");
  if (type == "function" || type == "custom") {
    const json* named = fields::find(*choice, type.c_str());
    if (!named || !named->is_object())
      throw ApiError::invalid_request("tool_choice." + type + ": Field required");
    out.mode = ToolChoice::Mode::Named;
    out.name = fields::require_string(*named, "name", "tool_choice." + type);
  } else if (type == "allowed_tools") {
    const json* allowed = fields::optional_object(*choice, "allowed_tools");
    if (!allowed) throw ApiError::invalid_request("tool_choice.allowed_tools: Field required");
    const std::string mode = fields::optional_string(*allowed, "mode", "tool_choice.allowed_tools").value_or("auto");
    if (mode == "required") out.mode = ToolChoice::Mode::Any;
  } else {
    throw ApiError::invalid_request("tool_choice.type: expected 'function', 'custom' or 'allowed_tools', got '" + type + "'");
  }
  return out;
}

void parse_tools(const json& body, ChatRequest& req) {
  req.tool_choice = read_tool_choice(body);
  if (auto parallel = fields::optional_bool(body, "parallel_tool_calls")) req.tool_choice.parallel = *parallel;
  const json* tools = fields::optional_array(body, "tools");
  bool named_found = false;
  for (size_t i = 0; tools && i < tools->size(); ++i) {
    const std::string where = "tools." + std::to_string(i);
    const json& t = (*tools)[i];
    if (!t.is_object()) throw ApiError::invalid_request(where + ": expected an object");
    const json* fn = fields::find(t, "function");
    if (!fn || !fn->is_object()) throw ApiError::invalid_request(where + ".function: Field required");
    const std::string name = fields::require_string(*fn, "name", where + ".function");
    if (const json* params = fields::find(*fn, "parameters"); params && !params->is_object())
      throw ApiError::invalid_request(where + ".function.parameters: expected an object");
    named_found = named_found || name == req.tool_choice.name;
  }
  const bool have_tools = tools && !tools->empty();
  if (req.tool_choice.mode == ToolChoice::Mode::Any && !have_tools)
    throw ApiError::invalid_request("tool_choice: 'required' needs at least one tool in 'tools'");
  if (req.tool_choice.mode == ToolChoice::Mode::Named && !named_found)
    throw ApiError::invalid_request("tool_choice: no tool named '" + req.tool_choice.name + "' in 'tools'");
  if (req.tool_choice.mode != ToolChoice::Mode::None && have_tools) req.tools = *tools;
}

// response_format: "text" (free), "json_object" (any JSON object) or "json_schema" (a value of
// json_schema.schema; `strict` or not, the output is constrained). A schema the grammar compiler
// cannot handle is a 400 naming the keyword.
void parse_response_format(const json& body, ChatRequest& req) {
  const json* rf = fields::optional_object(body, "response_format");
  if (!rf) return;
  const std::string type = fields::require_string(*rf, "type", "response_format");
  if (type == "text") return;
  if (type == "json_object") {
    req.grammar = grammar_json_object();
    return;
  }
  if (type != "json_schema")
    throw ApiError::invalid_request("response_format.type: expected 'text', 'json_object' or 'json_schema', got '" +
                                    type + "'");
  const json* js = fields::optional_object(*rf, "json_schema");
  if (!js) throw ApiError::invalid_request("response_format.json_schema: Field required");
  fields::require_string(*js, "name", "response_format.json_schema");
  fields::optional_bool(*js, "strict");
  auto it = js->find("schema");
  const json schema = it == js->end() ? json::object() : *it;
  if (!schema.is_object() && !schema.is_boolean())
    throw ApiError::invalid_request("response_format.json_schema.schema: expected an object");
  try {
    req.grammar = grammar_json_schema(schema);
  } catch (const SchemaError& e) {
    throw ApiError::invalid_request("response_format.json_schema.schema: unsupported keyword '" + e.keyword +
                                    "': " + e.what());
  }
}

}  // namespace

ChatRequest parse_openai_request(const json& body) {
  if (!body.is_object()) throw ApiError::invalid_request("request body: expected a JSON object");
  ChatRequest req;
  req.model = fields::require_string(body, "model");
  read_messages(body, req, read_message);
  req.max_tokens = fields::optional_int(body, "max_completion_tokens", 1);
  if (!req.max_tokens) req.max_tokens = fields::optional_int(body, "max_tokens", 1);
  req.temperature = fields::optional_number_in(body, "temperature", 0.0, 2.0);
  req.top_p = fields::optional_number_in(body, "top_p", 0.0, 1.0);
  req.presence_penalty = fields::optional_number_in(body, "presence_penalty", -2.0, 2.0);
  req.frequency_penalty = fields::optional_number_in(body, "frequency_penalty", -2.0, 2.0);
  req.seed = fields::optional_u64(body, "seed");
  if (auto n = fields::optional_int(body, "n", 1); n && *n != 1)
    throw ApiError::invalid_request("n: only 1 choice is supported");
  req.stream = fields::optional_bool(body, "stream").value_or(false);
  if (const json* opts = fields::optional_object(body, "stream_options"))
    req.include_usage = fields::optional_bool(*opts, "include_usage").value_or(false);
  parse_stop(body, req);
  parse_tools(body, req);
  parse_response_format(body, req);
  req.user = fields::optional_string(body, "user").value_or("");
  return req;
}

const char* openai_finish_reason(StopReason r) {
  return r == StopReason::MaxTokens ? "length" : "stop";
}

static const char* finish_reason_with_calls(const GenerateResult& r, int calls) {
  return calls > 0 ? "tool_calls" : openai_finish_reason(r.reason);
}

static json tool_call_json(const ToolCall& c) {
  return {{"id", c.id}, {"type", "function"},
          {"function", {{"name", c.name}, {"arguments", json_text(c.arguments)}}}};
}

static json openai_usage(const GenerateResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}}}};
}

json openai_completion(const std::string& id, int64_t created, const std::string& model,
                       const std::vector<OutputPiece>& output, const GenerateResult& result) {
  std::string text;
  json calls = json::array();
  for (const auto& p : output) {
    if (p.kind == OutputPiece::Kind::Call) calls.push_back(tool_call_json(p.call));
    else text += p.text;
  }
  json message = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  if (!calls.empty()) {
    if (text.empty()) message["content"] = nullptr;
    message["tool_calls"] = calls;
  }
  json choice = {{"index", 0},
                 {"message", message},
                 {"logprobs", nullptr},
                 {"finish_reason", finish_reason_with_calls(result, static_cast<int>(calls.size()))}};
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})},
          {"usage", openai_usage(result)},
          {"system_fingerprint", nullptr}};
}

json openai_completion(const std::string& id, int64_t created, const std::string& model,
                       const std::string& text, const GenerateResult& result) {
  std::vector<OutputPiece> output;
  output.push_back({OutputPiece::Kind::Text, text, {}});
  return openai_completion(id, created, model, output, result);
}

json OpenAIStream::chunk(json delta, json finish_reason) const {
  json choice = {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                 {"finish_reason", std::move(finish_reason)}};
  json c = {{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_},
            {"model", model_}, {"system_fingerprint", nullptr}, {"choices", json::array({choice})}};
  if (include_usage_) c["usage"] = nullptr;
  return c;
}

std::string OpenAIStream::start() {
  return sse_data(json_text(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)));
}

std::string OpenAIStream::delta(const std::string& text) const {
  return sse_data(json_text(chunk({{"content", text}}, nullptr)));
}

std::string OpenAIStream::tool_call(const ToolCall& call) {
  const int index = calls_++;
  json first = {{"index", index}, {"id", call.id}, {"type", "function"},
                {"function", {{"name", call.name}, {"arguments", ""}}}};
  std::string out = sse_data(json_text(chunk({{"tool_calls", json::array({first})}}, nullptr)));
  for (const std::string& piece : utf8_chunks(json_text(call.arguments), 24)) {
    json more = {{"index", index}, {"function", {{"arguments", piece}}}};
    out += sse_data(json_text(chunk({{"tool_calls", json::array({more})}}, nullptr)));
  }
  return out;
}

std::string OpenAIStream::finish(const GenerateResult& result) const {
  std::string out = sse_data(json_text(chunk(json::object(), finish_reason_with_calls(result, calls_))));
  if (include_usage_) {
    json u = chunk(json::object(), nullptr);
    u["choices"] = json::array();
    u["usage"] = openai_usage(result);
    out += sse_data(json_text(u));
  }
  return out + sse_data("[DONE]");
}

std::string OpenAIStream::error(const ApiError& e) const { return sse_data(json_text(openai_error_body(e))); }

}  // namespace pensieve::server
