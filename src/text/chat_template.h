// A model's chat template (tokenizer.chat_template in GGUF, chat_template in
// tokenizer_config.json), rendered exactly as Hugging Face transformers' apply_chat_template
// renders it with Python jinja2: trim_blocks, lstrip_blocks, loop controls, the immutable
// sandbox, tojson = json.dumps(ensure_ascii=False), raise_exception() and strftime_now().
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "text/jinja_error.h"

namespace pensieve {

namespace jinja {
struct Stmt;
}

class ChatTemplate {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // Parses the template; TemplateError (kind "TemplateSyntaxError", message with the line) when
  // it is malformed.
  explicit ChatTemplate(std::string source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // context: {"messages": [...], "add_generation_prompt": bool, "bos_token": "...",
  // "eos_token": "...", "tools": [...] (optional), ...any other variables}. Throws TemplateError
  // with the template's message (raise_exception's text, or jinja2's UndefinedError/TypeError
  // message; kind() names the Python exception class).
  // Prefer the ordered_json overload: nlohmann::json sorts object keys, while templates that
  // print tools with tojson must see them in the caller's order, as Python dicts keep it.
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

  // The clock behind strftime_now() (default: the system clock, local time as in Python).
  void set_clock(Clock clock);
  const std::string& source() const { return source_; }

 private:
  struct Parsed;
  std::string source_;
  std::unique_ptr<Parsed> parsed_;
  Clock clock_;
};

}  // namespace pensieve
