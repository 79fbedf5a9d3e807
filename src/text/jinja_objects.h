// Small runtime objects shared by the interpreter, filters and globals: builtin functions,
// jinja2's namespace() and the loop variable.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "text/jinja_value.h"

namespace pensieve::jinja {

// A function implemented in C++ (a global such as range(), or a bound method such as
// "abc".upper).
class BuiltinFunction : public Callable {
 public:
  using Fn = std::function<Value(CallArgs&)>;
  BuiltinFunction(std::string name, Fn fn, std::string type = "builtin_function_or_method")
      : name_(std::move(name)), fn_(std::move(fn)), type_(std::move(type)) {}
  Value call(CallArgs& args) override { return fn_(args); }
  std::string repr() const override { return "<built-in function " + name_ + ">"; }
  std::string type_name() const override { return type_; }

  static Value make(std::string name, Fn fn) {
    return Value::callable(std::make_shared<BuiltinFunction>(std::move(name), std::move(fn)));
  }

 private:
  std::string name_;
  Fn fn_;
  std::string type_;
};

// jinja2's namespace(): the one object whose attributes `set ns.attr = ...` may assign, which is
// how templates carry state out of a loop.
class Namespace : public Object {
 public:
  std::string type_name() const override { return "Namespace"; }
  Value get_attr(const std::string& name) const override {
    if (const Value* v = attrs_.find_key(name)) return *v;
    return Value::undefined("'jinja2.utils.Namespace object' has no attribute " +
                            string_repr(name));
  }
  bool set_attr(const std::string& name, Value value) override {
    attrs_.set(Value(name), std::move(value));
    return true;
  }
  std::string repr() const override {
    std::string out = "<Namespace {";
    for (size_t i = 0; i < attrs_.entries.size(); ++i) {
      if (i) out += ", ";
      out += jinja::repr(attrs_.entries[i].first) + ": " + jinja::repr(attrs_.entries[i].second);
    }
    return out + "}>";
  }

 private:
  Dict attrs_;
};

}  // namespace pensieve::jinja
