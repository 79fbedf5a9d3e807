#include "server/prompt_builder.h"

#include <algorithm>

#include "runtime/grammar.h"
#include "server/api_error.h"
#include "server/json_fields.h"

namespace pensieve::server {

void append_turn(std::vector<ChatMessage>& turns, ChatMessage turn) {
  if (!turns.empty() && turns.back().role == turn.role) {
    ChatMessage& prev = turns.back();
    if (!prev.content.empty() && !turn.content.empty()) prev.content += "\n\n";
    prev.content += turn.content;
    for (auto& c : turn.tool_calls) prev.tool_calls.push_back(std::move(c));
    for (auto& r : turn.tool_results) prev.tool_results.push_back(std::move(r));
    return;
  }
  turns.push_back(std::move(turn));
}

void append_turn(std::vector<ChatMessage>& turns, const std::string& role, const std::string& text) {
  ChatMessage m;
  m.role = role;
  m.content = text;
  append_turn(turns, std::move(m));
}

void read_messages(const nlohmann::ordered_json& body, ChatRequest& req, const MessageReader& read) {
  const auto* messages = fields::optional_array(body, "messages");
  if (!messages) throw ApiError::invalid_request("messages: Field required");
  if (messages->empty()) throw ApiError::invalid_request("messages: at least one message is required");
  for (size_t i = 0; i < messages->size(); ++i) {
    const auto& m = (*messages)[i];
    const std::string where = "messages." + std::to_string(i);
    if (!m.is_object()) throw ApiError::invalid_request(where + ": expected an object");
    MessageTurn turn = read(m, where);
    if (turn.role == "system") {
      if (!req.system.empty() && !turn.content.empty()) req.system += "\n\n";
      req.system += turn.content;
    } else {
      append_turn(req.messages, std::move(turn));
    }
  }
  if (!req.messages.empty() && req.messages.back().role == "assistant" && req.messages.back().tool_calls.empty()) {
    req.assistant_prefill = req.messages.back().content;
    req.messages.pop_back();
  }
}

ChatPrompt to_chat_prompt(const ChatRequest& req, bool system_role) {
  ChatPrompt p;
  p.tools = req.tools;
  if (!req.system.empty() && system_role) p.messages.push_back({"system", req.system, {}, {}});
  for (const auto& m : req.messages) p.messages.push_back(m);
  if (!req.system.empty() && !system_role) {
    auto first_user = std::find_if(p.messages.begin(), p.messages.end(),
                                   [](const ChatMessage& m) { return m.role == "user"; });
    if (first_user == p.messages.end())
      p.messages.insert(p.messages.begin(), ChatMessage{"user", req.system, {}, {}});
    else
      first_user->content = req.system + "\n\n" + first_user->content;
  }
  if (p.messages.empty()) p.messages.push_back({"user", "", {}, {}});
  return p;
}

std::vector<int32_t> prompt_tokens(const ServedModel& model, const ChatRequest& req) {
  std::vector<int32_t> tokens;
  try {
    tokens = model.chat_tokens(to_chat_prompt(req, true));
  } catch (const Error& first) {
    if (req.system.empty()) throw ApiError::invalid_request(std::string("chat template: ") + first.what());
    try {
      tokens = model.chat_tokens(to_chat_prompt(req, false));
    } catch (const Error& e) {
      throw ApiError::invalid_request(std::string("chat template: ") + e.what());
    }
  }
  if (!req.assistant_prefill.empty()) {
    auto more = model.text_tokens(req.assistant_prefill);
    tokens.insert(tokens.end(), more.begin(), more.end());
  }
  return tokens;
}

GrammarPtr forced_call_grammar(const ServedModel& model, const ChatRequest& req) {
  const ToolChoice& choice = req.tool_choice;
  if (!req.tools.is_array() || req.tools.empty()) return nullptr;
  if (choice.mode != ToolChoice::Mode::Any && choice.mode != ToolChoice::Mode::Named) return nullptr;
  try {
    return tool_call_grammar(model.tool_call_format(), req.tools,
                             choice.mode == ToolChoice::Mode::Named ? choice.name : "", choice.parallel);
  } catch (const SchemaError& e) {
    throw ApiError::invalid_request("tools: a tool's schema uses unsupported keyword '" + e.keyword + "': " + e.what());
  }
}

PreparedPrompt prepare_prompt(const ServedModel& model, const ChatRequest& req, int server_cap) {
  PreparedPrompt out;
  out.grammar = forced_call_grammar(model, req);
  out.tokens = prompt_tokens(model, req);
  const int n = static_cast<int>(out.tokens.size());
  const int ctx = model.context_length();
  const int room = ctx - n;
  if (room <= 0)
    throw ApiError::invalid_request("prompt is too long: " + std::to_string(n) +
                                    " tokens, but the context of model '" + model.id() + "' is " +
                                    std::to_string(ctx) + " tokens");
  int limit = req.max_tokens.value_or(room);
  limit = std::min(limit, room);
  if (server_cap > 0) limit = std::min(limit, server_cap);
  out.max_tokens = limit;
  return out;
}

GenerateRequest to_generate_request(const ChatRequest& req, PreparedPrompt prepared) {
  GenerateRequest g;
  g.prompt = std::move(prepared.tokens);
  g.max_tokens = prepared.max_tokens;
  g.stop_strings = req.stop;
  g.grammar = prepared.grammar ? prepared.grammar : req.grammar;
  if (req.temperature) g.sampling.temperature = *req.temperature;
  if (req.top_p) g.sampling.top_p = *req.top_p;
  if (req.top_k) g.sampling.top_k = *req.top_k;
  if (req.presence_penalty) g.sampling.presence_penalty = *req.presence_penalty;
  if (req.frequency_penalty) g.sampling.frequency_penalty = *req.frequency_penalty;
  if (req.seed) g.sampling.seed = *req.seed;
  return g;
}

}  // namespace pensieve::server
