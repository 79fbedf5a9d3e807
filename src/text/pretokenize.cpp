#include "text/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include "text/unicode.h"
#include "util/error.h"

namespace pensieve {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

const char* const kPunctuationPattern = R"([\p{P}!-/:-@\[-`{-~])";

PreTokenStep PreTokenStep::split(const std::string& pattern, SplitBehavior b) {
  PreTokenStep s;
  s.kind = Kind::Split;
  s.regex = std::make_shared<Regex>(pattern);
  s.behavior = b;
  return s;
}

PreTokenStep PreTokenStep::byte_level(bool use_regex) {
  PreTokenStep s;
  s.kind = Kind::ByteLevel;
  if (use_regex) s.regex = std::make_shared<Regex>(kGpt2Pattern);
  return s;
}

namespace {


PreTokenStep split_step(const std::string& pattern, SplitBehavior b = SplitBehavior::Isolated) {
  return PreTokenStep::split(pattern, b);
}

PreTokenStep byte_level_step(bool use_regex) { return PreTokenStep::byte_level(use_regex); }

// Applies a split behaviour to the (range, is_match) sequence of one piece (HF semantics).
using Span = std::pair<size_t, size_t>;
std::vector<Span> apply_behavior(const std::vector<std::pair<Span, bool>>& parts,
                                 SplitBehavior behavior) {
  std::vector<Span> out;
  bool prev_match = false;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (auto& [r, m] : parts)
        if (!m) out.push_back(r);
      break;
    case SplitBehavior::Isolated:
      for (auto& [r, m] : parts) out.push_back(r);
      break;
    case SplitBehavior::MergedWithPrevious:
      for (auto& [r, m] : parts) {
        if (m && !prev_match && !out.empty())
          out.back().second = r.second;
        else
          out.push_back(r);
        prev_match = m;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (size_t i = parts.size(); i-- > 0;) {
        auto& [r, m] = parts[i];
        if (m && !prev_match && !out.empty())
          out.back().first = r.first;
        else
          out.push_back(r);
        prev_match = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    case SplitBehavior::Contiguous:
      for (size_t i = 0; i < parts.size(); ++i) {
        auto& [r, m] = parts[i];
        if (i > 0 && m == prev_match)
          out.back().second = r.second;
        else
          out.push_back(r);
        prev_match = m;
      }
      break;
  }
  return out;
}

void split_piece(const PreTokenStep& step, std::string_view piece, std::vector<std::string>& out) {
  std::vector<std::pair<Span, bool>> parts;
  size_t prev = 0;
  for (auto [b, e] : step.regex->find_all(piece)) {
    if (b > prev) parts.push_back({{prev, b}, false});
    parts.push_back({{b, e}, true});
    prev = e;
  }
  if (prev < piece.size()) parts.push_back({{prev, piece.size()}, false});
  if (step.invert)
    for (auto& p : parts) p.second = !p.second;
  for (auto [b, e] : apply_behavior(parts, step.behavior))
    if (e > b) out.emplace_back(piece.substr(b, e - b));
}

SplitBehavior behavior_from_json(const nlohmann::json& j, const char* where) {
  const std::string b = j.is_string() ? j.get<std::string>() : "Isolated";
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(std::string("tokenizer.json: ") + where + ": unknown split behavior '" + b + "'");
}

// Escapes a literal so that PCRE2 matches it verbatim.
std::string quote_literal(const std::string& s) { return "\\Q" + s + "\\E"; }

void steps_from_json(const nlohmann::json& j, std::vector<PreTokenStep>& steps) {
  if (j.is_null()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : j.at("pretokenizers")) steps_from_json(sub, steps);
  } else if (type == "Split") {
    const auto& pat = j.at("pattern");
    const std::string re = pat.contains("Regex") ? pat.at("Regex").get<std::string>()
                                                 : quote_literal(pat.at("String").get<std::string>());
    PreTokenStep s = split_step(re, behavior_from_json(j.value("behavior", nlohmann::json()), "Split"));
    s.invert = j.value("invert", false);
    steps.push_back(std::move(s));
  } else if (type == "ByteLevel") {
    PreTokenStep s = byte_level_step(j.value("use_regex", true));
    s.add_prefix_space = j.value("add_prefix_space", false);
    steps.push_back(std::move(s));
  } else if (type == "Digits") {
    steps.push_back(split_step(j.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)"));
  } else if (type == "Punctuation") {
    steps.push_back(split_step(kPunctuationPattern,
                               behavior_from_json(j.value("behavior", nlohmann::json()), "Punctuation")));
  } else if (type == "Whitespace") {
    steps.push_back(split_step(R"(\w+|[^\w\s]+)"));
    steps.back().invert = true;
    steps.back().behavior = SplitBehavior::Removed;
  } else if (type == "WhitespaceSplit") {
    steps.push_back(split_step(R"(\s+)", SplitBehavior::Removed));
  } else if (type == "Metaspace") {
    PreTokenStep s;
    s.kind = PreTokenStep::Kind::Metaspace;
    s.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    const std::string scheme = j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    s.prepend = scheme == "first"   ? PreTokenStep::Prepend::First
                : scheme == "never" ? PreTokenStep::Prepend::Never
                                    : PreTokenStep::Prepend::Always;
    s.metaspace_split = j.value("split", true);
    steps.push_back(std::move(s));
  } else {
    throw Error("tokenizer.json: unsupported pre_tokenizer type '" + type + "'");
  }
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset,
                                   nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error("pre-tokenizer regex /" + pattern + "/ does not compile at offset " +
                std::to_string(offset) + ": " + reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t start = 0;
  while (start <= s.size()) {
    const int rc = pcre2_match(code, subject, s.size(), start, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // A resource limit on pathological input: failing loudly beats tokenizing it differently.
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      pcre2_match_data_free(md);
      throw Error("pre-tokenizer regex /" + pattern_ + "/ failed on the input: " +
                  reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.push_back({b, e});
      start = e;
    } else {
      // Empty match: step over one character so the scan advances.
      if (start >= s.size()) break;
      start += utf8::sequence_length(uint8_t(s[start]));
    }
  }
  pcre2_match_data_free(md);
  return out;
}

void apply_normalizers(const std::vector<Normalizer>& steps, std::string& text) {
  for (const auto& n : steps) {
    switch (n.kind) {
      case Normalizer::Kind::Prepend:
        if (!text.empty()) text.insert(0, n.a);
        break;
      case Normalizer::Kind::Replace: {
        if (n.a.empty()) break;
        std::string out;
        out.reserve(text.size());
        size_t pos = 0;
        for (size_t hit; (hit = text.find(n.a, pos)) != std::string::npos; pos = hit + n.a.size()) {
          out.append(text, pos, hit - pos);
          out += n.b;
        }
        out.append(text, pos);
        text = std::move(out);
        break;
      }
      case Normalizer::Kind::Lowercase:
        for (auto& c : text)
          if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
        break;
      case Normalizer::Kind::Strip: {
        size_t b = 0, e = text.size();
        auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
        if (n.strip_left)
          while (b < e && ws(text[b])) ++b;
        if (n.strip_right)
          while (e > b && ws(text[e - 1])) --e;
        text = text.substr(b, e - b);
        break;
      }
      case Normalizer::Kind::Nfc:
        text = utf8::nfc(text);
        break;
    }
  }
}

PreTokenizer PreTokenizer::from_hf_json(const nlohmann::json& j) {
  std::vector<PreTokenStep> steps;
  steps_from_json(j, steps);
  return PreTokenizer(std::move(steps));
}

bool PreTokenizer::maps_bytes() const {
  for (const auto& s : steps_)
    if (s.kind == PreTokenStep::Kind::ByteLevel) return true;
  return false;
}

std::vector<std::string> PreTokenizer::split(std::string_view text, bool at_start) const {
  std::vector<std::string> pieces;
  pieces.emplace_back(text);
  std::vector<std::string> next;
  for (const auto& step : steps_) {
    next.clear();
    for (const auto& piece : pieces) {
      switch (step.kind) {
        case PreTokenStep::Kind::Split:
          split_piece(step, piece, next);
          break;
        case PreTokenStep::Kind::ByteLevel: {
          std::string p = piece;
          if (step.add_prefix_space && !p.empty() && p[0] != ' ') p.insert(0, 1, ' ');
          if (step.regex) {
            std::vector<std::string> sub;
            split_piece(step, p, sub);
            for (auto& s : sub) next.push_back(byte_level::encode(s));
          } else {
            next.push_back(byte_level::encode(p));
          }
          break;
        }
        case PreTokenStep::Kind::Metaspace: {
          std::string p;
          const bool prepend = step.prepend == PreTokenStep::Prepend::Always ||
                               (step.prepend == PreTokenStep::Prepend::First && at_start);
          for (char c : piece) {
            if (c == ' ')
              p += step.replacement;
            else
              p += c;
          }
          if (prepend && p.compare(0, step.replacement.size(), step.replacement) != 0)
            p.insert(0, step.replacement);
          if (!step.metaspace_split) {
            next.push_back(std::move(p));
            break;
          }
          // Split before every replacement character (HF: MergedWithNext on the replacement).
          size_t b = 0;
          for (size_t hit; (hit = p.find(step.replacement, b + 1)) != std::string::npos; b = hit)
            next.push_back(p.substr(b, hit - b));
          if (b < p.size()) next.push_back(p.substr(b));
          break;
        }
      }
    }
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace pensieve
