// Turns template source into tokens, applying jinja2's whitespace rules as Hugging Face configures
// them: trim_blocks (drop the first newline after a block or comment tag), lstrip_blocks (drop the
// spaces before a block or comment tag that starts a line), the manual `-`/`+` modifiers on
// tags, raw blocks, newline normalisation and dropping one trailing newline of the template.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::jinja {

enum class TokenType : uint8_t {
  Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End
};

struct Token {
  TokenType type;
  std::string text;  // Text/Name/String value (unescaped), operator spelling
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws TemplateError (kind TemplateSyntaxError) naming the line on malformed input.
std::vector<Token> tokenize(std::string_view source, const LexerOptions& options = {});

}  // namespace pensieve::jinja
