// The Python methods templates call on values: str (strip, split, startswith, format...),
// dict (items, keys, values, get...) and list (count, index, and the mutating ones the
// immutable sandbox refuses).
#pragma once
#include <optional>
#include <string>

#include "text/jinja_operators.h"
#include "text/jinja_value.h"

namespace pensieve::jinja {

// The bound method `obj.name`, or nullopt when the type has no such method. A mutating method
// under an immutable policy comes back as an "unsafe" Undefined that raises SecurityError when
// called, as jinja2's sandbox does.
std::optional<Value> bound_method(const Value& obj, const std::string& name,
                                  const SandboxPolicy& policy);

// Python str methods shared with filters.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count);
std::string py_title(const std::string& s);       // jinja2's title filter (word-start split)
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string py_format(const std::string& format, const CallArgs& args);  // str.format

}  // namespace pensieve::jinja
