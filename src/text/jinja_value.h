// The values a template computes with, modelled on the Python objects jinja2 sees: None, bool,
// int, float, str (optionally "safe" markup), list, tuple, dict (insertion-ordered), the lazy
// iterators some filters return (generator, dict_items...), callables (macros, builtins, bound
// methods), objects with attributes (namespace(), loop) and Undefined, which remembers why it is
// undefined so that misusing it raises jinja2's exact UndefinedError message.
// Lists and dicts have reference semantics, as in Python: `set a = b` shares the container.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pensieve::jinja {

class Value;
struct Dict;
struct Callable;
struct Object;

enum class Kind : uint8_t {
  Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Iterator, Callable, Object
};

class Value {
 public:
  Value() = default;  // Undefined with no particular reason
  Value(bool b) : kind_(Kind::Bool), b_(b) {}
  Value(int v) : kind_(Kind::Int), i_(v) {}
  Value(int64_t v) : kind_(Kind::Int), i_(v) {}
  Value(double v) : kind_(Kind::Float), f_(v) {}
  Value(std::string s) : kind_(Kind::String), s_(std::move(s)) {}
  Value(const char* s) : kind_(Kind::String), s_(s) {}

  // message: what jinja2's UndefinedError would say if this value is used in an operation.
  static Value undefined(std::string message);
  // An attribute the sandbox refuses (e.g. list.append): using it raises SecurityError.
  static Value unsafe(std::string message);
  static Value none();
  static Value safe_string(std::string s);  // markupsafe.Markup: `+` escapes the other operand
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items);
  // A one-shot iterator of Python type `type_name` ("generator", "dict_items"...). has_len: len()
  // works on it (dict views) or raises TypeError (generators).
  static Value iterator(std::vector<Value> items, std::string type_name, bool has_len = false);
  static Value dict();
  static Value dict(std::shared_ptr<Dict> d);
  static Value callable(std::shared_ptr<Callable> fn);
  static Value object(std::shared_ptr<Object> obj);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }
  bool is_safe() const { return kind_ == Kind::String && safe_; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::Bool ? (b_ ? 1 : 0) : i_; }
  double as_double() const { return kind_ == Kind::Float ? f_ : static_cast<double>(as_int()); }
  const std::string& str() const { return s_; }  // String; for Iterator its type name
  const std::string& undefined_message() const { return s_; }
  bool undefined_is_unsafe() const { return kind_ == Kind::Undefined && safe_; }
  bool iterator_has_len() const { return safe_; }

  std::vector<Value>& items() const { return *static_cast<std::vector<Value>*>(ptr_.get()); }
  Dict& dict_ref() const { return *static_cast<Dict*>(ptr_.get()); }
  Callable& fn() const { return *static_cast<Callable*>(ptr_.get()); }
  Object& obj() const { return *static_cast<Object*>(ptr_.get()); }
  const void* identity() const { return ptr_.get(); }

  bool truthy() const;
  std::string type_name() const;  // the Python type name used in error messages

 private:
  Kind kind_ = Kind::Undefined;
  bool safe_ = false;  // String: Markup; Iterator: supports len()
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<void> ptr_;
};

struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find_key(std::string_view key) const;
  void set(const Value& key, Value value);
  bool erase(const Value& key);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* keyword_arg(std::string_view name) const;
  // Positional argument `index`, else keyword `name`, else nullptr.
  const Value* get(size_t index, std::string_view name) const;
};

struct Callable {
  virtual ~Callable() = default;
  virtual Value call(CallArgs& args) = 0;
  virtual std::string repr() const = 0;
  virtual std::string type_name() const { return "function"; }
};

struct Object {
  virtual ~Object() = default;
  virtual std::string type_name() const = 0;
  // Undefined (with jinja2's message) when the attribute does not exist.
  virtual Value get_attr(const std::string& name) const = 0;
  // False when the object does not accept attribute assignment.
  virtual bool set_attr(const std::string& name, Value value) { return false; }
  virtual std::string repr() const = 0;
};

// Python-compatible conversions.
std::string to_str(const Value& v);   // str(v); Undefined prints as ""
std::string repr(const Value& v);     // repr(v)
std::string string_repr(std::string_view s);
std::string float_repr(double d);     // Python's shortest round-trip repr ("1.0", "1e-05")
std::string html_escape(std::string_view s);

bool equals(const Value& a, const Value& b);  // Python ==
// Python ordering (<); throws TypeError "'<' not supported between..." for unordered types.
bool less_than(const Value& a, const Value& b, const char* op = "<");
// Python iter(v) materialised: list/tuple items, dict keys, string characters. Undefined yields
// nothing; anything else raises TypeError "'int' object is not iterable".
std::vector<Value> iterate(const Value& v);
// len(v), or TypeError "object of type 'int' has no len()".
int64_t length_of(const Value& v);

// json.dumps(v, ensure_ascii=False, indent=..., separators=..., sort_keys=...) as transformers'
// tojson filter calls it. indent < 0 means None.
struct JsonOptions {
  std::string indent;  // empty with has_indent=false means compact
  bool has_indent = false;
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonOptions& options);

Value from_json(const nlohmann::ordered_json& j);
Value from_json(const nlohmann::json& j);

}  // namespace pensieve::jinja
