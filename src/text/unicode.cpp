#include "text/unicode.h"

#include <array>

namespace pensieve::utf8 {

int sequence_length(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

namespace {

// Checks the sequence of `len` bytes at `p` (len from sequence_length) and returns its code point,
// or -1 when it is malformed (bad continuation, overlong, surrogate, beyond U+10FFFF).
int64_t decode_checked(const uint8_t* p, int len) {
  if (len == 1) return p[0] < 0x80 ? int64_t(p[0]) : -1;
  uint32_t cp = p[0] & (0x7F >> len);
  for (int i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  return cp;
}

// True when the (fewer than needed) bytes at `p` could still begin a valid sequence.
bool valid_truncated(const uint8_t* p, size_t have, int len) {
  for (size_t i = 1; i < have; ++i)
    if ((p[i] & 0xC0) != 0x80) return false;
  // Reject leads that can never be valid whatever follows.
  if (p[0] == 0xC0 || p[0] == 0xC1 || p[0] > 0xF4) return false;
  if (have >= 2) {
    if (p[0] == 0xE0 && p[1] < 0xA0) return false;  // overlong
    if (p[0] == 0xED && p[1] > 0x9F) return false;  // surrogate
    if (p[0] == 0xF0 && p[1] < 0x90) return false;  // overlong
    if (p[0] == 0xF4 && p[1] > 0x8F) return false;  // > U+10FFFF
  }
  return have < size_t(len);
}

}  // namespace

uint32_t decode(std::string_view s, size_t& pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  const int len = sequence_length(p[0]);
  if (pos + len <= s.size()) {
    const int64_t cp = decode_checked(p, len);
    if (cp >= 0) {
      pos += len;
      return uint32_t(cp);
    }
  }
  pos += 1;
  return 0xFFFD;
}

void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string encode(uint32_t cp) {
  std::string s;
  append(s, cp);
  return s;
}

size_t valid_prefix(std::string_view s, bool* incomplete_tail) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t pos = 0;
  if (incomplete_tail) *incomplete_tail = false;
  while (pos < s.size()) {
    const int len = sequence_length(p[pos]);
    if (pos + len > s.size()) {
      if (incomplete_tail) *incomplete_tail = valid_truncated(p + pos, s.size() - pos, len);
      return pos;
    }
    if (decode_checked(p + pos, len) < 0) return pos;
    pos += len;
  }
  return pos;
}

size_t invalid_run_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const int len = sequence_length(p[0]);
  size_t k = 1;
  while (k < size_t(len) && k < s.size() && valid_truncated(p, k + 1, len + 1)) ++k;
  return k;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t n = valid_prefix(s.substr(pos));
    out.append(s.substr(pos, n));
    pos += n;
    if (pos < s.size()) {
      append(out, 0xFFFD);
      pos += invalid_run_length(s.substr(pos));
    }
  }
  return out;
}

}  // namespace pensieve::utf8

namespace pensieve::byte_level {

namespace {

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> to_byte{};  // every image lies below U+0200
  ByteMap() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? uint32_t(b) : next++;
      to_byte[to_cp[b]] = int16_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return byte_map().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 512 ? byte_map().to_byte[cp] : -1; }

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8::append(out, byte_to_codepoint(b));
  return out;
}

std::string decode(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    const size_t start = pos;
    const uint32_t cp = utf8::decode(token, pos);
    const int b = codepoint_to_byte(cp);
    if (b >= 0)
      out += char(b);
    else
      out.append(token.substr(start, pos - start));
  }
  return out;
}

}  // namespace pensieve::byte_level
