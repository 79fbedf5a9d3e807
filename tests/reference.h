// Comparing our logits with the reference logits in tests/data: relative L2 error over the
// whole [n, vocab] matrix and argmax agreement at every position.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::test {

struct Reference {
  std::string name;                   // "len7"
  std::vector<int32_t> input_ids;
  std::vector<int32_t> greedy_next16;  // empty when the reference has none
  std::vector<float> logits;          // [input_ids.size(), vocab]
};

inline std::vector<Reference> read_references(const std::filesystem::path& dir) {
  std::ifstream in(dir / "reference.json");
  if (!in) throw std::runtime_error("cannot read " + (dir / "reference.json").string());
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Reference> out;
  for (const auto& [name, r] : j.at("refs").items()) {
    Reference ref;
    ref.name = name;
    ref.input_ids = r.at("input_ids").get<std::vector<int32_t>>();
    if (r.contains("greedy_next16")) ref.greedy_next16 = r["greedy_next16"].get<std::vector<int32_t>>();
    const auto logits_path = dir / ("ref_logits_" + name + ".f32");
    std::ifstream f(logits_path, std::ios::binary | std::ios::ate);
    if (!f) throw std::runtime_error("cannot read " + logits_path.string());
    const auto bytes = size_t(f.tellg());
    ref.logits.resize(bytes / sizeof(float));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(ref.logits.data()), std::streamsize(bytes));
    out.push_back(std::move(ref));
  }
  return out;
}

struct Comparison {
  double rel_l2 = 0;
  int argmax_mismatches = 0;
  int positions = 0;
};

inline Comparison compare_logits(const std::vector<float>& got, const std::vector<float>& want,
                                 size_t vocab) {
  Comparison c;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  c.rel_l2 = got.size() == want.size() ? std::sqrt(num / std::max(den, 1e-30)) : INFINITY;
  c.positions = int(want.size() / vocab);
  for (int p = 0; p < c.positions && got.size() == want.size(); ++p) {
    auto a = got.begin() + std::ptrdiff_t(p * vocab), b = want.begin() + std::ptrdiff_t(p * vocab);
    if (std::max_element(a, a + std::ptrdiff_t(vocab)) - a != std::max_element(b, b + std::ptrdiff_t(vocab)) - b)
      ++c.argmax_mismatches;
  }
  return c;
}

}  // namespace pensieve::test
