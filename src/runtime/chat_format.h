// A chat template together with what it can render, found once by rendering probes (a system
// message, tools, an assistant turn with tool calls, a tool result), and the polyfills that supply
// what it lacks: a system prompt that a template rejects or silently drops (Phi-3-mini's original
// template does) is folded into the first user turn; tools it does not render are described in
// the system prompt with the generic call syntax; tool calls and results it cannot show are
// written as text in the family's syntax. Every message thus reaches the model, whatever the
// template.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/generator.h"
#include "runtime/tool_calls.h"

namespace pensieve {

class ChatTemplate;

struct TemplateCaps {
  bool system_role = false;       // renders a system message's text
  bool tools = false;             // renders the `tools` list
  bool tool_calls = false;        // renders an assistant turn's `tool_calls`
  bool string_arguments = false;  // wants `function.arguments` as a JSON string, not an object
  bool tool_responses = false;    // renders `role: "tool"` messages
};

class ChatFormatter {
 public:
  // Parses the template (TemplateError when malformed) and probes it.
  ChatFormatter(std::string source, std::string bos_token, std::string eos_token);
  ~ChatFormatter();
  ChatFormatter(ChatFormatter&&) noexcept;
  ChatFormatter& operator=(ChatFormatter&&) noexcept;

  const TemplateCaps& caps() const { return caps_; }
  // The family's call syntax, as the template writes calls (Generic when it has none).
  ToolCallFormat tool_format() const { return format_; }

  // The template's input for a prompt, polyfills applied.
  nlohmann::ordered_json context(const ChatPrompt& prompt) const;
  // Renders it; Error (TemplateError) when the template raises.
  std::string render(const ChatPrompt& prompt) const;

 private:
  std::string try_render(const nlohmann::ordered_json& ctx, bool& ok) const;
  void probe();

  std::unique_ptr<ChatTemplate> template_;
  std::string bos_, eos_;
  TemplateCaps caps_;
  ToolCallFormat format_ = ToolCallFormat::Generic;
};

}  // namespace pensieve
