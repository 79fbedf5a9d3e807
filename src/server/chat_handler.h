// The generation flow both chat APIs share: validate, resolve the model, build the prompt off the
// network threads, queue the job, then either stream its events as SSE or answer with one body.
// What differs between the APIs is a ChatProtocol.
#pragma once
#include "server/http_exchange.h"
#include "server/server_context.h"
#include "server/api_error.h"
#include "server/chat_request.h"

namespace pensieve::server {

class ChatProtocol {
 public:
  virtual ~ChatProtocol() = default;
  virtual nlohmann::ordered_json complete(const std::string& model, const std::string& text,
                                  const GenerateResult& result) = 0;
  virtual std::string stream_start(int input_tokens) = 0;
  virtual std::string stream_delta(const std::string& text) = 0;
  virtual std::string stream_ping() = 0;
  virtual std::string stream_finish(const GenerateResult& result) = 0;
  virtual std::string stream_error(const ApiError& e) = 0;
};

std::unique_ptr<ChatProtocol> anthropic_protocol(const std::string& model_name);
std::unique_ptr<ChatProtocol> openai_protocol(const std::string& model_name, bool include_usage);

// The JSON body, or a 400 saying why it is not JSON.
nlohmann::ordered_json parse_json_body(const HttpExchange& ex);

// `key_name` identifies the caller in usage records. Throws ApiError before a response began.
asio::awaitable<void> handle_chat(ServerContext& ctx, HttpExchange& ex, bool openai, const std::string& key_name);

}  // namespace pensieve::server
