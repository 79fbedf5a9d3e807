// JSON Schema -> grammar. What is enforced (docs/API.md repeats it):
// - type (and type arrays), properties/required/additionalProperties, enum, const, anyOf, oneOf
//   (as anyOf: a value matching several branches is not excluded), allOf of object schemas
//   (merged), items, prefixItems, minItems/maxItems, minLength/maxLength, pattern, $ref/$defs/
//   definitions (recursion included), nullable.
// - Objects are written with the declared properties in `properties` order, required ones always,
//   optional ones possibly; other keys only when additionalProperties is true or a schema (then
//   after the declared ones). An object schema with `properties` but no `additionalProperties`
//   gets no other keys (the output stays valid; it is what a caller wants from a model).
// - integer: minimum/maximum/exclusive* enforced exactly when both bounds are given and span at
//   most 1000 values; otherwise only their sign. number: only the sign of the bounds (so
//   exclusiveMinimum 0 still admits 0). Numbers have at most 20 integer digits, 20 fraction digits
//   and 2 exponent digits (so every number fits a double), so a model cannot write digits forever.
// - format: date, time, date-time, uuid and email are approximated by patterns; other formats are
//   annotations and ignored.
// - Whitespace between tokens: nothing, one space, or a newline and up to 32 spaces.
// Keywords that change validity and are not listed above raise SchemaError naming them.
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "runtime/grammar.h"
#include "runtime/grammar_regex.h"

namespace pensieve {

namespace {

using json = nlohmann::ordered_json;
using Alt = GrammarBuilder::Alt;

const std::set<std::string>& annotations() {
  static const std::set<std::string> s = {"description", "title", "examples", "default", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$anchor",
                                          "contentMediaType", "contentEncoding", "strict", "discriminator",
                                          "example", "markdownDescription"};
  return s;
}

const std::set<std::string>& supported() {
  static const std::set<std::string> s = {
      "type", "properties", "required", "additionalProperties", "enum", "const", "anyOf", "oneOf", "allOf",
      "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format",
      "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "$ref", "$defs", "definitions",
      "nullable", "uniqueItems", "multipleOf"};
  return s;
}

class Compiler {
 public:
  explicit Compiler(const json& root) : root_(root) {
    ws_ = b_.rule({{}, {b_.byte(' ')}, {b_.byte('\n'), GrammarBuilder::call(b_.repeat(b_.rule({{b_.byte(' ')}}), 0, 32))}});
    chr_ = json_string_char(b_);
  }

  GrammarPtr run() { return b_.build(compile(root_, "#")); }

  // Any JSON value / object (no schema).
  int any_value() {
    if (any_ < 0) {
      any_ = b_.reserve();
      const int str = string_rule(0, -1);
      const int obj = object_of(-1, any_);
      const int arr = array_of(any_);
      b_.define(any_, {{call(obj)}, {call(arr)}, {call(str)}, {call(number_rule(false, 0))}, b_.literal("true"),
                       b_.literal("false"), b_.literal("null")});
    }
    return any_;
  }
  int any_object() { return object_of(-1, any_value()); }

 private:
  static GrammarBuilder::Elem call(int r) { return GrammarBuilder::call(r); }

  [[noreturn]] static void fail(const std::string& kw, const std::string& path, const std::string& why) {
    throw SchemaError(kw, "JSON schema at " + path + " ('" + kw + "'): " + why);
  }

  // Bounds the recursion of compile, merge_all and value_literal: a schema is untrusted input.
  struct Depth {
    Depth(int& d, const std::string& path) : d_(d) {
      if (++d_ > 64) {
        --d_;
        fail("$ref", path, "the schema nests (or refers to itself without progress) deeper than 64 levels");
      }
    }
    ~Depth() { --d_; }
    int& d_;
  };

  int compile(const json& s, const std::string& path) {
    const Depth guard(depth_, path);
    if (s.is_boolean()) {
      if (s.get<bool>()) return any_value();
      fail("false", path, "the schema `false` admits no value");
    }
    if (!s.is_object()) fail("type", path, "a schema must be an object or a boolean");
    for (const auto& [k, v] : s.items()) {
      if (supported().count(k) || annotations().count(k)) continue;
      fail(k, path, "the keyword '" + k + "' is not supported");
    }
    if (s.contains("uniqueItems") && s["uniqueItems"] != false) fail("uniqueItems", path, "uniqueItems is not supported");
    if (s.contains("multipleOf")) {
      const json& m = s["multipleOf"];
      if (!(m.is_number() && m.get<double>() == 1.0 && type_is(s, "integer")))
        fail("multipleOf", path, "multipleOf is not supported");
    }
    if (s.value("nullable", false)) {
      json rest = s;
      rest.erase("nullable");
      return b_.rule({{call(compile(rest, path))}, b_.literal("null")});
    }
    if (s.contains("$ref")) {
      for (const auto& [k, v] : s.items())
        if (k != "$ref" && k != "$defs" && k != "definitions" && !annotations().count(k))
          fail("$ref", path, "$ref alongside '" + k + "' is not supported");
      return ref(s["$ref"], path);
    }
    if (s.contains("const")) return value_literal(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail("enum", path, "enum must be a non-empty array");
      std::vector<Alt> alts;
      for (const json& v : s["enum"]) alts.push_back({call(value_literal(v))});
      return b_.rule(std::move(alts));
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      const json& list = s[kw];
      if (!list.is_array() || list.empty()) fail(kw, path, std::string(kw) + " must be a non-empty array");
      // Sibling keywords apply to every branch.
      json rest = s;
      rest.erase(kw);
      const bool siblings = has_validation(rest);
      std::vector<Alt> alts;
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string p = path + "/" + kw + "/" + std::to_string(i);
        alts.push_back({call(siblings ? compile(merge_all({rest, list[i]}, p), p) : compile(list[i], p))});
      }
      return b_.rule(std::move(alts));
    }
    if (s.contains("allOf")) {
      const json& list = s["allOf"];
      if (!list.is_array() || list.empty()) fail("allOf", path, "allOf must be a non-empty array");
      json rest = s;
      rest.erase("allOf");
      std::vector<json> parts{rest};
      for (const json& x : list) parts.push_back(x);
      return compile(merge_all(parts, path + "/allOf"), path);
    }
    if (s.contains("type") && s["type"].is_array()) {
      std::vector<Alt> alts;
      for (const json& t : s["type"]) {
        json one = s;
        one["type"] = t;
        alts.push_back({call(compile(one, path))});
      }
      if (alts.empty()) fail("type", path, "an empty type list");
      return b_.rule(std::move(alts));
    }
    std::string type = s.contains("type") ? (s["type"].is_string() ? s["type"].get<std::string>() : "") : infer(s);
    if (type == "object") return object(s, path);
    if (type == "array") return array(s, path);
    if (type == "string") return string(s, path);
    if (type == "integer" || type == "number") return number(s, path, type == "integer");
    if (type == "boolean") return b_.rule({b_.literal("true"), b_.literal("false")});
    if (type == "null") return b_.rule({b_.literal("null")});
    if (type == "any") return any_value();
    fail("type", path, "unknown type " + s["type"].dump());
  }

  static bool type_is(const json& s, const char* t) { return s.contains("type") && s["type"] == t; }

  static bool has_validation(const json& s) {
    for (const auto& [k, v] : s.items())
      if (!annotations().count(k) && k != "$defs" && k != "definitions") return true;
    return false;
  }

  static std::string infer(const json& s) {
    if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) return "object";
    if (s.contains("items") || s.contains("prefixItems") || s.contains("minItems") || s.contains("maxItems"))
      return "array";
    if (s.contains("pattern") || s.contains("minLength") || s.contains("maxLength") || s.contains("format"))
      return "string";
    if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
        s.contains("exclusiveMaximum"))
      return "number";
    return "any";
  }

  const json& resolve(const json& ref, const std::string& path) {
    if (!ref.is_string()) fail("$ref", path, "$ref must be a string");
    const std::string r = ref.get<std::string>();
    if (r.empty() || r[0] != '#') fail("$ref", path, "only local references (#/...) are supported: " + r);
    try {
      return r == "#" ? root_ : root_.at(json::json_pointer(r.substr(1)));
    } catch (const std::exception&) {
      fail("$ref", path, "the reference " + r + " does not resolve");
    }
  }

  int ref(const json& ref, const std::string& path) {
    const json& target = resolve(ref, path);
    const std::string r = ref.get<std::string>();
    auto it = refs_.find(r);
    if (it != refs_.end()) return it->second;
    const int rule = b_.reserve();
    refs_[r] = rule;
    b_.define(rule, {{call(compile(target, r))}});
    return rule;
  }

  // allOf: the parts merged into one object schema (properties united, required united).
  json merge_all(const std::vector<json>& parts, const std::string& path) {
    const Depth guard(depth_, path);
    json out = json::object();
    for (json p : parts) {
      for (int depth = 0; p.is_object() && p.contains("$ref"); ++depth) {
        if (depth > 32) fail("$ref", path, "a reference cycle in allOf");
        p = resolve(p["$ref"], path);
      }
      if (p == true) continue;
      if (!p.is_object()) fail("allOf", path, "allOf parts must be schemas");
      if (p.contains("allOf")) {
        json inner = p;
        inner.erase("allOf");
        std::vector<json> more{inner};
        for (const json& x : p["allOf"]) more.push_back(x);
        p = merge_all(more, path);
      }
      for (const auto& [k, v] : p.items()) {
        if (annotations().count(k)) continue;
        if (k == "properties") {
          for (const auto& [name, sub] : v.items()) {
            // A property constrained by several parts must satisfy them all.
            if (out["properties"].contains(name) && out["properties"][name] != sub)
              out["properties"][name] = merge_all({out["properties"][name], sub}, path + "/properties/" + name);
            else
              out["properties"][name] = sub;
          }
        } else if (k == "required") {
          for (const json& name : v)
            if (!out.contains("required") || std::find(out["required"].begin(), out["required"].end(), name) ==
                                                 out["required"].end())
              out["required"].push_back(name);
        } else if (!out.contains(k) || out[k] == v) {
          out[k] = v;
        } else {
          fail("allOf", path, "allOf parts disagree on '" + k + "'");
        }
      }
    }
    return out;
  }

  // The grammar of one fixed JSON value (const / enum), with optional whitespace as anywhere.
  int value_literal(const json& v) {
    const Depth guard(depth_, "const/enum");
    if (v.is_object()) {
      Alt a = b_.literal("{");
      a.push_back(call(ws_));
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        if (!first) {
          a.push_back(b_.byte(','));
          a.push_back(call(ws_));
        }
        first = false;
        for (auto e : b_.literal(json(k).dump(-1, ' ', false, json::error_handler_t::replace))) a.push_back(e);
        a.push_back(call(ws_));
        a.push_back(b_.byte(':'));
        a.push_back(call(ws_));
        a.push_back(call(value_literal(x)));
        a.push_back(call(ws_));
      }
      a.push_back(b_.byte('}'));
      return b_.rule({a});
    }
    if (v.is_array()) {
      Alt a = b_.literal("[");
      a.push_back(call(ws_));
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) {
          a.push_back(b_.byte(','));
          a.push_back(call(ws_));
        }
        a.push_back(call(value_literal(v[i])));
        a.push_back(call(ws_));
      }
      a.push_back(b_.byte(']'));
      return b_.rule({a});
    }
    return b_.rule({b_.literal(v.dump(-1, ' ', false, json::error_handler_t::replace))});
  }

  // "key" ws ":" ws value
  Alt member(std::string_view key_rule_or_literal, int value, bool literal_key, int key_rule = -1) {
    Alt a = literal_key ? b_.literal(key_rule_or_literal) : Alt{call(key_rule)};
    a.push_back(call(ws_));
    a.push_back(b_.byte(':'));
    a.push_back(call(ws_));
    a.push_back(call(value));
    a.push_back(call(ws_));
    return a;
  }

  // "{" ws (member ("," ws member)*)? "}" with any keys; value -1: none allowed.
  int object_of(int min_members, int value) {
    (void)min_members;
    const int str = string_rule(0, -1);
    const int mem = b_.rule({member("", value, false, str)});
    const int sep = b_.rule({{b_.byte(','), call(ws_)}});
    const int list = b_.repeat(mem, 0, -1, sep);
    Alt a = b_.literal("{");
    a.push_back(call(ws_));
    a.push_back(call(list));
    a.push_back(b_.byte('}'));
    return b_.rule({a});
  }

  int object(const json& s, const std::string& path) {
    const json props = s.value("properties", json::object());
    if (!props.is_object()) fail("properties", path, "properties must be an object");
    std::vector<std::string> names;
    for (const auto& [k, v] : props.items()) names.push_back(k);
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("required", path, "required must be an array");
      for (const json& r : s["required"]) {
        if (!r.is_string()) fail("required", path, "required must list strings");
        required.insert(r.get<std::string>());
        if (!props.contains(r.get<std::string>())) names.push_back(r.get<std::string>());
      }
    }
    const json extra = s.value("additionalProperties", json(props.empty() && !s.contains("required")));
    int extra_value = -1;
    if (extra.is_object()) extra_value = compile(extra, path + "/additionalProperties");
    else if (extra == true) extra_value = any_value();
    else if (!extra.is_boolean()) fail("additionalProperties", path, "additionalProperties must be a boolean or a schema");
    if (names.empty() && extra_value >= 0) return object_of(-1, extra_value);

    // Members in order: F(i) starts the list at member i or later, R(i) continues it after a
    // member with ", member_i" or later ones; optional members may be skipped.
    const size_t n = names.size();
    std::vector<int> kv(n);
    for (size_t i = 0; i < n; ++i) {
      const json sub = props.contains(names[i]) ? props[names[i]] : json(true);
      const int v = compile(sub, path + "/properties/" + names[i]);
      kv[i] = b_.rule({member(json(names[i]).dump(-1, ' ', false, json::error_handler_t::replace), v, true)});
    }
    const int comma = b_.rule({{b_.byte(','), call(ws_)}});
    int tail_rest = b_.rule({{}});  // after the declared members
    int tail_first = b_.rule({{}});
    if (extra_value >= 0) {
      const int str = string_rule(0, -1);
      const int mem = b_.rule({member("", extra_value, false, str)});
      tail_rest = b_.repeat(b_.rule({{call(comma), call(mem)}}), 0, -1);
      tail_first = b_.repeat(mem, 0, -1, comma);
    }
    int R = tail_rest, F = tail_first;
    for (size_t i = n; i-- > 0;) {
      const bool req = required.count(names[i]) > 0;
      std::vector<Alt> r_alts{{call(comma), call(kv[i]), call(R)}};
      std::vector<Alt> f_alts{{call(kv[i]), call(R)}};
      if (!req) {
        r_alts.push_back({call(R)});
        f_alts.push_back({call(F)});
      }
      const int newR = b_.rule(std::move(r_alts));
      F = b_.rule(std::move(f_alts));
      R = newR;
    }
    Alt a = b_.literal("{");
    a.push_back(call(ws_));
    a.push_back(call(F));
    a.push_back(b_.byte('}'));
    return b_.rule({a});
  }

  static int count(const json& s, const char* kw, int dflt, const std::string& path) {
    if (!s.contains(kw)) return dflt;
    const json& v = s[kw];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) fail(kw, path, std::string(kw) + " must be a non-negative integer");
    if (v.get<int64_t>() > 10000) fail(kw, path, std::string(kw) + " above 10000 is not supported");
    return int(v.get<int64_t>());
  }

  int array_of(int item) {
    const int sep = b_.rule({{b_.byte(','), call(ws_)}});
    const int it = b_.rule({{call(item), call(ws_)}});
    Alt a = b_.literal("[");
    a.push_back(call(ws_));
    a.push_back(call(b_.repeat(it, 0, -1, sep)));
    a.push_back(b_.byte(']'));
    return b_.rule({a});
  }

  int array(const json& s, const std::string& path) {
    const int min = count(s, "minItems", 0, path), max = count(s, "maxItems", -1, path);
    if (max >= 0 && max < min) fail("maxItems", path, "maxItems is below minItems");
    std::vector<int> prefix;
    if (s.contains("prefixItems")) {
      if (!s["prefixItems"].is_array()) fail("prefixItems", path, "prefixItems must be an array");
      for (size_t i = 0; i < s["prefixItems"].size(); ++i)
        prefix.push_back(compile(s["prefixItems"][i], path + "/prefixItems/" + std::to_string(i)));
    }
    int items = -1;  // -1: no items after the prefix
    if (!s.contains("items") || s["items"] != false) {
      items = s.contains("items") ? compile(s["items"], path + "/items") : any_value();
    }
    const int comma = b_.rule({{b_.byte(','), call(ws_)}});
    auto elem = [&](size_t k) { return k < prefix.size() ? prefix[k] : items; };
    // R(k): the rest of the list after k items.
    const size_t n = prefix.size();
    const size_t K = std::max(n, size_t(min));
    auto with_ws = [&](int r) { return b_.rule({{call(r), call(ws_)}}); };
    int R;
    if (items < 0 || (max >= 0 && size_t(max) <= K)) {
      R = b_.rule({{}});
    } else {
      const int more = max < 0 ? -1 : max - int(K);
      R = K == 0 ? b_.repeat(with_ws(items), 0, more, comma)
                 : b_.repeat(b_.rule({{call(comma), call(with_ws(items))}}), 0, more);
    }
    for (size_t k = K; k-- > 0;) {
      std::vector<Alt> alts;
      const int e = elem(k);
      if (e >= 0 && (max < 0 || int(k) < max)) {
        Alt a;
        if (k > 0) a.push_back(call(comma));
        a.push_back(call(with_ws(e)));
        a.push_back(call(R));
        alts.push_back(a);
      }
      // Stopping after k items is fine once minItems is met.
      if (int(k) >= min) alts.push_back({});
      if (alts.empty()) fail("minItems", path, "minItems needs more items than the schema allows");
      R = b_.rule(std::move(alts));
    }
    Alt a = b_.literal("[");
    a.push_back(call(ws_));
    a.push_back(call(R));
    a.push_back(b_.byte(']'));
    return b_.rule({a});
  }

  int string_rule(int min, int max) {
    const auto key = std::make_pair(min, max);
    auto it = strings_.find(key);
    if (it != strings_.end()) return it->second;
    Alt a{b_.byte('"'), call(b_.repeat(chr_, min, max)), b_.byte('"')};
    return strings_[key] = b_.rule({a});
  }

  int string(const json& s, const std::string& path) {
    const int min = count(s, "minLength", 0, path), max = count(s, "maxLength", -1, path);
    if (max >= 0 && max < min) fail("maxLength", path, "maxLength is below minLength");
    const bool lengths = s.contains("minLength") || s.contains("maxLength");
    std::string pattern;
    const char* kw = "pattern";
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) fail("pattern", path, "pattern must be a string");
      pattern = s["pattern"].get<std::string>();
    } else if (s.contains("format") && s["format"].is_string()) {
      const std::string f = s["format"].get<std::string>();
      const std::string date = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])";
      const std::string time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
      if (f == "date") pattern = "^" + date + "$";
      else if (f == "time") pattern = "^" + time + "$";
      else if (f == "date-time") pattern = "^" + date + "T" + time + "$";
      else if (f == "uuid") pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
      else if (f == "email") pattern = "^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){0,8}$";
      kw = "format";
    }
    if (pattern.empty()) return string_rule(min, max);
    if (lengths) fail(s.contains("maxLength") ? "maxLength" : "minLength", path,
                      "minLength/maxLength together with pattern or format is not supported");
    Alt a{b_.byte('"'), call(compile_pattern(b_, pattern, kw)), b_.byte('"')};
    return b_.rule({a});
  }

  // Digits: [0-9]{1,n}
  int digits(int lo, int n) {
    ByteSet d;
    d.set_range('0', '9');
    return b_.repeat(b_.rule({{b_.bytes(d)}}), lo, n);
  }

  // sign: 0 any, 1 non-negative, 2 positive (integers), -1 non-positive, -2 negative (integers)
  int number_rule(bool integer, int sign) {
    ByteSet nz;
    nz.set_range('1', '9');
    const int mag_pos = b_.rule({{b_.bytes(nz), call(digits(0, 19))}});
    const int mag = b_.rule({b_.literal("0"), {call(mag_pos)}});
    std::vector<Alt> ints;
    if (sign >= 0) ints.push_back({call(sign == 2 ? mag_pos : mag)});
    if (sign <= 0) ints.push_back({b_.byte('-'), call(sign == -2 ? mag_pos : mag)});
    if (sign == -1) ints.push_back(b_.literal("0"));
    if (integer) return b_.rule(std::move(ints));
    // A non-positive number: a negative one, or a plain 0 (no fraction that would make it positive).
    const int in = b_.rule(sign == -1 ? std::vector<Alt>{ints[0]} : std::move(ints));
    const int frac = b_.optional(b_.rule({{b_.byte('.'), call(digits(1, 20))}}));
    ByteSet e, pm;
    e.set('e');
    e.set('E');
    pm.set('+');
    pm.set('-');
    const int exp = b_.optional(b_.rule({{b_.bytes(e), call(b_.optional(b_.rule({{b_.bytes(pm)}}))), call(digits(1, 2))}}));
    if (sign == -1) return b_.rule({{call(in), call(frac), call(exp)}, b_.literal("0")});
    return b_.rule({{call(in), call(frac), call(exp)}});
  }

  int number(const json& s, const std::string& path, bool integer) {
    auto bound = [&](const char* kw) -> std::optional<double> {
      if (!s.contains(kw)) return std::nullopt;
      if (!s[kw].is_number()) fail(kw, path, std::string(kw) + " must be a number");
      return s[kw].get<double>();
    };
    const auto mn = bound("minimum"), mx = bound("maximum"), xmn = bound("exclusiveMinimum"),
               xmx = bound("exclusiveMaximum");
    if (integer) {
      // Exact bounds: the smallest and largest allowed integers.
      std::optional<double> lo, hi;
      if (mn) lo = std::ceil(*mn);
      if (xmn) lo = std::max(lo.value_or(-INFINITY), std::floor(*xmn) + 1);
      if (mx) hi = std::floor(*mx);
      if (xmx) hi = std::min(hi.value_or(INFINITY), std::ceil(*xmx) - 1);
      if (lo && hi) {
        if (*hi < *lo) fail("maximum", path, "no integer lies between the bounds");
        if (*hi - *lo <= 1000) {
          std::vector<Alt> alts;
          for (double v = *lo; v <= *hi; ++v) alts.push_back(b_.literal(std::to_string(int64_t(v))));
          return b_.rule(std::move(alts));
        }
      }
      int sign = 0;
      if (lo && *lo >= 1) sign = 2;
      else if (lo && *lo >= 0) sign = 1;
      else if (hi && *hi <= -1) sign = -2;
      else if (hi && *hi <= 0) sign = -1;
      return number_rule(true, sign);
    }
    int sign = 0;
    if ((mn && *mn >= 0) || (xmn && *xmn >= 0)) sign = 1;
    else if ((mx && *mx <= 0) || (xmx && *xmx <= 0)) sign = -1;
    return number_rule(false, sign);
  }

  const json& root_;
  GrammarBuilder b_;
  int ws_ = -1, chr_ = -1, any_ = -1;
  int depth_ = 0;
  std::unordered_map<std::string, int> refs_;
  std::map<std::pair<int, int>, int> strings_;
};

}  // namespace

GrammarPtr grammar_json_schema(const nlohmann::ordered_json& schema) { return Compiler(schema).run(); }

GrammarPtr grammar_json_schema(const nlohmann::json& schema) {
  return grammar_json_schema(nlohmann::ordered_json::parse(schema.dump()));
}

GrammarPtr grammar_json_value() {
  static const json any = json::object();
  Compiler c(any);
  return c.run();
}

GrammarPtr grammar_json_object() {
  static const json obj = {{"type", "object"}};
  return Compiler(obj).run();
}

}  // namespace pensieve
