// Python semantics of the operators and lookups a template uses: arithmetic with int/float
// promotion and Python's error messages, `in`, subscripts and slices on code points, and jinja2's
// sandboxed attribute lookup (methods first for `.`, items first for `[]`).
#pragma once
#include <optional>
#include <string>

#include "text/jinja_value.h"

namespace pensieve::jinja {

struct SandboxPolicy {
  // transformers renders in jinja2's ImmutableSandboxedEnvironment: list.append, dict.update and
  // the other mutating methods are refused with SecurityError.
  bool immutable = true;
};

[[noreturn]] void raise_undefined(const Value& undefined);
// Raises if v is Undefined (the error jinja2's Undefined raises when used in an operation).
inline void check_defined(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
}

Value binary_op(const std::string& op, const Value& a, const Value& b);
Value unary_minus(const Value& v);
Value unary_plus(const Value& v);
bool contains(const Value& container, const Value& item);  // `item in container`

Value get_attr(const Value& obj, const std::string& name, const SandboxPolicy& policy);
Value get_item(const Value& obj, const Value& key, const SandboxPolicy& policy);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// Python's printf-style `format % args`.
std::string percent_format(const std::string& format, const Value& args);

}  // namespace pensieve::jinja
