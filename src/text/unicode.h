// UTF-8 helpers and the byte <-> printable-character mapping of byte-level BPE vocabularies.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace pensieve::utf8 {

// Length of the UTF-8 sequence that starts with lead byte `b` (1 for a stray continuation byte or an
// invalid lead, so that a scan always advances).
int sequence_length(uint8_t b);

// Decodes the code point at `pos` and advances `pos`. An invalid or truncated sequence yields
// U+FFFD and advances one byte, so untrusted text never stops a scan.
uint32_t decode(std::string_view s, size_t& pos);

void append(std::string& out, uint32_t cp);
std::string encode(uint32_t cp);

// Number of leading bytes of `s` that form complete, valid UTF-8 characters; the rest is either an
// incomplete character at the end (wait for more bytes) or invalid bytes (see `valid_prefix`).
// `incomplete_tail` is set when the bytes after the prefix are a truncated but so far valid
// character.
size_t valid_prefix(std::string_view s, bool* incomplete_tail = nullptr);

// Length of the invalid sequence at the start of `s` that one U+FFFD stands for (the maximal
// subpart of an ill-formed sequence, as the Unicode standard and Python/Rust decoders count).
size_t invalid_run_length(std::string_view s);

// Replaces every invalid byte sequence with U+FFFD (one per maximal subpart).
std::string sanitize(std::string_view s);

// Unicode Normalization Form C (canonical decomposition, then canonical composition). Text that is
// already NFC comes back unchanged; invalid bytes are kept as they are.
std::string nfc(std::string_view s);

}  // namespace pensieve::utf8

namespace pensieve::byte_level {

// GPT-2's reversible map from the 256 byte values to printable characters: bytes that are printable
// Latin-1 map to themselves, the others to U+0100 upwards in order.
uint32_t byte_to_codepoint(uint8_t b);
// -1 when `cp` is not the image of a byte.
int codepoint_to_byte(uint32_t cp);

// Maps raw bytes to the printable form vocabularies store.
std::string encode(std::string_view bytes);
// Maps a stored token back to its raw bytes; characters outside the map are kept as UTF-8.
std::string decode(std::string_view token);

}  // namespace pensieve::byte_level
