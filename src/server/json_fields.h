// Typed reads of request-body fields that answer a wrong type or value with a 400 naming the field,
// so that the translation code reads as a list of fields.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace pensieve::server::fields {

using json = nlohmann::ordered_json;

// Nesting deeper than this is refused: JSON values are copied, dumped and rendered recursively.
constexpr int kMaxJsonDepth = 128;

// Parses a request body; a 400 saying why when it is not JSON (invalid UTF-8 included) or nests
// deeper than kMaxJsonDepth.
json parse_json_text(std::string_view text);

// The field's value, or nullptr when it is absent or JSON null.
const json* find(const json& obj, const char* name);

std::string require_string(const json& obj, const char* name, const std::string& where = "");
std::optional<std::string> optional_string(const json& obj, const char* name, const std::string& where = "");
std::optional<bool> optional_bool(const json& obj, const char* name);
// An integer >= min (values above INT32_MAX clamp to it: they only ever mean "as many as fit";
// that includes integers too large for 64 bits, which JSON parsing turns into whole floats).
std::optional<int> optional_int(const json& obj, const char* name, int64_t min);
std::optional<uint64_t> optional_u64(const json& obj, const char* name);
std::optional<float> optional_number_in(const json& obj, const char* name, double lo, double hi);
const json* optional_array(const json& obj, const char* name);
const json* optional_object(const json& obj, const char* name);

std::string json_type_name(const json& v);

}  // namespace pensieve::server::fields
