#include "server/api_error.h"

namespace pensieve::server {

nlohmann::ordered_json anthropic_error_body(const ApiError& e, const std::string& request_id) {
  return {{"type", "error"},
          {"error", {{"type", e.type()}, {"message", e.what()}}},
          {"request_id", request_id}};
}

int openai_status(const ApiError& e) { return e.status() == 529 ? 429 : e.status(); }

nlohmann::ordered_json openai_error_body(const ApiError& e) {
  // OpenAI names classes by status; keep the message and give the conventional type/code.
  std::string type = e.type();
  nlohmann::ordered_json code = nullptr;
  if (e.status() == 401) code = "invalid_api_key";
  if (e.status() == 404 && type == "not_found_error") code = "model_not_found";
  if (e.status() == 413) type = "invalid_request_error", code = "request_too_large";
  if (e.status() == 500) type = "server_error";
  if (e.status() == 529) type = "server_overloaded", code = "server_overloaded";
  if (e.status() == 429 && e.type() == "rate_limit_error") code = "rate_limit_exceeded";
  return {{"error", {{"message", e.what()}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

}  // namespace pensieve::server
