// The one error a template can raise, at parse time or while rendering. Python jinja2 reports
// failures as different exception classes (TemplateSyntaxError, UndefinedError, TypeError...);
// kind() keeps that class name so callers and tests can tell them apart, while what() is the
// message alone (for raise_exception(msg) it is exactly msg).
#pragma once
#include <string>

#include "util/error.h"

namespace pensieve {

class TemplateError : public Error {
 public:
  using Error::Error;
  TemplateError(std::string kind, const std::string& message)
      : Error(message), kind_(std::move(kind)) {}
  // The Python exception class jinja2 would have raised: "TemplateError", "UndefinedError",
  // "TypeError", "TemplateSyntaxError", "SecurityError", "ValueError", ...
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_ = "TemplateError";
};

namespace jinja {
[[noreturn]] inline void fail(const char* kind, const std::string& message) {
  throw TemplateError(kind, message);
}
[[noreturn]] inline void type_error(const std::string& message) { fail("TypeError", message); }
}  // namespace jinja

}  // namespace pensieve
