// A small JSON Schema validator for the keywords the grammar compiler supports
// (runtime/grammar.h): the tests check generated output with it, and the tool-call parser may
// check parsed arguments. `format` is an annotation here (not checked). Unsupported keywords are
// ignored (the compiler rejects them before anything is generated).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace pensieve {

// "" when `instance` is valid against `schema`; otherwise why not, with the instance path.
std::string json_schema_check(const nlohmann::json& schema, const nlohmann::json& instance);

}  // namespace pensieve
