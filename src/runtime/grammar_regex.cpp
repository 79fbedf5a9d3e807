#include "runtime/grammar_regex.h"

#include <string>
#include <vector>

namespace pensieve {

namespace {

using Alt = GrammarBuilder::Alt;

ByteSet range(uint8_t lo, uint8_t hi) {
  ByteSet s;
  s.set_range(lo, hi);
  return s;
}

// Every well-formed UTF-8 sequence of two to four bytes.
void add_multibyte(GrammarBuilder& b, std::vector<Alt>& alts) {
  const auto cont = b.bytes(range(0x80, 0xBF));
  alts.push_back({b.bytes(range(0xC2, 0xDF)), cont});
  alts.push_back({b.byte(0xE0), b.bytes(range(0xA0, 0xBF)), cont});
  ByteSet e3;
  e3.set_range(0xE1, 0xEC);
  e3.set_range(0xEE, 0xEF);
  alts.push_back({b.bytes(e3), cont, cont});
  alts.push_back({b.byte(0xED), b.bytes(range(0x80, 0x9F)), cont});
  alts.push_back({b.byte(0xF0), b.bytes(range(0x90, 0xBF)), cont, cont});
  alts.push_back({b.bytes(range(0xF1, 0xF3)), cont, cont, cont});
  alts.push_back({b.byte(0xF4), b.bytes(range(0x80, 0x8F)), cont, cont});
}

const char* short_escape(uint8_t c) {
  switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\f': return "\\f";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: return nullptr;
  }
}

// `\u00XX` for a control character, either hex case.
Alt unicode_escape(GrammarBuilder& b, uint8_t c) {
  auto hex = [&](int v) {
    ByteSet s;
    const char* lo = "0123456789abcdef";
    const char* up = "0123456789ABCDEF";
    s.set(uint8_t(lo[v]));
    s.set(uint8_t(up[v]));
    return b.bytes(s);
  };
  Alt a = b.literal("\\u00");
  a.push_back(hex(c >> 4));
  a.push_back(hex(c & 15));
  return a;
}

// A set of characters: ASCII ones by bit, the non-ASCII ones either all or a list of literals.
struct CharSet {
  ByteSet ascii;
  bool all_non_ascii = false;
  std::vector<std::string> non_ascii;  // UTF-8 of single characters
};

// The rule matching one character of `cs` as written in a JSON string.
int emit_set(GrammarBuilder& b, const CharSet& cs) {
  std::vector<Alt> alts;
  ByteSet plain;
  for (int c = 0; c < 128; ++c) {
    if (!cs.ascii.has(uint8_t(c))) continue;
    if (const char* e = short_escape(uint8_t(c))) {
      alts.push_back(b.literal(e));
      if (c < 0x20) alts.push_back(unicode_escape(b, uint8_t(c)));
    } else if (c < 0x20) {
      alts.push_back(unicode_escape(b, uint8_t(c)));
    } else {
      plain.set(uint8_t(c));
      if (c == '/') alts.push_back(b.literal("\\/"));
    }
  }
  if (!plain.empty()) alts.push_back({b.bytes(plain)});
  if (cs.all_non_ascii) add_multibyte(b, alts);
  else
    for (const std::string& s : cs.non_ascii) alts.push_back(b.literal(s));
  if (alts.empty()) throw SchemaError("pattern", "the pattern has a character class that matches nothing");
  return b.rule(std::move(alts));
}

class RegexParser {
 public:
  RegexParser(GrammarBuilder& b, std::string_view p, const char* kw) : b_(b), p_(p), kw_(kw) {}

  int parse() {
    bool anchored_start = false, anchored_end = false;
    if (!p_.empty() && p_[0] == '^') {
      anchored_start = true;
      i_ = 1;
    }
    std::string_view body = p_;
    if (body.size() > i_ && body.back() == '$' && !escaped_at(body.size() - 1)) {
      anchored_end = true;
      p_ = body.substr(0, body.size() - 1);
    }
    const int core = alternation();
    if (i_ != p_.size()) fail(std::string("unexpected '") + p_[i_] + "'");
    Alt a;
    CharSet any;
    any.ascii.set_range(0, 127);
    any.all_non_ascii = true;
    const int anything = anchored_start && anchored_end ? -1 : b_.repeat(emit_set(b_, any), 0, -1);
    if (!anchored_start) a.push_back(GrammarBuilder::call(anything));
    a.push_back(GrammarBuilder::call(core));
    if (!anchored_end) a.push_back(GrammarBuilder::call(anything));
    return b_.rule({a});
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw SchemaError(kw_, std::string("unsupported ") + kw_ + " '" + std::string(p_) + "': " + why);
  }
  bool escaped_at(size_t pos) const {
    size_t n = 0;
    while (pos > n && p_[pos - n - 1] == '\\') ++n;
    return n % 2 == 1;
  }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return p_[i_]; }

  int alternation() {
    std::vector<Alt> alts;
    alts.push_back({GrammarBuilder::call(concat())});
    while (more() && peek() == '|') {
      ++i_;
      alts.push_back({GrammarBuilder::call(concat())});
    }
    return alts.size() == 1 ? alts[0][0].arg : b_.rule(std::move(alts));
  }

  int concat() {
    Alt a;
    while (more() && peek() != '|' && peek() != ')') a.push_back(GrammarBuilder::call(quantified()));
    return b_.rule({a});
  }

  int number() {
    if (!more() || !std::isdigit(uint8_t(peek()))) fail("bad {n,m} quantifier");
    long v = 0;
    while (more() && std::isdigit(uint8_t(peek()))) {
      v = v * 10 + (peek() - '0');
      if (v > 1000) fail("a repetition count above 1000");
      ++i_;
    }
    return int(v);
  }

  int quantified() {
    const int atom_rule = atom();
    if (!more()) return atom_rule;
    int lo = 1, hi = 1;
    const char c = peek();
    if (c == '*') lo = 0, hi = -1, ++i_;
    else if (c == '+') lo = 1, hi = -1, ++i_;
    else if (c == '?') lo = 0, hi = 1, ++i_;
    else if (c == '{') {
      ++i_;
      lo = hi = number();
      if (more() && peek() == ',') {
        ++i_;
        hi = more() && peek() == '}' ? -1 : number();
      }
      if (!more() || peek() != '}') fail("bad {n,m} quantifier");
      ++i_;
      if (hi >= 0 && hi < lo) fail("a {n,m} quantifier with m < n");
    } else {
      return atom_rule;
    }
    if (more() && peek() == '?') ++i_;  // lazy: the same strings
    if (more() && (peek() == '+' || peek() == '*' || peek() == '{')) fail("a quantifier on a quantifier");
    return b_.repeat(atom_rule, lo, hi);
  }

  // Reads one UTF-8 character at i_ (already known non-ASCII).
  std::string utf8_char() {
    const uint8_t c = uint8_t(p_[i_]);
    const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (n == 1 || i_ + n > p_.size()) fail("invalid UTF-8");
    std::string s(p_.substr(i_, n));
    i_ += n;
    return s;
  }

  // An escape after '\' inside or outside a class, added to `cs`. False for a class escape that
  // is not one character (the caller rejects ranges over it).
  bool escape(CharSet& cs) {
    if (!more()) fail("a trailing backslash");
    const char c = p_[i_++];
    auto add_class = [&](const char* set, bool negate) {
      ByteSet s;
      for (const char* q = set; *q; q += 2) s.set_range(uint8_t(q[0]), uint8_t(q[1]));
      for (int x = 0; x < 128; ++x)
        if (s.has(uint8_t(x)) != negate) cs.ascii.set(uint8_t(x));
      if (negate) cs.all_non_ascii = true;
      return false;
    };
    switch (c) {
      case 'd': return add_class("09", false);
      case 'D': return add_class("09", true);
      case 'w': return add_class("azAZ09__", false);
      case 'W': return add_class("azAZ09__", true);
      case 's': return add_class("  \t\r", false);
      case 'S': return add_class("  \t\r", true);
      case 'n': cs.ascii.set('\n'); return true;
      case 't': cs.ascii.set('\t'); return true;
      case 'r': cs.ascii.set('\r'); return true;
      case 'f': cs.ascii.set('\f'); return true;
      case 'v': cs.ascii.set('\v'); return true;
      case 'u': {
        if (i_ + 4 > p_.size()) fail("a bad \\u escape");
        const unsigned v = unsigned(std::stoul(std::string(p_.substr(i_, 4)), nullptr, 16));
        i_ += 4;
        if (v < 128) {
          cs.ascii.set(uint8_t(v));
        } else {
          std::string s;
          if (v < 0x800) {
            s += char(0xC0 | (v >> 6));
          } else {
            s += char(0xE0 | (v >> 12));
            s += char(0x80 | ((v >> 6) & 63));
          }
          s += char(0x80 | (v & 63));
          cs.non_ascii.push_back(s);
        }
        return true;
      }
      default:
        if (std::isalnum(uint8_t(c))) fail(std::string("the escape \\") + c);
        cs.ascii.set(uint8_t(c));
        return true;
    }
  }

  CharSet char_class() {
    CharSet cs;
    bool negate = false;
    if (more() && peek() == '^') negate = true, ++i_;
    bool first = true;
    int prev = -1;  // the last single ASCII character, for a range
    while (more() && (peek() != ']' || first)) {
      first = false;
      char c = peek();
      if (c == '-' && prev >= 0 && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        int hi;
        if (peek() == '\\') {
          ++i_;
          CharSet one;
          if (!escape(one)) fail("a range ending in a class escape");
          hi = -1;
          for (int x = 0; x < 128; ++x)
            if (one.ascii.has(uint8_t(x))) hi = x;
          if (hi < 0) fail("a range over non-ASCII characters");
        } else if (uint8_t(peek()) >= 128) {
          fail("a range over non-ASCII characters");
        } else {
          hi = uint8_t(p_[i_++]);
        }
        if (hi < prev) fail("a reversed range");
        cs.ascii.set_range(uint8_t(prev), uint8_t(hi));
        prev = -1;
        continue;
      }
      if (c == '[' && i_ + 1 < p_.size() && p_[i_ + 1] == ':') fail("POSIX classes");
      if (c == '\\') {
        ++i_;
        CharSet before = cs;
        if (escape(cs)) {
          prev = -1;
          for (int x = 0; x < 128; ++x)
            if (cs.ascii.has(uint8_t(x)) && !before.ascii.has(uint8_t(x))) prev = x;
        } else {
          prev = -1;
        }
      } else if (uint8_t(c) >= 128) {
        cs.non_ascii.push_back(utf8_char());
        prev = -1;
      } else {
        cs.ascii.set(uint8_t(c));
        prev = uint8_t(c);
        ++i_;
      }
    }
    if (!more()) fail("an unclosed '['");
    ++i_;  // ']'
    if (negate) {
      if (!cs.non_ascii.empty()) fail("a negated class with non-ASCII characters");
      CharSet n;
      for (int x = 0; x < 128; ++x)
        if (!cs.ascii.has(uint8_t(x))) n.ascii.set(uint8_t(x));
      n.all_non_ascii = !cs.all_non_ascii;
      return n;
    }
    return cs;
  }

  int atom() {
    const char c = peek();
    if (c == '(') {
      if (++depth_ > 32) fail("groups nested deeper than 32");
      ++i_;
      if (more() && peek() == '?') {
        if (i_ + 1 < p_.size() && p_[i_ + 1] == ':') i_ += 2;
        else fail("lookaround and named groups");
      }
      const int r = alternation();
      if (!more() || peek() != ')') fail("an unclosed '('");
      ++i_;
      --depth_;
      return r;
    }
    CharSet cs;
    if (c == '[') {
      ++i_;
      cs = char_class();
    } else if (c == '.') {
      ++i_;
      cs.ascii.set_range(0, 127);
      cs.ascii.w[0] &= ~(uint64_t(1) << '\n');
      cs.all_non_ascii = true;
    } else if (c == '\\') {
      ++i_;
      if (more() && (peek() == 'b' || peek() == 'B')) fail("word boundaries");
      if (more() && std::isdigit(uint8_t(peek()))) fail("backreferences");
      escape(cs);
    } else if (c == '^' || c == '$') {
      fail("an anchor inside the pattern");
    } else if (c == '*' || c == '+' || c == '?' || c == '{') {
      fail("a quantifier with nothing to repeat");
    } else if (uint8_t(c) >= 128) {
      cs.non_ascii.push_back(utf8_char());
    } else {
      cs.ascii.set(uint8_t(c));
      ++i_;
    }
    return emit_set(b_, cs);
  }

  GrammarBuilder& b_;
  std::string_view p_;
  const char* kw_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

int compile_pattern(GrammarBuilder& b, std::string_view pattern, const char* keyword) {
  return RegexParser(b, pattern, keyword).parse();
}

int json_string_char(GrammarBuilder& b) {
  std::vector<Alt> alts;
  ByteSet plain;
  plain.set_range(0x20, 0x7F);
  plain.w['"' >> 6] &= ~(uint64_t(1) << ('"' & 63));
  plain.w['\\' >> 6] &= ~(uint64_t(1) << ('\\' & 63));
  alts.push_back({b.bytes(plain)});
  add_multibyte(b, alts);
  ByteSet simple;
  for (char c : std::string("\"\\/bfnrt")) simple.set(uint8_t(c));
  alts.push_back({b.byte('\\'), b.bytes(simple)});
  ByteSet hex;
  hex.set_range('0', '9');
  hex.set_range('a', 'f');
  hex.set_range('A', 'F');
  const auto h = b.bytes(hex);
  alts.push_back({b.byte('\\'), b.byte('u'), h, h, h, h});
  return b.rule(std::move(alts));
}

}  // namespace pensieve
