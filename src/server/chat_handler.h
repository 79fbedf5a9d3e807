// The generation flow both chat APIs share: validate, resolve the model, build the prompt off the
// network threads, queue the job, then either stream its events as SSE or answer with one body.
// What differs between the APIs is a ChatProtocol.
#pragma once
#include <optional>

#include "runtime/tool_calls.h"
#include "server/http_exchange.h"
#include "server/server_context.h"
#include "server/api_error.h"
#include "server/chat_request.h"

namespace pensieve::server {

class ChatProtocol {
 public:
  virtual ~ChatProtocol() = default;
  // The answer's text and tool calls; calls get the API's ids here.
  virtual nlohmann::ordered_json complete(const std::string& model, std::vector<OutputPiece> output,
                                  const GenerateResult& result) = 0;
  virtual std::string stream_start(int input_tokens) = 0;
  virtual std::string stream_delta(const std::string& text) = 0;
  virtual std::string stream_tool_call(ToolCall call) = 0;
  virtual std::string stream_ping() = 0;
  virtual std::string stream_finish(const GenerateResult& result) = 0;
  virtual std::string stream_error(const ApiError& e) = 0;
};

// `tools`: the request offers tools (text blocks then open only when text comes).
std::unique_ptr<ChatProtocol> anthropic_protocol(const std::string& model_name, bool tools = false);
std::unique_ptr<ChatProtocol> openai_protocol(const std::string& model_name, bool include_usage);

// Turns generated text into the answer's pieces: text, and tool calls when the request offers
// tools (parsed in the model's syntax). With parallel calls disabled, only the first call counts.
class OutputShaper {
 public:
  OutputShaper() = default;  // text only
  OutputShaper(ToolCallFormat format, bool parallel) : parser_(std::in_place, format), parallel_(parallel) {}
  std::vector<OutputPiece> push(const std::string& text);
  std::vector<OutputPiece> finish();

 private:
  std::vector<OutputPiece> filter(std::vector<OutputPiece> pieces);
  std::optional<ToolCallParser> parser_;
  bool parallel_ = true;
  bool closed_ = false;  // the one allowed call was made
};

// The JSON body, or a 400 saying why it is not JSON.
nlohmann::ordered_json parse_json_body(const HttpExchange& ex);

// `key_name` identifies the caller in usage records. Throws ApiError before a response began.
asio::awaitable<void> handle_chat(ServerContext& ctx, HttpExchange& ex, bool openai, const std::string& key_name);

}  // namespace pensieve::server
