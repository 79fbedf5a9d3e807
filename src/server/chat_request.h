// The request both APIs translate into: a conversation, generation limits and sampling settings,
// with everything the wire formats differ on already resolved. Only sampling fields the client gave
// are set; the rest keep the engine's defaults.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/generator.h"

namespace pensieve::server {

// Whether and how the answer must call a tool: Anthropic tool_choice auto | any | tool | none and
// disable_parallel_tool_use, OpenAI tool_choice auto | required | named | none and
// parallel_tool_calls.
struct ToolChoice {
  enum class Mode { Auto, None, Any, Named } mode = Mode::Auto;
  std::string name;     // Named: the tool
  bool parallel = true; // several calls in one answer allowed
};

struct ChatRequest {
  std::string model;                  // as requested (echoed back in responses)
  std::string system;                 // the folded system prompt ("" when none)
  std::vector<ChatMessage> messages;  // user/assistant turns, consecutive same roles merged
  std::string assistant_prefill;      // a trailing assistant turn that the answer continues
  nlohmann::ordered_json tools;       // OpenAI function-tool form for the chat template, or null
  ToolChoice tool_choice;             // tools is null when the mode is None
  std::optional<int> max_tokens;      // absent: as much as the context leaves (OpenAI only)
  std::optional<float> temperature, top_p, presence_penalty, frequency_penalty;
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  GrammarPtr grammar;                 // constrained decoding (OpenAI response_format), or null
  bool stream = false;
  bool include_usage = false;         // OpenAI stream_options.include_usage
  std::string user;                   // metadata.user_id / user: for logs only
};

// Appends a turn, merging it into the previous one when the role repeats (the Anthropic API
// treats consecutive same-role turns as one; many chat templates reject them).
// Tool calls and tool results are kept, in order.
void append_turn(std::vector<ChatMessage>& turns, ChatMessage turn);
void append_turn(std::vector<ChatMessage>& turns, const std::string& role, const std::string& text);

// One message as an API's rules read it: "system" (folded into the system prompt, in order),
// "user" or "assistant" (a turn), with its text, tool calls and tool results.
using MessageTurn = ChatMessage;
using MessageReader = std::function<MessageTurn(const nlohmann::ordered_json& message, const std::string& where)>;

// Reads body["messages"] (required: a non-empty array of objects) into req.system and req.messages
// through `read`, which applies the API's role and content rules and throws ApiError naming
// `where` ("messages.3"); a trailing assistant turn (without tool calls) becomes req.assistant_prefill.
void read_messages(const nlohmann::ordered_json& body, ChatRequest& req, const MessageReader& read);

}  // namespace pensieve::server
