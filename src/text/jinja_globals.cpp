#include "text/jinja_globals.h"

#include <ctime>

#include "text/jinja_error.h"
#include "text/jinja_objects.h"

namespace pensieve::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox limit

Value range(CallArgs& a) {
  std::vector<int64_t> n;
  for (const Value& v : a.positional) {
    if (v.kind() != Kind::Int && v.kind() != Kind::Bool)
      type_error("'" + v.type_name() + "' object cannot be interpreted as an integer");
    n.push_back(v.as_int());
  }
  if (n.empty() || n.size() > 3)
    type_error("range expected at most 3 arguments, got " + std::to_string(n.size()));
  int64_t start = n.size() == 1 ? 0 : n[0], stop = n.size() == 1 ? n[0] : n[1];
  int64_t step = n.size() == 3 ? n[2] : 1;
  if (step == 0) fail("ValueError", "range() arg 3 must not be zero");
  int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                           : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (count > kMaxRange)
    fail("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> out;
  out.reserve(count);
  for (int64_t i = 0; i < count; ++i) out.emplace_back(start + i * step);
  return Value::list(std::move(out));
}

Value make_dict(CallArgs& a) {
  auto d = std::make_shared<Dict>();
  if (!a.positional.empty()) {
    const Value& src = a.positional[0];
    if (src.kind() == Kind::Dict) {
      *d = src.dict_ref();
    } else {
      for (const Value& pair : iterate(src)) {
        std::vector<Value> kv = iterate(pair);
        if (kv.size() != 2) fail("ValueError", "dictionary update sequence element has wrong length");
        d->set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : a.keyword) d->set(Value(k), v);
  return Value::dict(std::move(d));
}

Value make_namespace(CallArgs& a) {
  auto ns = std::make_shared<Namespace>();
  if (!a.positional.empty()) {
    if (a.positional[0].kind() != Kind::Dict) type_error("namespace() positional argument must be a dict");
    for (const auto& [k, v] : a.positional[0].dict_ref().entries) ns->set_attr(to_str(k), v);
  }
  for (const auto& [k, v] : a.keyword) ns->set_attr(k, v);
  return Value::object(std::move(ns));
}

// jinja2's joiner(sep): returns "" the first time it is called and sep afterwards.
Value make_joiner(CallArgs& a) {
  std::string sep = a.get(0, "sep") ? to_str(*a.get(0, "sep")) : ", ";
  auto used = std::make_shared<bool>(false);
  return BuiltinFunction::make("joiner", [sep, used](CallArgs&) {
    if (!*used) {
      *used = true;
      return Value("");
    }
    return Value(sep);
  });
}

class Cycler : public Object, public std::enable_shared_from_this<Cycler> {
 public:
  explicit Cycler(std::vector<Value> items) : items_(std::move(items)) {}
  std::string type_name() const override { return "Cycler"; }
  std::string repr() const override { return "<Cycler>"; }
  Value get_attr(const std::string& name) const override {
    auto self = std::const_pointer_cast<Cycler>(shared_from_this());
    if (name == "current") return items_[pos_];
    if (name == "next")
      return BuiltinFunction::make("next", [self](CallArgs&) {
        Value v = self->items_[self->pos_];
        self->pos_ = (self->pos_ + 1) % self->items_.size();
        return v;
      });
    if (name == "reset")
      return BuiltinFunction::make("reset", [self](CallArgs&) {
        self->pos_ = 0;
        return Value::none();
      });
    return Value::undefined("'jinja2.utils.Cycler object' has no attribute " + string_repr(name));
  }

 private:
  std::vector<Value> items_;
  size_t pos_ = 0;
};

}  // namespace

void install_globals(Scope& scope, const RenderOptions& options) {
  scope.set("range", BuiltinFunction::make("range", range));
  scope.set("dict", BuiltinFunction::make("dict", make_dict));
  scope.set("namespace", BuiltinFunction::make("namespace", make_namespace));
  scope.set("joiner", BuiltinFunction::make("joiner", make_joiner));
  scope.set("cycler", BuiltinFunction::make("cycler", [](CallArgs& a) {
    if (a.positional.empty()) fail("RuntimeError", "at least one item has to be provided");
    return Value::object(std::make_shared<Cycler>(a.positional));
  }));
  scope.set("raise_exception", BuiltinFunction::make("raise_exception", [](CallArgs& a) -> Value {
    fail("TemplateError", a.positional.empty() ? std::string() : to_str(a.positional[0]));
  }));
  auto now = options.now;
  scope.set("strftime_now", BuiltinFunction::make("strftime_now", [now](CallArgs& a) {
    const Value* fmt = a.get(0, "format");
    if (!fmt || !fmt->is_string()) type_error("strftime_now() argument must be str");
    std::time_t t = std::chrono::system_clock::to_time_t(now());
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[512];
    size_t n = std::strftime(buf, sizeof buf, fmt->str().c_str(), &tm);
    return Value(std::string(buf, n));
  }));
}

}  // namespace pensieve::jinja
