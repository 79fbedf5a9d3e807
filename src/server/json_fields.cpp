#include "server/json_fields.h"

#include <cmath>
#include <limits>

#include "server/api_error.h"

namespace pensieve::server::fields {

namespace {
std::string qualified(const std::string& where, const char* name) {
  return where.empty() ? std::string(name) : where + "." + name;
}
[[noreturn]] void wrong_type(const std::string& field, const char* expected, const json& v) {
  throw ApiError::invalid_request(field + ": expected " + expected + ", got " + json_type_name(v));
}
}  // namespace

std::string json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    case json::value_t::number_float: return "number";
    default: return "integer";
  }
}

json parse_json_text(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw ApiError::invalid_request("request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw ApiError::invalid_request(std::string("request body is not valid JSON: ") + e.what());
  }
}

const json* find(const json& obj, const char* name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<std::string> optional_string(const json& obj, const char* name, const std::string& where) {
  const json* v = find(obj, name);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(qualified(where, name), "a string", *v);
  return v->get<std::string>();
}

std::string require_string(const json& obj, const char* name, const std::string& where) {
  auto s = optional_string(obj, name, where);
  if (!s) throw ApiError::invalid_request(qualified(where, name) + ": Field required");
  return *s;
}

std::optional<bool> optional_bool(const json& obj, const char* name) {
  const json* v = find(obj, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(name, "a boolean", *v);
  return v->get<bool>();
}

std::optional<int> optional_int(const json& obj, const char* name, int64_t min) {
  const json* v = find(obj, name);
  if (!v) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    x = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
            ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::trunc(v->get<double>()) == v->get<double>()) {
    // Integers beyond 64 bits (2^64, 1e30) arrive as floats: clamp them like any large count.
    const double d = v->get<double>();
    x = d >= 0x1p63 ? std::numeric_limits<int64_t>::max()
        : d < -0x1p63 ? std::numeric_limits<int64_t>::min() : static_cast<int64_t>(d);
  } else {
    wrong_type(name, "an integer", *v);
  }
  if (x < min)
    throw ApiError::invalid_request(std::string(name) + ": must be at least " + std::to_string(min) +
                                    ", got " + std::to_string(x));
  return static_cast<int>(std::min<int64_t>(x, std::numeric_limits<int32_t>::max()));
}

std::optional<uint64_t> optional_u64(const json& obj, const char* name) {
  const json* v = find(obj, name);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  if (v->is_number_integer()) return static_cast<uint64_t>(v->get<int64_t>());
  wrong_type(name, "an integer", *v);
}

std::optional<float> optional_number_in(const json& obj, const char* name, double lo, double hi) {
  const json* v = find(obj, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(name, "a number", *v);
  double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw ApiError::invalid_request(std::string(name) + ": must be between " + json(lo).dump() +
                                    " and " + json(hi).dump() + ", got " + v->dump());
  return static_cast<float>(x);
}

const json* optional_array(const json& obj, const char* name) {
  const json* v = find(obj, name);
  if (v && !v->is_array()) wrong_type(name, "an array", *v);
  return v;
}

const json* optional_object(const json& obj, const char* name) {
  const json* v = find(obj, name);
  if (v && !v->is_object()) wrong_type(name, "an object", *v);
  return v;
}

}  // namespace pensieve::server::fields
