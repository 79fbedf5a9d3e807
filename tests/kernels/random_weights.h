// Random test data shared by the kernel tests: normal floats, and a weight matrix quantized from
// them with its dequantized values.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/tensor.h"

namespace pensieve::test {

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

// A weight matrix of `rows` rows in type t, from random floats.
struct Weights {
  Tensor t;
  std::vector<uint8_t> data;
  std::vector<float> deq;  // the dequantized weights, row-major
  Weights(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
    const auto w = randn(size_t(rows * cols), seed, 0.05f);
    const size_t rb = row_size(type, cols);
    data.resize(rb * size_t(rows));
    deq.resize(w.size());
    for (int64_t r = 0; r < rows; ++r) {
      kernels::quantize_row(type, w.data() + r * cols, data.data() + size_t(r) * rb, cols);
      kernels::dequantize_row(type, data.data() + size_t(r) * rb, deq.data() + r * cols, cols);
    }
    t.name = "test.weight";
    t.type = type;
    t.n_dims = 2;
    t.ne[0] = cols;
    t.ne[1] = rows;
    t.data = data.data();
    t.nbytes = data.size();
  }
};

}  // namespace pensieve::test
