#include "text/jinja_methods.h"

#include <algorithm>

#include "text/jinja_error.h"
#include "text/jinja_objects.h"
#include "text/jinja_unicode.h"

namespace pensieve::jinja {

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string set;
  bool whitespace = !chars || chars->is_none() || chars->is_undefined();
  if (!whitespace) {
    if (!chars->is_string()) type_error("strip arg must be None or str");
    set = utf8::decode(chars->str());
  }
  auto strip_it = [&](char32_t c) {
    return whitespace ? utf8::is_space(c) : set.find(c) != std::u32string::npos;
  };
  if (utf8::is_ascii(s) && whitespace) {
    size_t b = 0, e = s.size();
    if (left) while (b < e && strip_it(static_cast<unsigned char>(s[b]))) ++b;
    if (right) while (e > b && strip_it(static_cast<unsigned char>(s[e - 1]))) --e;
    return s.substr(b, e - b);
  }
  std::u32string u = utf8::decode(s);
  size_t b = 0, e = u.size();
  if (left) while (b < e && strip_it(u[b])) ++b;
  if (right) while (e > b && strip_it(u[e - 1])) --e;
  return utf8::encode(std::u32string_view(u).substr(b, e - b));
}

std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<Value> out;
  if (!sep || sep->is_none()) {
    std::u32string u = utf8::decode(s);
    size_t i = 0;
    while (i < u.size()) {
      while (i < u.size() && utf8::is_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = u.size();
        while (e > i && utf8::is_space(u[e - 1])) --e;
        out.emplace_back(utf8::encode(u.substr(i, e - i)));
        return out;
      }
      size_t j = i;
      while (j < u.size() && !utf8::is_space(u[j])) ++j;
      out.emplace_back(utf8::encode(u.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  if (!sep->is_string()) type_error("must be str or None, not " + sep->type_name());
  const std::string& d = sep->str();
  if (d.empty()) fail("ValueError", "empty separator");
  size_t start = 0;
  while (true) {
    size_t p = s.find(d, start);
    if (p == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
      out.emplace_back(s.substr(start));
      return out;
    }
    out.emplace_back(s.substr(start, p - start));
    start = p + d.size();
  }
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    std::u32string u = utf8::decode(s);
    for (size_t i = 0; i <= u.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < u.size()) utf8::append(out, u[i]);
    }
    return out;
  }
  size_t start = 0;
  while (true) {
    size_t p = s.find(old, start);
    if (p == std::string::npos || (count >= 0 && done >= count)) break;
    out.append(s, start, p - start);
    out += repl;
    start = p + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::u32string u = utf8::decode(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? utf8::to_upper(u[i]) : utf8::to_lower(u[i]);
  return utf8::encode(u);
}

std::string py_title(const std::string& s) {
  // jinja2 splits before runs of [-\s({\[<] and capitalizes each piece.
  std::u32string u = utf8::decode(s);
  std::u32string out;
  bool at_start = true;
  for (char32_t c : u) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || utf8::is_space(c);
    if (sep) {
      out.push_back(c);
      at_start = true;
    } else {
      out.push_back(at_start ? utf8::to_upper(c) : utf8::to_lower(c));
      at_start = false;
    }
  }
  return utf8::encode(out);
}

namespace {

std::string python_str_title(const std::string& s) {
  std::u32string u = utf8::decode(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    bool cased = utf8::is_cased_upper(c) || utf8::is_cased_lower(c);
    c = prev_cased ? utf8::to_lower(c) : utf8::to_upper(c);
    prev_cased = cased;
  }
  return utf8::encode(u);
}

std::string arg_str(const CallArgs& a, size_t i, const char* name, const char* method) {
  const Value* v = a.get(i, name);
  if (!v) type_error(std::string(method) + "() missing required argument '" + name + "'");
  if (!v->is_string()) type_error(std::string(method) + "() argument must be str, not " + v->type_name());
  return v->str();
}

int64_t arg_int(const CallArgs& a, size_t i, const char* name, int64_t def) {
  const Value* v = a.get(i, name);
  if (!v || v->is_none()) return def;
  if (v->kind() != Kind::Int && v->kind() != Kind::Bool)
    type_error("'" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}

bool affix_match(const std::string& s, const Value& affix, bool prefix, const char* method) {
  auto one = [&](const Value& v) {
    if (!v.is_string())
      type_error(std::string(method) + " first arg must be str or a tuple of str, not " + v.type_name());
    const std::string& a = v.str();
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.kind() == Kind::Tuple) {
    for (const Value& v : affix.items())
      if (one(v)) return true;
    return false;
  }
  return one(affix);
}

int64_t codepoint_index(const std::string& s, size_t byte_pos) {
  if (byte_pos == std::string::npos) return -1;
  return static_cast<int64_t>(utf8::length(std::string_view(s).substr(0, byte_pos)));
}

std::string pad(const std::string& s, int64_t width, const std::string& fill, int where) {
  int64_t n = static_cast<int64_t>(utf8::length(s));
  if (width <= n) return s;
  int64_t total = width - n, left = where < 0 ? 0 : where > 0 ? total : total / 2 + (total & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = 0; i < total - left; ++i) out += fill;
  return out;
}

template <typename Pred>
Value all_chars(const std::string& s, Pred pred) {
  std::u32string u = utf8::decode(s);
  if (u.empty()) return Value(false);
  for (char32_t c : u)
    if (!pred(c)) return Value(false);
  return Value(true);
}

std::optional<Value> string_method(const std::string& s, const std::string& name) {
  using A = CallArgs;
  auto m = [&](BuiltinFunction::Fn fn) { return BuiltinFunction::make(name, std::move(fn)); };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return m([s, name](A& a) {
      return Value(py_strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"));
    });
  if (name == "split" || name == "rsplit")
    return m([s, name](A& a) {
      int64_t maxsplit = arg_int(a, 1, "maxsplit", -1);
      const Value* sep = a.get(0, "sep");
      if (name == "rsplit" && maxsplit >= 0) {
        // Split from the right: reverse, split with the reversed separator, reverse back.
        std::u32string u = utf8::decode(s);
        std::reverse(u.begin(), u.end());
        Value rsep;
        if (sep && sep->is_string()) {
          std::u32string r = utf8::decode(sep->str());
          std::reverse(r.begin(), r.end());
          rsep = Value(utf8::encode(r));
        }
        auto parts = py_split(utf8::encode(u), sep && sep->is_string() ? &rsep : sep, maxsplit);
        std::reverse(parts.begin(), parts.end());
        for (Value& p : parts) {
          std::u32string pu = utf8::decode(p.str());
          std::reverse(pu.begin(), pu.end());
          p = Value(utf8::encode(pu));
        }
        return Value::list(std::move(parts));
      }
      return Value::list(py_split(s, sep, maxsplit));
    });
  if (name == "splitlines")
    return m([s](A&) {
      std::vector<Value> out;
      for (auto& line : utf8::splitlines(s)) out.emplace_back(line);
      return Value::list(std::move(out));
    });
  if (name == "startswith" || name == "endswith")
    return m([s, name](A& a) {
      const Value* affix = a.get(0, "prefix");
      if (!affix) type_error(name + "() takes at least 1 argument (0 given)");
      return Value(affix_match(s, *affix, name == "startswith", name.c_str()));
    });
  if (name == "upper") return m([s](A&) { return Value(utf8::upper(s)); });
  if (name == "lower" || name == "casefold") return m([s](A&) { return Value(utf8::lower(s)); });
  if (name == "title") return m([s](A&) { return Value(python_str_title(s)); });
  if (name == "capitalize") return m([s](A&) { return Value(py_capitalize(s)); });
  if (name == "swapcase")
    return m([s](A&) {
      std::u32string u = utf8::decode(s);
      for (char32_t& c : u) c = utf8::is_cased_upper(c) ? utf8::to_lower(c) : utf8::to_upper(c);
      return Value(utf8::encode(u));
    });
  if (name == "replace")
    return m([s](A& a) {
      return Value(py_replace(s, arg_str(a, 0, "old", "replace"), arg_str(a, 1, "new", "replace"),
                              arg_int(a, 2, "count", -1)));
    });
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex")
    return m([s, name](A& a) {
      std::string sub = arg_str(a, 0, "sub", name.c_str());
      size_t p = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
      if (p == std::string::npos && name.find("index") != std::string::npos)
        fail("ValueError", "substring not found");
      return Value(codepoint_index(s, p));
    });
  if (name == "count")
    return m([s](A& a) {
      std::string sub = arg_str(a, 0, "sub", "count");
      if (sub.empty()) return Value(static_cast<int64_t>(utf8::length(s)) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    });
  if (name == "join")
    return m([s](A& a) {
      const Value* it = a.get(0, "iterable");
      if (!it) type_error("join() takes exactly one argument (0 given)");
      std::string out;
      size_t i = 0;
      for (const Value& v : iterate(*it)) {
        if (!v.is_string())
          type_error("sequence item " + std::to_string(i) + ": expected str instance, " +
                     v.type_name() + " found");
        if (i++) out += s;
        out += v.str();
      }
      return Value(out);
    });
  if (name == "format") return m([s](A& a) { return Value(py_format(s, a)); });
  if (name == "center" || name == "ljust" || name == "rjust")
    return m([s, name](A& a) {
      std::string fill = a.get(1, "fillchar") ? arg_str(a, 1, "fillchar", name.c_str()) : " ";
      int where = name == "center" ? 0 : name == "ljust" ? -1 : 1;
      return Value(pad(s, arg_int(a, 0, "width", 0), fill, where));
    });
  if (name == "zfill")
    return m([s](A& a) {
      int64_t width = arg_int(a, 0, "width", 0);
      bool sign = !s.empty() && (s[0] == '-' || s[0] == '+');
      std::string body = sign ? s.substr(1) : s;
      std::string padded = pad(body, width - (sign ? 1 : 0), "0", 1);
      return Value(sign ? s.substr(0, 1) + padded : padded);
    });
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric")
    return m([s](A&) { return all_chars(s, [](char32_t c) { return c >= '0' && c <= '9'; }); });
  if (name == "isalpha")
    return m([s](A&) {
      return all_chars(s, [](char32_t c) { return utf8::is_alnum(c) && c != '_' && !(c >= '0' && c <= '9'); });
    });
  if (name == "isalnum")
    return m([s](A&) { return all_chars(s, [](char32_t c) { return utf8::is_alnum(c) && c != '_'; }); });
  if (name == "isspace") return m([s](A&) { return all_chars(s, utf8::is_space); });
  if (name == "isupper" || name == "islower")
    return m([s, name](A&) {
      bool upper = name == "isupper", any = false;
      for (char32_t c : utf8::decode(s)) {
        if (upper ? utf8::is_cased_lower(c) : utf8::is_cased_upper(c)) return Value(false);
        any = any || utf8::is_cased_upper(c) || utf8::is_cased_lower(c);
      }
      return Value(any);
    });
  if (name == "partition" || name == "rpartition")
    return m([s, name](A& a) {
      std::string sep = arg_str(a, 0, "sep", name.c_str());
      if (sep.empty()) fail("ValueError", "empty separator");
      size_t p = name == "partition" ? s.find(sep) : s.rfind(sep);
      if (p == std::string::npos)
        return name == "partition" ? Value::tuple({Value(s), Value(""), Value("")})
                                   : Value::tuple({Value(""), Value(""), Value(s)});
      return Value::tuple({Value(s.substr(0, p)), Value(sep), Value(s.substr(p + sep.size()))});
    });
  if (name == "removeprefix" || name == "removesuffix")
    return m([s, name](A& a) {
      std::string affix = arg_str(a, 0, "affix", name.c_str());
      bool prefix = name == "removeprefix";
      if (affix_match(s, Value(affix), prefix, name.c_str()))
        return Value(prefix ? s.substr(affix.size()) : s.substr(0, s.size() - affix.size()));
      return Value(s);
    });
  return std::nullopt;
}

Value unsafe_method(const std::string& name, const Value& obj) {
  return Value::unsafe("access to attribute " + string_repr(name) + " of " +
                       string_repr(obj.type_name()) + " object is unsafe.");
}

std::optional<Value> dict_method(const Value& obj, const std::string& name,
                                 const SandboxPolicy& policy) {
  using A = CallArgs;
  auto m = [&](BuiltinFunction::Fn fn) { return BuiltinFunction::make(name, std::move(fn)); };
  auto d = obj;  // shares the dict
  auto view = [d](int part) {
    std::vector<Value> out;
    for (const auto& [k, v] : d.dict_ref().entries)
      out.push_back(part == 0 ? k : part == 1 ? v : Value::tuple({k, v}));
    return out;
  };
  if (name == "items") return m([view](A&) { return Value::iterator(view(2), "dict_items", true); });
  if (name == "keys") return m([view](A&) { return Value::iterator(view(0), "dict_keys", true); });
  if (name == "values") return m([view](A&) { return Value::iterator(view(1), "dict_values", true); });
  if (name == "get")
    return m([d](A& a) {
      const Value* key = a.get(0, "key");
      if (!key) type_error("get expected at least 1 argument, got 0");
      if (const Value* v = d.dict_ref().find(*key)) return *v;
      const Value* def = a.get(1, "default");
      return def ? *def : Value::none();
    });
  if (name == "copy")
    return m([d](A&) { return Value::dict(std::make_shared<Dict>(d.dict_ref())); });
  static const char* const mutating[] = {"pop", "popitem", "update", "setdefault", "clear"};
  for (const char* mut : mutating) {
    if (name != mut) continue;
    if (policy.immutable) return unsafe_method(name, obj);
    if (name == "update")
      return m([d](A& a) {
        if (const Value* other = a.get(0, "other"))
          for (const auto& [k, v] : other->dict_ref().entries) d.dict_ref().set(k, v);
        for (const auto& [k, v] : a.keyword) d.dict_ref().set(Value(k), v);
        return Value::none();
      });
    if (name == "setdefault")
      return m([d](A& a) {
        const Value* key = a.get(0, "key");
        if (!key) type_error("setdefault expected at least 1 argument, got 0");
        if (const Value* v = d.dict_ref().find(*key)) return *v;
        Value def = a.get(1, "default") ? *a.get(1, "default") : Value::none();
        d.dict_ref().set(*key, def);
        return def;
      });
    if (name == "pop")
      return m([d](A& a) {
        const Value* key = a.get(0, "key");
        if (!key) type_error("pop expected at least 1 argument, got 0");
        if (const Value* v = d.dict_ref().find(*key)) {
          Value out = *v;
          d.dict_ref().erase(*key);
          return out;
        }
        if (const Value* def = a.get(1, "default")) return *def;
        fail("KeyError", repr(*key));
      });
    if (name == "clear")
      return m([d](A&) {
        d.dict_ref().entries.clear();
        return Value::none();
      });
    return std::nullopt;  // popitem: not offered
  }
  return std::nullopt;
}

std::optional<Value> list_method(const Value& obj, const std::string& name,
                                 const SandboxPolicy& policy) {
  using A = CallArgs;
  auto m = [&](BuiltinFunction::Fn fn) { return BuiltinFunction::make(name, std::move(fn)); };
  Value l = obj;
  if (name == "count")
    return m([l](A& a) {
      int64_t n = 0;
      for (const Value& v : l.items())
        if (a.positional.size() == 1 && equals(v, a.positional[0])) ++n;
      return Value(n);
    });
  if (name == "index")
    return m([l](A& a) {
      const auto& items = l.items();
      for (size_t i = 0; i < items.size(); ++i)
        if (a.positional.size() >= 1 && equals(items[i], a.positional[0]))
          return Value(static_cast<int64_t>(i));
      fail("ValueError", (a.positional.empty() ? "value" : repr(a.positional[0])) + " is not in list");
    });
  if (obj.kind() == Kind::Tuple) return std::nullopt;
  if (name == "copy") return m([l](A&) { return Value::list(l.items()); });
  static const char* const mutating[] = {"append", "extend", "insert", "pop", "remove",
                                         "reverse", "sort", "clear"};
  for (const char* mut : mutating) {
    if (name != mut) continue;
    if (policy.immutable) return unsafe_method(name, obj);
    if (name == "append")
      return m([l](A& a) {
        if (a.positional.size() != 1) type_error("list.append() takes exactly one argument");
        l.items().push_back(a.positional[0]);
        return Value::none();
      });
    if (name == "extend")
      return m([l](A& a) {
        if (a.positional.size() != 1) type_error("list.extend() takes exactly one argument");
        for (Value& v : iterate(a.positional[0])) l.items().push_back(v);
        return Value::none();
      });
    if (name == "insert")
      return m([l](A& a) {
        if (a.positional.size() != 2) type_error("insert expected 2 arguments");
        auto& items = l.items();
        int64_t n = static_cast<int64_t>(items.size()), i = arg_int(a, 0, "index", 0);
        if (i < 0) i = std::max<int64_t>(0, i + n);
        items.insert(items.begin() + std::min(i, n), a.positional[1]);
        return Value::none();
      });
    if (name == "pop")
      return m([l](A& a) {
        auto& items = l.items();
        if (items.empty()) fail("IndexError", "pop from empty list");
        int64_t n = static_cast<int64_t>(items.size()), i = arg_int(a, 0, "index", -1);
        if (i < 0) i += n;
        if (i < 0 || i >= n) fail("IndexError", "pop index out of range");
        Value out = items[i];
        items.erase(items.begin() + i);
        return out;
      });
    if (name == "remove")
      return m([l](A& a) {
        auto& items = l.items();
        for (auto it = items.begin(); it != items.end(); ++it)
          if (a.positional.size() == 1 && equals(*it, a.positional[0])) {
            items.erase(it);
            return Value::none();
          }
        fail("ValueError", "list.remove(x): x not in list");
      });
    if (name == "reverse")
      return m([l](A&) {
        std::reverse(l.items().begin(), l.items().end());
        return Value::none();
      });
    if (name == "sort")
      return m([l](A& a) {
        const Value* rev = a.keyword_arg("reverse");
        std::stable_sort(l.items().begin(), l.items().end(),
                         [](const Value& x, const Value& y) { return less_than(x, y); });
        if (rev && rev->truthy()) std::reverse(l.items().begin(), l.items().end());
        return Value::none();
      });
    return m([l](A&) {
      l.items().clear();
      return Value::none();
    });
  }
  return std::nullopt;
}

}  // namespace

std::string py_format(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '}' && i + 1 < format.size() && format[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = format.find('}', i);
    if (close == std::string::npos) fail("ValueError", "Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    size_t colon = field.find_first_of(":!");
    std::string key = field.substr(0, colon);
    const Value* v = nullptr;
    if (key.empty()) {
      if (auto_index >= args.positional.size())
        fail("IndexError", "Replacement index " + std::to_string(auto_index) +
                               " out of range for positional args tuple");
      v = &args.positional[auto_index++];
    } else if (std::all_of(key.begin(), key.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      size_t idx = std::stoul(key);
      if (idx >= args.positional.size())
        fail("IndexError", "Replacement index " + key + " out of range for positional args tuple");
      v = &args.positional[idx];
    } else {
      v = args.keyword_arg(key);
      if (!v) fail("KeyError", string_repr(key));
    }
    bool use_repr = colon != std::string::npos && field.compare(colon, 2, "!r") == 0;
    out += use_repr ? repr(*v) : to_str(*v);
    i = close;
  }
  return out;
}

std::optional<Value> bound_method(const Value& obj, const std::string& name,
                                  const SandboxPolicy& policy) {
  switch (obj.kind()) {
    case Kind::String: return string_method(obj.str(), name);
    case Kind::Dict: return dict_method(obj, name, policy);
    case Kind::List:
    case Kind::Tuple: return list_method(obj, name, policy);
    default: return std::nullopt;
  }
}

}  // namespace pensieve::jinja
