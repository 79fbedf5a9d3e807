// Errors that end an API request: an HTTP status plus the error class that both APIs name in their
// bodies. Handlers throw ApiError; the router turns it into the body shape of the API the request
// came to (Anthropic or OpenAI).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace pensieve::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string type, const std::string& message)
      : Error(message), status_(status), type_(std::move(type)) {}

  int status() const { return status_; }
  // The Anthropic error type: invalid_request_error, authentication_error, permission_error,
  // not_found_error, request_too_large, rate_limit_error, api_error, timeout_error,
  // overloaded_error.
  const std::string& type() const { return type_; }
  // Seconds a client should wait before trying again, sent as `retry-after`; 0 = not sent.
  int retry_after() const { return retry_after_; }

  static ApiError invalid_request(const std::string& m) { return {400, "invalid_request_error", m}; }
  static ApiError authentication(const std::string& m) { return {401, "authentication_error", m}; }
  static ApiError permission(const std::string& m) { return {403, "permission_error", m}; }
  static ApiError not_found(const std::string& m) { return {404, "not_found_error", m}; }
  static ApiError method_not_allowed(const std::string& m) { return {405, "invalid_request_error", m}; }
  static ApiError too_large(const std::string& m) { return {413, "request_too_large", m}; }
  static ApiError rate_limit(const std::string& m) { return retrying(429, "rate_limit_error", m, 1); }
  static ApiError internal(const std::string& m) { return {500, "api_error", m}; }
  static ApiError unavailable(const std::string& m) { return {503, "api_error", m}; }
  static ApiError timeout(const std::string& m) { return {504, "timeout_error", m}; }
  static ApiError overloaded(const std::string& m) { return retrying(529, "overloaded_error", m, 2); }

 private:
  static ApiError retrying(int status, std::string type, const std::string& m, int seconds) {
    ApiError e(status, std::move(type), m);
    e.retry_after_ = seconds;
    return e;
  }
  int status_;
  std::string type_;
  int retry_after_ = 0;
};

// {"type":"error","error":{"type":T,"message":M},"request_id":R}
nlohmann::ordered_json anthropic_error_body(const ApiError& e, const std::string& request_id);

// {"error":{"message":M,"type":T,"param":null,"code":C}}
nlohmann::ordered_json openai_error_body(const ApiError& e);

// The status an OpenAI-shaped answer uses for this error (overloaded maps to 429).
int openai_status(const ApiError& e);

}  // namespace pensieve::server
