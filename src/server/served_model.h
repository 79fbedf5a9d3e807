// What the server needs from a model: the seam between HTTP/API translation and the runtime, so
// that the translation layer and the HTTP handling are tested with a fake model and served with a
// real ModelInstance (model_instance_adapter.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/generator.h"
#include "runtime/model_manager.h"
#include "runtime/scheduler.h"
#include "runtime/tool_calls.h"

namespace pensieve::server {

class ServedModel : public ManagedModel {
 public:
  virtual const std::string& id() const = 0;
  virtual int context_length() const = 0;
  virtual double load_seconds() const = 0;
  virtual int64_t created_unix() const = 0;  // when the model file was written
  // Tokens of the rendered chat prompt; throws pensieve::Error when the template rejects it.
  virtual std::vector<int32_t> chat_tokens(const ChatPrompt& prompt) const = 0;
  virtual std::vector<int32_t> text_tokens(const std::string& text) const = 0;  // no BOS
  // The syntax in which this model writes tool calls (from its chat template).
  virtual ToolCallFormat tool_call_format() const = 0;
  // Runs the model's generations (the runtime's scheduler; a stand-in in server tests).
  GenerationService& service() const override = 0;
};

}  // namespace pensieve::server
