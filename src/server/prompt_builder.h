// Turns a ChatRequest into prompt tokens for one model, exactly as generation and count_tokens both
// see them, and decides how many tokens the answer may take.
#pragma once
#include <cstdint>
#include <vector>

#include "server/chat_request.h"
#include "server/served_model.h"

namespace pensieve::server {

// The chat-template input. With system_role false (a template without a system role), the system
// prompt is folded into the first user turn.
ChatPrompt to_chat_prompt(const ChatRequest& req, bool system_role);

// Tokens of the whole prompt, prefill included. Tries the system role first and falls back to
// folding when the template rejects it; a template that rejects both is a 400.
std::vector<int32_t> prompt_tokens(const ServedModel& model, const ChatRequest& req);

struct PreparedPrompt {
  std::vector<int32_t> tokens;
  int max_tokens = 0;  // clamped to the room left in the context and the server-wide cap
  GrammarPtr grammar;  // a forced tool call in the model's syntax (tool_choice any/tool/required), or null
};

// The grammar that forces a tool call (tool_choice any / tool / required) in the model's call
// syntax, or null when calls are not forced. 400 naming the keyword for a schema it cannot compile.
GrammarPtr forced_call_grammar(const ServedModel& model, const ChatRequest& req);

// 400 when the prompt leaves no room in the context (naming both counts). server_cap <= 0: none.
PreparedPrompt prepare_prompt(const ServedModel& model, const ChatRequest& req, int server_cap);

// GenerateRequest for a prepared prompt with the request's sampling settings over the defaults.
GenerateRequest to_generate_request(const ChatRequest& req, PreparedPrompt prepared);

}  // namespace pensieve::server
