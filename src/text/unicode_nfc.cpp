// NFC normalization: decompose canonically (recursively, Hangul algorithmically), put combining
// marks in canonical order, then recompose starter + mark pairs as the standard's algorithm does.
#include <algorithm>
#include <vector>

#include "text/unicode.h"
#include "text/unicode_nfc_data.h"

namespace pensieve::utf8 {

namespace {

using namespace nfc_data;

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr uint32_t kSCount = kLCount * kNCount;

uint8_t combining_class(uint32_t cp) {
  const auto* end = kCombiningClasses + kNumCombiningClasses;
  const auto* it = std::upper_bound(kCombiningClasses, end, cp,
                                    [](uint32_t c, const CombiningClassRange& r) { return c < r.lo; });
  if (it == kCombiningClasses) return 0;
  --it;
  return cp <= it->hi ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = kDecompositions + kNumDecompositions;
  const auto* it = std::lower_bound(kDecompositions, end, cp,
                                    [](const Decomposition& d, uint32_t c) { return d.cp < c; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  decompose(it->first, out);
  if (it->second) decompose(it->second, out);
}

// The primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = kCompositions + kNumCompositions;
  const auto* it = std::lower_bound(kCompositions, end, std::make_pair(a, b),
                                    [](const Composition& c, const std::pair<uint32_t, uint32_t>& k) {
                                      return c.first != k.first ? c.first < k.first : c.second < k.second;
                                    });
  return (it != end && it->first == a && it->second == b) ? it->composed : 0;
}

void canonical_order(std::vector<uint32_t>& cps) {
  // Stable sort of each run of non-starters by combining class.
  size_t i = 0;
  while (i < cps.size()) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
}

void canonical_compose(std::vector<uint32_t>& cps) {
  if (cps.empty()) return;
  size_t starter = SIZE_MAX;
  uint8_t last_cc = 0;
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    const uint8_t cc = combining_class(cp);
    if (starter != SIZE_MAX) {
      const bool blocked = out.size() - 1 != starter && (last_cc == 0 || last_cc >= cc);
      if (!blocked) {
        if (uint32_t c = compose(out[starter], cp)) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (cc == 0) starter = out.size();
    last_cc = cc;
    out.push_back(cp);
  }
  cps.swap(out);
}

}  // namespace

std::string nfc(std::string_view s) {
  // Fast path: code points below U+0300 are never changed by NFC (no decompositions that recompose
  // differently, no combining marks), and most text is entirely such.
  bool simple = true;
  for (size_t i = 0; i < s.size() && simple; ++i) {
    const uint8_t b = uint8_t(s[i]);
    if (b >= 0xCC) simple = false;  // lead bytes of U+0300 and above
  }
  if (simple) return std::string(s);
  std::string out;
  out.reserve(s.size());
  std::vector<uint32_t> run;
  auto flush = [&] {
    canonical_order(run);
    canonical_compose(run);
    for (uint32_t cp : run) append(out, cp);
    run.clear();
  };
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    const uint32_t cp = decode(s, pos);
    if (cp == 0xFFFD && pos - start == 1 && uint8_t(s[start]) >= 0x80) {
      flush();
      out += s[start];  // keep an invalid byte as it is
      continue;
    }
    decompose(cp, run);
  }
  flush();
  return out;
}

}  // namespace pensieve::utf8
