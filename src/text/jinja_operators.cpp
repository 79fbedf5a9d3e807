#include "text/jinja_operators.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "text/jinja_error.h"
#include "text/jinja_methods.h"
#include "text/jinja_unicode.h"

namespace pensieve::jinja {
namespace {

constexpr size_t kMaxRepeatBytes = 64u << 20;  // str * int must not exhaust memory

bool is_int_like(const Value& v) { return v.kind() == Kind::Int || v.kind() == Kind::Bool; }

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  type_error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
             b.type_name() + "'");
}

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : seq.kind() == Kind::Tuple
                                                                   ? Value::tuple({})
                                                                   : Value::list();
  if (seq.is_string()) {
    if (seq.str().size() * static_cast<size_t>(n) > kMaxRepeatBytes)
      fail("MemoryError", "string repetition result too large");
    std::string out;
    out.reserve(seq.str().size() * n);
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value(std::move(out));
  }
  const auto& items = seq.items();
  if (items.size() * static_cast<size_t>(n) > kMaxRepeatBytes / 64)
    fail("MemoryError", "list repetition result too large");
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
  return seq.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

Value add(const Value& a, const Value& b) {
  if (a.is_string() && b.is_string()) {
    if (a.is_safe()) return Value::safe_string(a.str() + (b.is_safe() ? b.str() : html_escape(b.str())));
    if (b.is_safe()) return Value::safe_string(html_escape(a.str()) + b.str());
    return Value(a.str() + b.str());
  }
  if (a.kind() == b.kind() && (a.kind() == Kind::List || a.kind() == Kind::Tuple)) {
    std::vector<Value> out = a.items();
    out.insert(out.end(), b.items().begin(), b.items().end());
    return a.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
  }
  if (a.is_string() && !a.is_safe())
    type_error("can only concatenate str (not \"" + b.type_name() + "\") to str");
  if (a.kind() == Kind::List)
    type_error("can only concatenate list (not \"" + b.type_name() + "\") to list");
  if (a.kind() == Kind::Tuple)
    type_error("can only concatenate tuple (not \"" + b.type_name() + "\") to tuple");
  unsupported("+", a, b);
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) {
    if (op == "*") {
      if ((a.is_string() || a.is_sequence()) && is_int_like(b)) return repeat(a, b.as_int());
      if ((b.is_string() || b.is_sequence()) && is_int_like(a)) return repeat(b, a.as_int());
    }
    if (op == "%" && a.is_string()) return Value(percent_format(a.str(), b));
    unsupported(op, a, b);
  }
  bool ints = is_int_like(a) && is_int_like(b);
  if (op == "/") {
    if (b.as_double() == 0) fail("ZeroDivisionError", "division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (ints) {
    int64_t x = a.as_int(), y = b.as_int(), r;
    if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
    if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
    if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
    if (op == "//") {
      if (y == 0) fail("ZeroDivisionError", "integer division or modulo by zero");
      return Value(floor_div(x, y));
    }
    if (op == "%") {
      if (y == 0) fail("ZeroDivisionError", "integer modulo by zero");
      return Value(x - floor_div(x, y) * y);
    }
    if (op == "**" && y >= 0) {
      int64_t result = 1;
      bool overflow = false;
      for (int64_t i = 0; i < y && !overflow; ++i) overflow = __builtin_mul_overflow(result, x, &result);
      if (!overflow) return Value(result);
    }
    if (op == "**" && y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
    if (op != "**") fail("OverflowError", "integer result too large");
  }
  double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "//") {
    if (y == 0) fail("ZeroDivisionError", "float floor division by zero");
    return Value(std::floor(x / y));
  }
  if (op == "%") {
    if (y == 0) fail("ZeroDivisionError", "float modulo");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value(m);
  }
  if (op == "**") return Value(std::pow(x, y));
  unsupported(op, a, b);
}

// Clamps Python slice bounds for a sequence of length n.
std::vector<int64_t> slice_indices(int64_t n, const Value& start, const Value& stop,
                                   const Value& step) {
  auto as_index = [](const Value& v) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!is_int_like(v))
      type_error("slice indices must be integers or None or have an __index__ method");
    return v.as_int();
  };
  int64_t st = as_index(step).value_or(1);
  if (st == 0) fail("ValueError", "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> i, bool is_start) -> int64_t {
    if (!i) return st > 0 ? (is_start ? 0 : n) : (is_start ? n - 1 : -1);
    int64_t v = *i;
    if (v < 0) v += n;
    if (st > 0) return std::clamp<int64_t>(v, 0, n);
    return std::clamp<int64_t>(v, -1, n - 1);
  };
  int64_t b = clamp(as_index(start), true), e = clamp(as_index(stop), false);
  std::vector<int64_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(i);
  return out;
}

std::string type_repr_for_attr(const Value& obj) {
  if (obj.is_none()) return "'None'";
  if (obj.kind() == Kind::Callable) return "'jinja2.runtime.Macro object'";
  return "'" + obj.type_name() + " object'";
}

Value missing_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(type_repr_for_attr(obj) + " has no attribute " + string_repr(name));
}

Value missing_element(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attribute(obj, key.str());
  std::string type = obj.is_none() ? "None" : obj.type_name() + " object";
  return Value::undefined(type + " has no element " + repr(key));
}

}  // namespace

[[noreturn]] void raise_undefined(const Value& undefined) {
  fail(undefined.undefined_is_unsafe() ? "SecurityError" : "UndefinedError",
       undefined.undefined_message());
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  check_defined(a);
  check_defined(b);
  if (op == "+" && !(a.is_number() && b.is_number())) return add(a, b);
  return arithmetic(op, a, b);
}

Value unary_minus(const Value& v) {
  check_defined(v);
  if (v.kind() == Kind::Float) return Value(-v.as_double());
  if (is_int_like(v)) return Value(-v.as_int());
  type_error("bad operand type for unary -: '" + v.type_name() + "'");
}

Value unary_plus(const Value& v) {
  check_defined(v);
  if (v.kind() == Kind::Float) return v;
  if (is_int_like(v)) return Value(v.as_int());
  type_error("bad operand type for unary +: '" + v.type_name() + "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::String:
      if (!item.is_string())
        type_error("'in <string>' requires string as left operand, not " + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Kind::Dict: return container.dict_ref().find(item) != nullptr;
    case Kind::Undefined: return false;
    case Kind::List:
    case Kind::Tuple:
    case Kind::Iterator:
      for (const Value& v : container.items())
        if (equals(v, item)) return true;
      return false;
    default: type_error("argument of type '" + container.type_name() + "' is not iterable");
  }
}

Value get_attr(const Value& obj, const std::string& name, const SandboxPolicy& policy) {
  check_defined(obj);
  if (obj.kind() == Kind::Object) return obj.obj().get_attr(name);
  if (!name.empty() && name[0] != '_') {
    if (std::optional<Value> m = bound_method(obj, name, policy)) return *m;
  }
  if (obj.kind() == Kind::Dict) {
    if (const Value* v = obj.dict_ref().find_key(name)) return *v;
  }
  return missing_attribute(obj, name);
}

Value get_item(const Value& obj, const Value& key, const SandboxPolicy& policy) {
  check_defined(obj);
  switch (obj.kind()) {
    case Kind::Dict:
      if (const Value* v = obj.dict_ref().find(key)) return *v;
      break;
    case Kind::List:
    case Kind::Tuple:
      if (is_int_like(key)) {
        const auto& items = obj.items();
        int64_t i = key.as_int(), n = static_cast<int64_t>(items.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return items[i];
      }
      break;
    case Kind::String:
      if (is_int_like(key)) {
        std::u32string u = utf8::decode(obj.str());
        int64_t i = key.as_int(), n = static_cast<int64_t>(u.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return Value(utf8::encode(u.substr(i, 1)));
      }
      break;
    case Kind::Object:
      if (key.is_string()) return obj.obj().get_attr(key.str());
      break;
    default: break;
  }
  if (key.is_string() && !key.str().empty() && key.str()[0] != '_') {
    if (std::optional<Value> m = bound_method(obj, key.str(), policy)) return *m;
  }
  return missing_element(obj, key);
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  check_defined(obj);
  if (obj.is_string()) {
    std::u32string u = utf8::decode(obj.str());
    std::u32string out;
    for (int64_t i : slice_indices(static_cast<int64_t>(u.size()), start, stop, step)) out += u[i];
    return Value(utf8::encode(out));
  }
  if (obj.is_sequence()) {
    const auto& items = obj.items();
    std::vector<Value> out;
    for (int64_t i : slice_indices(static_cast<int64_t>(items.size()), start, stop, step))
      out.push_back(items[i]);
    return obj.kind() == Kind::Tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
  }
  return Value::undefined(obj.type_name() + " object has no element slice");
}

std::string percent_format(const std::string& format, const Value& args) {
  std::vector<Value> positional;
  if (args.kind() == Kind::Tuple) positional = args.items();
  else positional.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) fail("ValueError", "incomplete format");
    Value arg;
    if (format[i] == '%') {
      out += '%';
      continue;
    }
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos || args.kind() != Kind::Dict)
        type_error("format requires a mapping");
      const Value* v = args.dict_ref().find_key(format.substr(i + 1, close - i - 1));
      if (!v) fail("KeyError", string_repr(format.substr(i + 1, close - i - 1)));
      arg = *v;
      i = close + 1;
    }
    std::string spec = "%";
    while (i < format.size() && std::string("-+ #0123456789.").find(format[i]) != std::string::npos)
      spec += format[i++];
    if (i >= format.size()) fail("ValueError", "incomplete format");
    char conv = format[i];
    if (arg.is_undefined() && args.kind() != Kind::Dict) {
      if (next >= positional.size()) type_error("not enough arguments for format string");
      arg = positional[next++];
    }
    char buf[512];
    switch (conv) {
      case 's': out += to_str(arg); break;
      case 'r': out += repr(arg); break;
      case 'd':
      case 'i':
        if (!arg.is_number()) type_error("%d format: a real number is required, not " + arg.type_name());
        std::snprintf(buf, sizeof buf, (spec + "lld").c_str(),
                      static_cast<long long>(arg.kind() == Kind::Float ? std::trunc(arg.as_double()) : arg.as_int()));
        out += buf;
        break;
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'x': case 'X': case 'o':
        if (!arg.is_number()) type_error("must be real number, not " + arg.type_name());
        if (conv == 'x' || conv == 'X' || conv == 'o')
          std::snprintf(buf, sizeof buf, (spec + "ll" + conv).c_str(), static_cast<long long>(arg.as_int()));
        else
          std::snprintf(buf, sizeof buf, (spec + conv).c_str(), arg.as_double());
        out += buf;
        break;
      default: fail("ValueError", std::string("unsupported format character '") + conv + "'");
    }
  }
  if (args.kind() != Kind::Dict && next < positional.size())
    type_error("not all arguments converted during string formatting");
  return out;
}

}  // namespace pensieve::jinja
