// The Anthropic Messages API as pure translation: request JSON to ChatRequest, a finished
// generation to the response JSON, and generation events to the exact SSE byte stream.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/generator.h"
#include "runtime/tool_calls.h"
#include "server/api_error.h"
#include "server/chat_request.h"

namespace pensieve::server {

// Validates a /v1/messages body (or a count_tokens body when for_count is true, which needs no
// max_tokens). Throws ApiError(400) naming the field.
ChatRequest parse_anthropic_request(const nlohmann::ordered_json& body, bool for_count = false);

const char* anthropic_stop_reason(StopReason r);

// `prompt_tokens` in all, of which `cached_tokens` came from the prefix cache.
nlohmann::ordered_json anthropic_usage(int prompt_tokens, int cached_tokens, int output_tokens);

// A finished answer: its text and tool calls in the order the model wrote them (calls carry their
// toolu_ ids). Any tool call makes the stop_reason "tool_use".
nlohmann::ordered_json anthropic_message(const std::string& id, const std::string& model,
                                 const std::vector<OutputPiece>& output, const GenerateResult& result);
nlohmann::ordered_json anthropic_message(const std::string& id, const std::string& model,
                                 const std::string& text, const GenerateResult& result);

// Produces the SSE bytes of one streamed message, in the order the API sends them:
// message_start, content_block_start, ping, content_block_delta..., content_block_stop,
// message_delta, message_stop. ping() may be called at any time after start().
// With `tools` set, blocks open as the answer needs them: a text block at the first text, a
// tool_use block (content_block_start with an empty input, input_json_delta pieces that
// concatenate to the input, content_block_stop) for each call.
class AnthropicStream {
 public:
  AnthropicStream(std::string id, std::string model, bool tools = false)
      : id_(std::move(id)), model_(std::move(model)), tools_(tools) {}
  std::string start(int input_tokens);  // message_start, (content_block_start,) ping
  std::string delta(const std::string& text);
  std::string tool_call(const ToolCall& call);  // the call's id is the block's id
  std::string ping() const;
  std::string finish(const GenerateResult& result);  // content_block_stop, message_delta, message_stop
  std::string error(const ApiError& e) const;        // event: error (after the 200 was sent)

 private:
  std::string open_text();
  std::string close_block();
  std::string id_, model_;
  bool tools_ = false;
  int input_tokens_ = 0;
  int index_ = -1;          // the open block, or the last one
  bool block_open_ = false;
  int calls_ = 0;
};

// Splits text into pieces of about `size` bytes, never inside a UTF-8 character.
std::vector<std::string> utf8_chunks(const std::string& text, size_t size);

// Compact JSON; invalid UTF-8 is replaced rather than thrown.
std::string json_text(const nlohmann::ordered_json& data);
// "event: NAME\ndata: JSON\n\n"
std::string sse_event(const std::string& name, const nlohmann::ordered_json& data);
// "data: JSON\n\n"
std::string sse_data(const std::string& data);

}  // namespace pensieve::server
