// Maps method + path to a handler, checks the API key, and shapes every error for the API the
// request came to (OpenAI's shape under /v1/chat/completions, Anthropic's elsewhere).
#pragma once
#include "server/api_error.h"
#include "server/http_exchange.h"
#include "server/server_context.h"

namespace pensieve::server {

// A stable route label for metrics ("/v1/models/{id}", "other" for unknown paths).
std::string route_label(std::string_view path);

asio::awaitable<void> route_request(ServerContext& ctx, HttpExchange& ex);

// Answers with an error in the shape of the API the request came to (with `retry-after` when the
// error names one).
asio::awaitable<void> send_error(HttpExchange& ex, const ApiError& e);

}  // namespace pensieve::server
