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

// The body for an error, in the shape of the API that `path` belongs to; sets the status.
nlohmann::ordered_json error_body_for(std::string_view path, const ApiError& e, const std::string& request_id, int& status);

}  // namespace pensieve::server
