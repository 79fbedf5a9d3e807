// A practical regex subset for JSON Schema `pattern` and the string `format`s, compiled into
// grammar rules that match the pattern's strings as they are written inside a JSON string literal
// (a `"` in the pattern is matched as `\"`). Supported: literals, `.`, classes `[...]` with ranges
// and negation (ASCII ranges; non-ASCII only as single characters), `\d \w \s \D \W \S`, escaped
// metacharacters, groups `(...)` `(?:...)`, `|`, the quantifiers `* + ? {n} {n,} {n,m}` (lazy forms
// too, as they match the same strings), and `^`/`$` at the ends; a pattern without `^`/`$` may
// match anywhere in the string, as JSON Schema says. Anything else (lookaround, backreferences,
// `\b`, named groups, Unicode classes) is a SchemaError naming `pattern`.
#pragma once
#include <string_view>

#include "runtime/grammar.h"

namespace pensieve {

// The rule matching the body of a JSON string (without its quotes) whose value matches `pattern`.
int compile_pattern(GrammarBuilder& b, std::string_view pattern, const char* keyword = "pattern");

// Shared pieces of JSON strings: one character of a JSON string body (raw UTF-8 or an escape).
int json_string_char(GrammarBuilder& b);

}  // namespace pensieve
