// jinja2's builtin tests (`x is defined`, `x is string`, `x is divisibleby 3`...).
#include <cmath>

#include "text/jinja_error.h"
#include "text/jinja_filters.h"
#include "text/jinja_unicode.h"

namespace pensieve::jinja {
namespace {

const Value& test_arg(const CallArgs& args, const std::string& test) {
  if (args.positional.empty())
    type_error("test '" + test + "' missing required positional argument");
  return args.positional[0];
}

bool is_int_value(const Value& v) { return v.kind() == Kind::Int; }

bool sameas(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::None:
    case Kind::Undefined: return true;
    case Kind::Bool: return a.as_bool() == b.as_bool();
    case Kind::Int: return a.as_int() == b.as_int() && a.as_int() >= -5 && a.as_int() <= 256;
    case Kind::Float: return false;
    case Kind::String: return a.str() == b.str();
    default: return a.identity() == b.identity();
  }
}

}  // namespace

bool apply_test(const std::string& name, const Value& v, CallArgs& args,
                const SandboxPolicy& policy) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == Kind::Bool;
  if (name == "true") return v.kind() == Kind::Bool && v.as_bool();
  if (name == "false") return v.kind() == Kind::Bool && !v.as_bool();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return is_int_value(v);
  if (name == "float") return v.kind() == Kind::Float;
  if (name == "mapping") return v.kind() == Kind::Dict;
  if (name == "iterable")
    return v.is_string() || v.is_sequence() || v.kind() == Kind::Dict ||
           v.kind() == Kind::Iterator || v.is_undefined();
  if (name == "sequence")
    return v.is_string() || v.is_sequence() || v.kind() == Kind::Dict || v.is_undefined();
  if (name == "callable") return v.kind() == Kind::Callable;
  if (name == "escaped") return v.is_safe();
  if (name == "lower" || name == "upper") {
    std::string s = to_str(v);
    bool any = false;
    for (char32_t c : utf8::decode(s)) {
      if (name == "lower" ? utf8::is_cased_upper(c) : utf8::is_cased_lower(c)) return false;
      any = any || utf8::is_cased_upper(c) || utf8::is_cased_lower(c);
    }
    return any;
  }
  if (name == "odd" || name == "even") {
    Value r = binary_op("%", v, Value(2));
    return name == "odd" ? equals(r, Value(1)) : equals(r, Value(0));
  }
  if (name == "divisibleby")
    return equals(binary_op("%", v, test_arg(args, name)), Value(0));
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, test_arg(args, name));
  if (name == "ne" || name == "!=") return !equals(v, test_arg(args, name));
  if (name == "sameas") return sameas(v, test_arg(args, name));
  if (name == "in") return contains(test_arg(args, name), v);
  if (name == "lt" || name == "lessthan" || name == "<" || name == "gt" || name == "greaterthan" ||
      name == ">" || name == "le" || name == "<=" || name == "ge" || name == ">=") {
    const Value& other = test_arg(args, name);
    check_defined(v);
    check_defined(other);
    if (name == "lt" || name == "lessthan" || name == "<") return less_than(v, other, "<");
    if (name == "gt" || name == "greaterthan" || name == ">") return less_than(other, v, ">");
    if (name == "le" || name == "<=") return !less_than(other, v, "<=");
    return !less_than(v, other, ">=");
  }
  if (name == "filter" || name == "test") {
    const Value& n = v;
    if (!n.is_string()) return false;
    CallArgs probe;
    try {
      if (name == "test") apply_test(n.str(), Value::none(), probe, policy);
      else apply_filter(n.str(), Value::none(), probe, policy);
    } catch (const TemplateError& e) {
      if (e.kind() == "TemplateAssertionError") return false;
    }
    return true;
  }
  fail("TemplateAssertionError", "No test named '" + name + "'.");
}

}  // namespace pensieve::jinja
