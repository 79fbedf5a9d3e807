// jinja2's builtin filters. Each follows the Python implementation's argument names, defaults,
// return types (a generator where jinja2 returns one) and error messages.
#include "text/jinja_filters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "text/jinja_error.h"
#include "text/jinja_methods.h"
#include "text/jinja_objects.h"
#include "text/jinja_unicode.h"

namespace pensieve::jinja {
namespace {

using FilterFn = std::function<Value(const Value&, CallArgs&, const SandboxPolicy&)>;

const Value* arg(const CallArgs& a, size_t i, const char* name) { return a.get(i, name); }

bool arg_bool(const CallArgs& a, size_t i, const char* name, bool def) {
  const Value* v = arg(a, i, name);
  return v ? v->truthy() : def;
}

int64_t arg_int(const CallArgs& a, size_t i, const char* name, int64_t def) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_none()) return def;
  if (!v->is_number()) type_error("'" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->kind() == Kind::Float ? static_cast<int64_t>(v->as_double()) : v->as_int();
}

std::string soft_str(const Value& v) { return to_str(v); }

Value str_result(const Value& original, std::string s) {
  return original.is_safe() ? Value::safe_string(std::move(s)) : Value(std::move(s));
}

Value generator(std::vector<Value> items) { return Value::iterator(std::move(items), "generator"); }

// make_attrgetter: the attribute path, optionally lower-casing strings for case-insensitive
// comparisons.
std::function<Value(const Value&)> attr_getter(const Value* attribute, bool ignore_case,
                                               const SandboxPolicy& policy,
                                               const Value* default_value = nullptr) {
  return [=, &policy](const Value& item) {
    Value v = item;
    if (attribute && !attribute->is_none()) {
      v = attribute->is_string() ? lookup_attribute_path(item, attribute->str(), policy)
                                 : get_item(item, *attribute, policy);
      if (default_value && v.is_undefined()) v = *default_value;
    }
    if (ignore_case && v.is_string()) v = Value(utf8::lower(v.str()));
    return v;
  };
}

Value filter_default(const Value& v, CallArgs& a, const SandboxPolicy&) {
  const Value* def = arg(a, 0, "default_value");
  if (v.is_undefined() || (arg_bool(a, 1, "boolean", false) && !v.truthy()))
    return def ? *def : Value("");
  return v;
}

Value filter_tojson(const Value& v, CallArgs& a, const SandboxPolicy&) {
  JsonOptions o;
  if (const Value* indent = arg(a, 0, "indent"); indent && !indent->is_none()) {
    o.has_indent = true;
    o.item_separator = ",";
    if (indent->is_string()) o.indent = indent->str();
    else o.indent = std::string(std::max<int64_t>(0, indent->as_int()), ' ');
  }
  if (const Value* seps = a.keyword_arg("separators"); seps && !seps->is_none()) {
    std::vector<Value> parts = iterate(*seps);
    if (parts.size() != 2) fail("ValueError", "separators must be an (item_separator, key_separator) tuple");
    o.item_separator = to_str(parts[0]);
    o.key_separator = to_str(parts[1]);
  }
  o.sort_keys = arg_bool(a, 99, "sort_keys", false);
  return Value(to_json(v, o));
}

Value filter_indent(const Value& v, CallArgs& a, const SandboxPolicy&) {
  std::string indention;
  const Value* width = arg(a, 0, "width");
  if (width && width->is_string()) indention = width->str();
  else indention = std::string(std::max<int64_t>(0, arg_int(a, 0, "width", 4)), ' ');
  bool first = arg_bool(a, 1, "first", false), blank = arg_bool(a, 2, "blank", false);
  std::string s = soft_str(v) + "\n";
  std::vector<std::string> lines = utf8::splitlines(s);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else if (!lines.empty()) {
    rv = lines[0];
    for (size_t i = 1; i < lines.size(); ++i)
      rv += "\n" + (lines[i].empty() ? lines[i] : indention + lines[i]);
  }
  if (first) rv = indention + rv;
  return str_result(v, rv);
}

Value filter_join(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  const Value* d = arg(a, 0, "d");
  std::string sep = d ? soft_str(*d) : "";
  auto get = attr_getter(arg(a, 1, "attribute"), false, policy);
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += soft_str(get(item));
  }
  return Value(out);
}

Value filter_map(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  std::vector<Value> out;
  if (!v.truthy()) return generator({});  // jinja2 maps nothing over a falsy value (even None)
  if (const Value* attribute = a.keyword_arg("attribute")) {
    auto get = attr_getter(attribute, false, policy, a.keyword_arg("default"));
    for (const Value& item : iterate(v)) out.push_back(get(item));
    return generator(std::move(out));
  }
  if (a.positional.empty()) return generator(iterate(v));
  std::string name = to_str(a.positional[0]);
  CallArgs rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keyword = a.keyword;
  try {
    for (const Value& item : iterate(v)) out.push_back(apply_filter(name, item, rest, policy));
  } catch (const TemplateError& e) {
    // A filter named at run time is a TemplateRuntimeError in jinja2, not an assertion.
    if (e.kind() == "TemplateAssertionError") fail("TemplateRuntimeError", e.what());
    throw;
  }
  return generator(std::move(out));
}

// select / reject / selectattr / rejectattr.
Value filter_select(const Value& v, CallArgs& a, const SandboxPolicy& policy, bool keep,
                    bool by_attribute) {
  if (!v.truthy()) return generator({});  // as jinja2: a falsy value (even None) selects nothing
  size_t next = 0;
  std::function<Value(const Value&)> get = [](const Value& x) { return x; };
  if (by_attribute) {
    if (a.positional.empty()) type_error("Missing parameter for attribute name");
    get = attr_getter(&a.positional[0], false, policy);
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (next < a.positional.size()) {
    test = to_str(a.positional[next]);
    test_args.positional.assign(a.positional.begin() + next + 1, a.positional.end());
    test_args.keyword = a.keyword;
  }
  std::vector<Value> out;
  for (const Value& item : iterate(v)) {
    Value x = get(item);
    bool pass;
    try {
      pass = test.empty() ? x.truthy() : apply_test(test, x, test_args, policy);
    } catch (const TemplateError& e) {
      if (e.kind() == "TemplateAssertionError") fail("TemplateRuntimeError", e.what());
      throw;
    }
    if (pass == keep) out.push_back(item);
  }
  return generator(std::move(out));
}

Value sorted(std::vector<Value> items, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) keyed.emplace_back(key(item), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& x, const auto& y) {
    return reverse ? less_than(y.first, x.first) : less_than(x.first, y.first);
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::list(std::move(out));
}

Value filter_sort(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  return sorted(iterate(v), arg_bool(a, 0, "reverse", false),
                attr_getter(arg(a, 2, "attribute"), !arg_bool(a, 1, "case_sensitive", false), policy));
}

Value filter_dictsort(const Value& v, CallArgs& a, const SandboxPolicy&) {
  if (v.kind() != Kind::Dict) type_error("'" + v.type_name() + "' object has no attribute 'items'");
  bool case_sensitive = arg_bool(a, 0, "case_sensitive", false);
  const Value* by = arg(a, 1, "by");
  std::string by_s = by ? to_str(*by) : "key";
  if (by_s != "key" && by_s != "value")
    fail("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  size_t pos = by_s == "key" ? 0 : 1;
  std::vector<Value> pairs;
  for (const auto& [k, val] : v.dict_ref().entries) pairs.push_back(Value::tuple({k, val}));
  return sorted(std::move(pairs), arg_bool(a, 2, "reverse", false), [=](const Value& p) {
    Value x = p.items()[pos];
    return (!case_sensitive && x.is_string()) ? Value(utf8::lower(x.str())) : x;
  });
}

Value filter_unique(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  auto key = attr_getter(arg(a, 1, "attribute"), !arg_bool(a, 0, "case_sensitive", false), policy);
  std::vector<Value> seen, out;
  for (const Value& item : iterate(v)) {
    Value k = key(item);
    bool dup = false;
    for (const Value& s : seen)
      if (equals(s, k)) dup = true;
    if (dup) continue;
    seen.push_back(k);
    out.push_back(item);
  }
  return generator(std::move(out));
}

Value filter_min_max(const Value& v, CallArgs& a, const SandboxPolicy& policy, bool is_max) {
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = attr_getter(arg(a, 1, "attribute"), !arg_bool(a, 0, "case_sensitive", false), policy);
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (is_max ? less_than(best_key, k) : less_than(k, best_key)) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}

Value filter_round(const Value& v, CallArgs& a, const SandboxPolicy&) {
  int64_t precision = arg_int(a, 0, "precision", 0);
  const Value* m = arg(a, 1, "method");
  std::string method = m ? to_str(*m) : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    fail("FilterArgumentError", "method must be common, ceil or floor");
  if (!v.is_number()) type_error("type " + v.type_name() + " doesn't define __round__ method");
  double x = v.as_double();
  if (method == "common") {
    if (v.kind() != Kind::Float) return Value(v.as_int());  // int.__round__ stays an int
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::clamp<int64_t>(precision, 0, 300)), x);
    return Value(std::strtod(buf, nullptr));
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  return Value((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
}

std::optional<int64_t> parse_int(std::string s, int base) {
  s = py_strip(s, nullptr, true, true);
  std::string digits;  // Python accepts single underscores between digits ("1_000")
  for (size_t i = 0; i < s.size(); ++i) {
    bool between = i > 0 && i + 1 < s.size() && isalnum(static_cast<unsigned char>(s[i - 1])) &&
                   isalnum(static_cast<unsigned char>(s[i + 1]));
    if (s[i] == '_' && !between) return std::nullopt;
    if (s[i] != '_') digits += s[i];
  }
  if (digits.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long r = std::strtoll(digits.c_str(), &end, base);
  if (*end != '\0' || errno == ERANGE) return std::nullopt;
  return r;
}

std::optional<double> parse_float(const std::string& raw) {
  std::string s = py_strip(raw, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  std::string lower = utf8::lower(s);
  if (lower.find("0x") != std::string::npos) return std::nullopt;  // Python's float() has no hex
  return d;
}

Value filter_int(const Value& v, CallArgs& a, const SandboxPolicy&) {
  const Value* def = arg(a, 0, "default");
  int base = static_cast<int>(arg_int(a, 1, "base", 10));
  Value fallback = def ? *def : Value(0);
  check_defined(v);
  if (v.is_string()) {
    if (auto r = parse_int(v.str(), base)) return Value(*r);
    if (auto f = parse_float(v.str()); f && std::isfinite(*f)) return Value(static_cast<int64_t>(*f));
    return fallback;
  }
  if (v.kind() == Kind::Float) {
    if (!std::isfinite(v.as_double())) return fallback;
    return Value(static_cast<int64_t>(v.as_double()));
  }
  if (v.is_number()) return Value(v.as_int());
  return fallback;
}

Value filter_float(const Value& v, CallArgs& a, const SandboxPolicy&) {
  const Value* def = arg(a, 0, "default");
  Value fallback = def ? *def : Value(0.0);
  check_defined(v);
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string())
    if (auto f = parse_float(v.str())) return Value(*f);
  return fallback;
}

Value filter_truncate(const Value& v, CallArgs& a, const SandboxPolicy&) {
  std::string s = soft_str(v);
  int64_t length = arg_int(a, 0, "length", 255);
  bool killwords = arg_bool(a, 1, "killwords", false);
  const Value* end_v = arg(a, 2, "end");
  std::string end = end_v ? soft_str(*end_v) : "...";
  int64_t leeway = arg_int(a, 3, "leeway", 5);
  int64_t end_len = static_cast<int64_t>(utf8::length(end));
  if (length < end_len) fail("AssertionError", "expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length));
  std::u32string u = utf8::decode(s);
  if (static_cast<int64_t>(u.size()) <= length + leeway) return Value(s);
  std::string head = utf8::encode(u.substr(0, length - end_len));
  if (killwords) return Value(head + end);
  size_t sp = head.rfind(' ');
  return Value((sp == std::string::npos ? head : head.substr(0, sp)) + end);
}

Value filter_wordcount(const Value& v, CallArgs&, const SandboxPolicy&) {
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : utf8::decode(soft_str(v))) {
    bool w = utf8::is_alnum(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

Value filter_batch(const Value& v, CallArgs& a, const SandboxPolicy&) {
  int64_t count = arg_int(a, 0, "linecount", 0);
  if (count <= 0) fail("ValueError", "batch linecount must be positive");
  const Value* fill = arg(a, 1, "fill_with");
  std::vector<Value> out, tmp;
  for (const Value& item : iterate(v)) {
    if (static_cast<int64_t>(tmp.size()) == count) {
      out.push_back(Value::list(std::move(tmp)));
      tmp.clear();
    }
    tmp.push_back(item);
  }
  if (!tmp.empty()) {
    while (fill && !fill->is_none() && static_cast<int64_t>(tmp.size()) < count) tmp.push_back(*fill);
    out.push_back(Value::list(std::move(tmp)));
  }
  return generator(std::move(out));
}

Value filter_slice(const Value& v, CallArgs& a, const SandboxPolicy&) {
  std::vector<Value> seq = iterate(v);
  int64_t slices = arg_int(a, 0, "slices", 1);
  if (slices <= 0) fail("ValueError", "slices must be positive");
  const Value* fill = arg(a, 1, "fill_with");
  int64_t length = static_cast<int64_t>(seq.size()), per = length / slices, extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t n = 0; n < slices; ++n) {
    int64_t start = offset + n * per;
    if (n < extra) ++offset;
    int64_t end = offset + (n + 1) * per;
    std::vector<Value> tmp(seq.begin() + start, seq.begin() + end);
    if (fill && !fill->is_none() && n >= extra) tmp.push_back(*fill);
    out.push_back(Value::list(std::move(tmp)));
  }
  return generator(std::move(out));
}

Value filter_groupby(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  const Value* attribute = arg(a, 0, "attribute");
  if (!attribute) type_error("groupby() missing required argument 'attribute'");
  const Value* def = arg(a, 1, "default");
  bool case_sensitive = arg_bool(a, 2, "case_sensitive", false);
  auto key = attr_getter(attribute, !case_sensitive, policy, def);
  auto out_key = attr_getter(attribute, false, policy, def);
  Value sorted_items = sorted(iterate(v), false, key);
  std::vector<Value> groups;
  Value current_key;
  std::vector<Value> current;
  for (const Value& item : sorted_items.items()) {
    Value k = key(item);
    if (!current.empty() && !equals(k, current_key)) {
      groups.push_back(Value::tuple({out_key(current[0]), Value::list(std::move(current))}));
      current.clear();
    }
    current_key = k;
    current.push_back(item);
  }
  if (!current.empty())
    groups.push_back(Value::tuple({out_key(current[0]), Value::list(std::move(current))}));
  return Value::list(std::move(groups));
}

Value filter_sum(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  auto get = attr_getter(arg(a, 0, "attribute"), false, policy);
  const Value* start = arg(a, 1, "start");
  Value total = start ? *start : Value(0);
  for (const Value& item : iterate(v)) total = binary_op("+", total, get(item));
  return total;
}

Value filter_reverse(const Value& v, CallArgs&, const SandboxPolicy&) {
  if (v.is_string()) {
    std::u32string u = utf8::decode(v.str());
    std::reverse(u.begin(), u.end());
    return Value(utf8::encode(u));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  if (v.kind() == Kind::Iterator && !v.iterator_has_len()) return Value::list(std::move(items));
  const char* type = v.kind() == Kind::Dict ? "dict_reversekeyiterator" : "list_reverseiterator";
  return Value::iterator(std::move(items), type);
}

Value filter_first_last(const Value& v, bool first) {
  if (!first && v.kind() == Kind::Iterator && !v.iterator_has_len())
    type_error("'" + v.type_name() + "' object is not reversible");
  std::vector<Value> items = iterate(v);
  if (items.empty())
    return Value::undefined(first ? "No first item, sequence was empty." : "No last item, sequence was empty.");
  return first ? items.front() : items.back();
}

Value filter_items(const Value& v, CallArgs&, const SandboxPolicy&) {
  if (v.is_undefined()) return generator({});
  if (v.kind() != Kind::Dict) type_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.dict_ref().entries) out.push_back(Value::tuple({k, val}));
  return generator(std::move(out));
}

Value filter_replace(const Value& v, CallArgs& a, const SandboxPolicy&) {
  const Value* old_v = arg(a, 0, "old");
  const Value* new_v = arg(a, 1, "new");
  if (!old_v || !new_v) type_error("do_replace() missing required arguments 'old' and 'new'");
  return Value(py_replace(soft_str(v), soft_str(*old_v), soft_str(*new_v), arg_int(a, 2, "count", -1)));
}

Value filter_center(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  CallArgs width;
  width.positional.push_back(Value(arg_int(a, 0, "width", 80)));
  Value method = *bound_method(Value(soft_str(v)), "center", policy);
  return method.fn().call(width);
}

Value filter_attr(const Value& v, CallArgs& a, const SandboxPolicy& policy) {
  const Value* name = arg(a, 0, "name");
  if (!name) type_error("attr() missing required argument 'name'");
  std::string n = to_str(*name);
  check_defined(v);
  if (v.kind() == Kind::Object) return v.obj().get_attr(n);
  if (!n.empty() && n[0] != '_')
    if (auto m = bound_method(v, n, policy)) return *m;
  return Value::undefined("'" + v.type_name() + " object' has no attribute " + string_repr(n));
}

const std::map<std::string, FilterFn, std::less<>>& filters() {
  using P = const SandboxPolicy&;
  static const std::map<std::string, FilterFn, std::less<>> table = {
      {"abs", [](const Value& v, CallArgs&, P) -> Value {
         check_defined(v);
         if (v.kind() == Kind::Float) return Value(std::fabs(v.as_double()));
         if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
         type_error("bad operand type for abs(): '" + v.type_name() + "'");
       }},
      {"attr", filter_attr},
      {"batch", filter_batch},
      {"capitalize", [](const Value& v, CallArgs&, P) { return str_result(v, py_capitalize(soft_str(v))); }},
      {"center", filter_center},
      {"count", [](const Value& v, CallArgs&, P) { return Value(length_of(v)); }},
      {"length", [](const Value& v, CallArgs&, P) { return Value(length_of(v)); }},
      {"d", filter_default},
      {"default", filter_default},
      {"dictsort", filter_dictsort},
      {"e", [](const Value& v, CallArgs&, P) { return v.is_safe() ? v : Value::safe_string(html_escape(soft_str(v))); }},
      {"escape", [](const Value& v, CallArgs&, P) { return v.is_safe() ? v : Value::safe_string(html_escape(soft_str(v))); }},
      {"forceescape", [](const Value& v, CallArgs&, P) { return Value::safe_string(html_escape(soft_str(v))); }},
      {"first", [](const Value& v, CallArgs&, P) { return filter_first_last(v, true); }},
      {"last", [](const Value& v, CallArgs&, P) { return filter_first_last(v, false); }},
      {"float", filter_float},
      {"format", [](const Value& v, CallArgs& a, P) {
         if (!a.keyword.empty() && !a.positional.empty())
           fail("FilterArgumentError", "can't handle positional and keyword arguments at the same time");
         if (!a.keyword.empty()) {
           auto d = std::make_shared<Dict>();
           for (const auto& [k, x] : a.keyword) d->set(Value(k), x);
           return Value(percent_format(soft_str(v), Value::dict(d)));
         }
         return Value(percent_format(soft_str(v), Value::tuple(a.positional)));
       }},
      {"groupby", filter_groupby},
      {"indent", filter_indent},
      {"int", filter_int},
      {"items", filter_items},
      {"join", filter_join},
      {"list", [](const Value& v, CallArgs&, P) { return Value::list(iterate(v)); }},
      {"lower", [](const Value& v, CallArgs&, P) { return str_result(v, utf8::lower(soft_str(v))); }},
      {"upper", [](const Value& v, CallArgs&, P) { return str_result(v, utf8::upper(soft_str(v))); }},
      {"map", filter_map},
      {"max", [](const Value& v, CallArgs& a, P p) { return filter_min_max(v, a, p, true); }},
      {"min", [](const Value& v, CallArgs& a, P p) { return filter_min_max(v, a, p, false); }},
      {"pprint", [](const Value& v, CallArgs&, P) { return Value(repr(v)); }},
      {"reject", [](const Value& v, CallArgs& a, P p) { return filter_select(v, a, p, false, false); }},
      {"rejectattr", [](const Value& v, CallArgs& a, P p) { return filter_select(v, a, p, false, true); }},
      {"select", [](const Value& v, CallArgs& a, P p) { return filter_select(v, a, p, true, false); }},
      {"selectattr", [](const Value& v, CallArgs& a, P p) { return filter_select(v, a, p, true, true); }},
      {"replace", filter_replace},
      {"reverse", filter_reverse},
      {"round", filter_round},
      {"safe", [](const Value& v, CallArgs&, P) { return Value::safe_string(soft_str(v)); }},
      {"slice", filter_slice},
      {"sort", filter_sort},
      {"string", [](const Value& v, CallArgs&, P) { return v.is_string() ? v : Value(soft_str(v)); }},
      {"sum", filter_sum},
      {"title", [](const Value& v, CallArgs&, P) { return str_result(v, py_title(soft_str(v))); }},
      {"tojson", filter_tojson},
      {"trim", [](const Value& v, CallArgs& a, P) {
         return str_result(v, py_strip(soft_str(v), arg(a, 0, "chars"), true, true));
       }},
      {"truncate", filter_truncate},
      {"unique", filter_unique},
      {"wordcount", filter_wordcount},
  };
  return table;
}

}  // namespace

Value lookup_attribute_path(const Value& value, const std::string& path,
                            const SandboxPolicy& policy) {
  Value v = value;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    v = digits ? get_item(v, Value(static_cast<int64_t>(std::stoll(part))), policy)
               : get_item(v, Value(part), policy);
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

Value apply_filter(const std::string& name, const Value& value, CallArgs& args,
                   const SandboxPolicy& policy) {
  const auto& table = filters();
  auto it = table.find(name);
  if (it == table.end()) fail("TemplateAssertionError", "No filter named '" + name + "'.");
  return it->second(value, args, policy);
}

}  // namespace pensieve::jinja
