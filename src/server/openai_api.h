// The OpenAI chat completions API as pure translation, the twin of anthropic_api.h.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/generator.h"
#include "runtime/tool_calls.h"
#include "server/api_error.h"
#include "server/chat_request.h"

namespace pensieve::server {

ChatRequest parse_openai_request(const nlohmann::ordered_json& body);

const char* openai_finish_reason(StopReason r);

// Tool calls (with their call_ ids) become message.tool_calls and finish_reason "tool_calls".
nlohmann::ordered_json openai_completion(const std::string& id, int64_t created, const std::string& model,
                                 const std::vector<OutputPiece>& output, const GenerateResult& result);
nlohmann::ordered_json openai_completion(const std::string& id, int64_t created, const std::string& model,
                                 const std::string& text, const GenerateResult& result);

// The `data:` chunks of one streamed completion, ending in `data: [DONE]`.
class OpenAIStream {
 public:
  OpenAIStream(std::string id, int64_t created, std::string model, bool include_usage)
      : id_(std::move(id)), created_(created), model_(std::move(model)), include_usage_(include_usage) {}
  std::string start();  // the first chunk: role "assistant", empty content
  std::string delta(const std::string& text) const;
  // delta.tool_calls: the call's id, type and name with empty arguments, then the arguments in pieces.
  std::string tool_call(const ToolCall& call);
  std::string finish(const GenerateResult& result) const;
  std::string error(const ApiError& e) const;

 private:
  nlohmann::ordered_json chunk(nlohmann::ordered_json delta, nlohmann::ordered_json finish_reason) const;
  std::string id_;
  int64_t created_;
  std::string model_;
  bool include_usage_;
  int calls_ = 0;
};

}  // namespace pensieve::server
