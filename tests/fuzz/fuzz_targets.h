// The fuzz targets: each feeds arbitrary bytes to one parser the way Pensieve itself calls it.
// The libFuzzer binaries (-DPENSIEVE_FUZZ=ON, scripts/fuzz.sh) and the regression test that
// replays tests/fuzz/regressions/<name>/* share these functions. A target returns normally for
// every input: the parsers may only reject bad input with pensieve::Error (or ApiError), which a
// target catches; anything else (a crash, a sanitizer report, another exception) is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace pensieve::fuzz {

struct Target {
  const char* name;  // its folder under tests/fuzz/regressions and under the fuzz corpora
  void (*run)(const uint8_t* data, size_t size);
};

const std::vector<Target>& targets();
const Target* find_target(std::string_view name);

}  // namespace pensieve::fuzz
