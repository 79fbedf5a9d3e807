#include "runtime/json_schema.h"

#include <cmath>
#include <regex>

namespace pensieve {

namespace {

using json = nlohmann::json;

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::wstring widen(const std::string& s) {
  std::wstring out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = uint8_t(s[i]);
    const int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    uint32_t cp = n == 1 ? c : c & (0x3F >> (n - 1));
    for (int k = 1; k < n && i + size_t(k) < s.size(); ++k) cp = (cp << 6) | (uint8_t(s[i + size_t(k)]) & 0x3F);
    out.push_back(wchar_t(cp));
    i += size_t(n);
  }
  return out;
}

class Checker {
 public:
  explicit Checker(const json& root) : root_(root) {}

  std::string check(const json& s, const json& v, const std::string& at, int depth = 0) {
    if (depth > 200) return at + ": schema nesting too deep";
    if (s.is_boolean()) return s.get<bool>() ? "" : at + ": the schema false admits nothing";
    if (!s.is_object()) return at + ": the schema is not an object";
    if (s.contains("$ref")) {
      const std::string r = s["$ref"].get<std::string>();
      const json& target = r == "#" ? root_ : root_.at(json::json_pointer(r.substr(1)));
      if (auto e = check(target, v, at, depth + 1); !e.empty()) return e;
    }
    if (s.value("nullable", false) && v.is_null()) return "";
    if (s.contains("type")) {
      const json& t = s["type"];
      bool ok = false;
      if (t.is_array()) {
        for (const json& x : t) ok = ok || type_ok(x.get<std::string>(), v);
      } else {
        ok = type_ok(t.get<std::string>(), v);
      }
      if (!ok) return at + ": expected type " + t.dump() + ", got " + v.dump();
    }
    if (s.contains("const") && s["const"] != v) return at + ": expected the constant " + s["const"].dump();
    if (s.contains("enum")) {
      bool found = false;
      for (const json& x : s["enum"]) found = found || x == v;
      if (!found) return at + ": not one of the enum values";
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      int matched = 0;
      for (const json& sub : s[kw]) matched += check(sub, v, at, depth + 1).empty();
      if (matched == 0) return at + ": matches no " + kw + " branch";
      if (std::string(kw) == "oneOf" && matched > 1) return at + ": matches several oneOf branches";
    }
    if (s.contains("allOf"))
      for (const json& sub : s["allOf"])
        if (auto e = check(sub, v, at, depth + 1); !e.empty()) return e;
    if (v.is_object()) {
      const json props = s.value("properties", json::object());
      for (const json& r : s.value("required", json::array()))
        if (!v.contains(r.get<std::string>())) return at + ": missing required property " + r.dump();
      for (const auto& [k, x] : v.items()) {
        const std::string p = at + "/" + k;
        if (props.contains(k)) {
          if (auto e = check(props[k], x, p, depth + 1); !e.empty()) return e;
        } else if (s.contains("additionalProperties")) {
          if (auto e = check(s["additionalProperties"], x, p, depth + 1); !e.empty())
            return s["additionalProperties"] == false ? p + ": property not allowed" : e;
        }
      }
    }
    if (v.is_array()) {
      const json prefix = s.value("prefixItems", json::array());
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string p = at + "/" + std::to_string(i);
        if (i < prefix.size()) {
          if (auto e = check(prefix[i], v[i], p, depth + 1); !e.empty()) return e;
        } else if (s.contains("items")) {
          if (auto e = check(s["items"], v[i], p, depth + 1); !e.empty()) return e;
        }
      }
      if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return at + ": too few items";
      if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return at + ": too many items";
    }
    if (v.is_string()) {
      const std::string str = v.get<std::string>();
      const size_t n = utf8_length(str);
      if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return at + ": string too short";
      if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return at + ": string too long";
      if (s.contains("pattern")) {
        // Matched over code points (wchar_t holds one on this platform), so '.' is one character.
        const std::wregex re(widen(s["pattern"].get<std::string>()), std::regex::ECMAScript);
        if (!std::regex_search(widen(str), re)) return at + ": does not match the pattern " + s["pattern"].dump();
      }
    }
    if (v.is_number()) {
      const double x = v.get<double>();
      if (s.contains("minimum") && x < s["minimum"].get<double>()) return at + ": below the minimum";
      if (s.contains("maximum") && x > s["maximum"].get<double>()) return at + ": above the maximum";
      if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) return at + ": not above the exclusive minimum";
      if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) return at + ": not below the exclusive maximum";
    }
    return "";
  }

 private:
  static bool type_ok(const std::string& t, const json& v) {
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    if (t == "string") return v.is_string();
    if (t == "boolean") return v.is_boolean();
    if (t == "null") return v.is_null();
    if (t == "integer") return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    if (t == "number") return v.is_number();
    return false;
  }
  const json& root_;
};

}  // namespace

std::string json_schema_check(const nlohmann::json& schema, const nlohmann::json& instance) {
  try {
    return Checker(schema).check(schema, instance, "$");
  } catch (const std::exception& e) {
    return std::string("the schema could not be applied: ") + e.what();
  }
}

}  // namespace pensieve
