// UTF-8 helpers for the template engine. Python strings are sequences of code points, so length,
// indexing, slicing and case mapping in templates work on code points, not bytes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::jinja::utf8 {

// Decodes UTF-8 into code points; an invalid byte becomes U+FFFD so that untrusted input never
// throws here.
std::u32string decode(std::string_view s);
std::string encode(std::u32string_view s);
void append(std::string& out, char32_t cp);
bool is_ascii(std::string_view s);
size_t length(std::string_view s);  // in code points

// Python str.isspace() for one code point (Unicode White_Space plus the ASCII separators).
bool is_space(char32_t cp);
// Python str.isprintable() for one code point, close enough for repr() of real text: control
// characters, separators other than ' ' and common format characters are not printable.
bool is_printable(char32_t cp);
bool is_alnum(char32_t cp);  // Python's \w for re.findall in wordcount (letters, digits, '_')
char32_t to_upper(char32_t cp);
char32_t to_lower(char32_t cp);
bool is_cased_upper(char32_t cp);
bool is_cased_lower(char32_t cp);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
// Python str.splitlines() (without keepends): splits on \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85,
// U+2028 and U+2029.
std::vector<std::string> splitlines(std::string_view s);

}  // namespace pensieve::jinja::utf8
