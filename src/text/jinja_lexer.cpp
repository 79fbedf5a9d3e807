#include "text/jinja_lexer.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "text/jinja_error.h"
#include "text/jinja_unicode.h"

namespace pensieve::jinja {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

[[noreturn]] void syntax_error(const std::string& message, int line) {
  fail("TemplateSyntaxError", message + " (line " + std::to_string(line) + ")");
}

std::string normalize_newlines(std::string_view source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Python's "unicode-escape" decoding of a string literal body, as jinja2 applies it.
std::string unescape(std::string_view s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    auto hex = [&](int digits) -> char32_t {
      if (i + digits >= s.size())
        syntax_error("truncated \\x/\\u escape in string literal", line);
      char32_t v = 0;
      for (int k = 1; k <= digits; ++k) {
        char h = s[i + k];
        int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (d < 0) syntax_error("invalid \\x/\\u escape in string literal", line);
        v = v * 16 + static_cast<char32_t>(d);
      }
      i += digits;
      return v;
    };
    switch (c) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case '\n': break;  // line continuation
      case 'x': utf8::append(out, hex(2)); break;
      case 'u': utf8::append(out, hex(4)); break;
      case 'U': {
        char32_t cp = hex(8);
        if (cp > 0x10FFFF) syntax_error("illegal Unicode character in string literal", line);
        utf8::append(out, cp);
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          char32_t v = 0;
          int n = 0;
          while (n < 3 && i < s.size() && s[i] >= '0' && s[i] <= '7') v = v * 8 + (s[i++] - '0'), ++n;
          --i;
          utf8::append(out, v);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string source, const LexerOptions& options) : src_(std::move(source)), opt_(options) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      std::string text = src_.substr(pos_, (tag == std::string::npos ? src_.size() : tag) - pos_);
      if (tag == std::string::npos) {
        emit_text(std::move(text));
        pos_ = src_.size();
        break;
      }
      char kind = src_[tag + 1];
      char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      apply_left_strip(text, kind, mod);
      emit_text(std::move(text));
      count_lines(pos_, tag);
      pos_ = tag;
      if (kind == '#') lex_comment(mod);
      else if (kind == '%' && lex_raw()) continue;
      else lex_tag(kind, mod);
    }
    tokens_.push_back({TokenType::End, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    return std::string::npos;
  }

  void count_lines(size_t from, size_t to) {
    for (size_t i = from; i < to && i < src_.size(); ++i)
      if (src_[i] == '\n') ++line_;
  }

  void apply_left_strip(std::string& text, char kind, char mod) {
    if (mod == '-') {
      size_t end = text.size();
      while (end > 0 && is_ws(text[end - 1])) --end;
      text.resize(end);
    } else if (mod != '+' && kind != '{' && opt_.lstrip_blocks) {
      size_t l = text.rfind('\n');
      l = (l == std::string::npos) ? 0 : l + 1;
      if (l > 0 || line_starting_) {
        bool blank = true;
        for (size_t i = l; i < text.size(); ++i)
          if (!is_ws(text[i])) blank = false;
        if (blank) text.resize(l);
      }
    }
  }

  void emit_text(std::string text) {
    if (!text.empty()) tokens_.push_back({TokenType::Text, std::move(text), 0, 0, line_});
  }

  // After a tag's closing delimiter at `after`: `-` eats all following whitespace, trim_blocks one
  // newline after block/comment tags.
  void finish_tag(size_t after, bool minus, bool plus, bool is_block) {
    size_t p = after;
    if (minus) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (!plus && is_block && opt_.trim_blocks && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    count_lines(pos_, p);
    line_starting_ = p > 0 && src_[p - 1] == '\n';
    pos_ = p;
  }

  void lex_comment(char mod) {
    size_t end = src_.find("#}", pos_ + 2);
    if (end == std::string::npos) syntax_error("Missing end of comment tag", line_);
    bool minus = end > pos_ + 2 && src_[end - 1] == '-';
    finish_tag(end + 2, minus, false, true);
  }

  // Matches `{%[-+]? *word *[-+]?%}` at p; returns the position after it or npos.
  size_t match_simple_tag(size_t p, const char* word, char* open_mod, char* close_mod) const {
    if (src_.compare(p, 2, "{%") != 0) return std::string::npos;
    p += 2;
    *open_mod = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p++] : '\0';
    while (p < src_.size() && is_ws(src_[p])) ++p;
    size_t n = std::strlen(word);
    if (src_.compare(p, n, word) != 0) return std::string::npos;
    p += n;
    if (p < src_.size() && is_name_char(src_[p])) return std::string::npos;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    *close_mod = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p++] : '\0';
    if (src_.compare(p, 2, "%}") != 0) return std::string::npos;
    return p + 2;
  }

  bool lex_raw() {
    char open_mod, close_mod;
    size_t body = match_simple_tag(pos_, "raw", &open_mod, &close_mod);
    if (body == std::string::npos) return false;
    finish_tag(body, close_mod == '-', true, true);
    for (size_t p = pos_; (p = src_.find("{%", p)) != std::string::npos; p += 2) {
      char end_open, end_close;
      size_t after = match_simple_tag(p, "endraw", &end_open, &end_close);
      if (after == std::string::npos) continue;
      std::string text = src_.substr(pos_, p - pos_);
      apply_left_strip(text, '%', end_open);
      emit_text(std::move(text));
      count_lines(pos_, p);
      pos_ = p;
      finish_tag(after, end_close == '-', end_close == '+', true);
      return true;
    }
    syntax_error("Missing end of raw directive", line_);
  }

  void lex_tag(char kind, char mod) {
    bool is_block = kind == '%';
    tokens_.push_back({is_block ? TokenType::BlockBegin : TokenType::VarBegin, "", 0, 0, line_});
    size_t p = pos_ + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
    int depth = 0;
    const char close = is_block ? '%' : '}';
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      if (p >= src_.size())
        syntax_error(is_block ? "Unexpected end of template: missing '%}'"
                              : "Unexpected end of template: missing '}}'", line_);
      if (depth == 0) {
        bool minus = src_[p] == '-' || (is_block && src_[p] == '+');
        size_t q = minus ? p + 1 : p;
        if (q + 1 < src_.size() && src_[q] == close && src_[q + 1] == '}') {
          tokens_.push_back({is_block ? TokenType::BlockEnd : TokenType::VarEnd, "", 0, 0, line_});
          pos_ = q + 2;
          finish_tag(q + 2, src_[p] == '-', src_[p] == '+', is_block);
          return;
        }
      }
      p = lex_expression_token(p, depth);
    }
  }

  size_t lex_expression_token(size_t p, int& depth) {
    char c = src_[p];
    if (is_name_start(c)) {
      size_t q = p;
      while (q < src_.size() && is_name_char(src_[q])) ++q;
      tokens_.push_back({TokenType::Name, src_.substr(p, q - p), 0, 0, line_});
      return q;
    }
    if (is_digit(c)) return lex_number(p);
    if (c == '\'' || c == '"') return lex_string(p);
    static const char* const two[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : two)
      if (src_.compare(p, 2, op) == 0) {
        tokens_.push_back({TokenType::Op, op, 0, 0, line_});
        return p + 2;
      }
    if (std::strchr("+-*/%~<>=.,:|()[]{};", c) == nullptr)
      syntax_error(std::string("unexpected char '") + c + "'", line_);
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') {
      if (depth == 0) syntax_error(std::string("unexpected '") + c + "'", line_);
      --depth;
    }
    tokens_.push_back({TokenType::Op, std::string(1, c), 0, 0, line_});
    return p + 1;
  }

  size_t lex_number(size_t p) {
    size_t q = p;
    auto digits = [&] {
      while (q < src_.size() && (is_digit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() &&
                                                        is_digit(src_[q + 1]))))
        ++q;
    };
    digits();
    bool is_float = false;
    if (q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
      ++q;
      digits();
      is_float = true;
    }
    if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t e = q + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && is_digit(src_[e])) {
        q = e;
        digits();
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i)
      if (src_[i] != '_') text += src_[i];
    Token t{is_float ? TokenType::Float : TokenType::Int, text, 0, 0, line_};
    if (is_float) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) syntax_error("integer literal too large: " + text, line_);
    }
    tokens_.push_back(std::move(t));
    return q;
  }

  size_t lex_string(size_t p) {
    char quote = src_[p];
    size_t q = p + 1;
    int start_line = line_;
    while (q < src_.size() && src_[q] != quote) {
      if (src_[q] == '\\' && q + 1 < src_.size()) ++q;
      if (src_[q] == '\n') ++line_;
      ++q;
    }
    if (q >= src_.size()) syntax_error("unexpected end of string literal", start_line);
    tokens_.push_back({TokenType::String, unescape(std::string_view(src_).substr(p + 1, q - p - 1),
                                                   start_line), 0, 0, start_line});
    return q + 1;
  }

  std::string src_;
  LexerOptions opt_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const LexerOptions& options) {
  return Lexer(normalize_newlines(source, options.keep_trailing_newline), options).run();
}

}  // namespace pensieve::jinja
