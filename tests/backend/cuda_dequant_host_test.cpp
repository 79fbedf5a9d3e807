// The CUDA backend's dequantization (backend/cuda/cuda_kernels.cuh) compiled as host code: every
// 32-element sub-block of every weight type must equal the CPU's dequantize_row exactly. Runs on
// any machine, GPU or not; the device build of the same source is checked by test_backend's
// CudaOps tests where a GPU is present.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cuda/cuda_kernels.cuh"
#include "kernels/kernels.h"

namespace pensieve {
namespace {

template <GgmlType T>
void check_type(int cols, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 0.7f);
  const int rows = 3;
  std::vector<float> src(size_t(rows) * cols);
  for (float& x : src) x = d(rng);
  const size_t rb = row_size(T, cols);
  std::vector<uint8_t> bytes(rb * rows + 16);
  for (int r = 0; r < rows; ++r) kernels::quantize_row(T, src.data() + size_t(r) * cols, bytes.data() + rb * r, cols);
  for (int r = 0; r < rows; ++r) {
    std::vector<float> want(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
    kernels::dequantize_row(T, bytes.data() + rb * r, want.data(), cols);
    for (int s = 0; s < cols / 32; ++s) cuda::dequant32<T>(bytes.data() + rb * r, s, got.data() + s * 32);
    for (int c = 0; c < cols; ++c)
      ASSERT_EQ(got[size_t(c)], want[size_t(c)]) << type_name(T) << " row " << r << " element " << c;
  }
}

TEST(CudaDequantHost, EverySubBlockOfEveryTypeEqualsTheCpu) {
  std::mt19937 rng(5);
  for (int cols : {256, 768}) {
    check_type<GgmlType::F32>(cols, rng);
    check_type<GgmlType::F16>(cols, rng);
    check_type<GgmlType::BF16>(cols, rng);
    check_type<GgmlType::Q4_0>(cols, rng);
    check_type<GgmlType::Q4_1>(cols, rng);
    check_type<GgmlType::Q5_0>(cols, rng);
    check_type<GgmlType::Q5_1>(cols, rng);
    check_type<GgmlType::Q8_0>(cols, rng);
    check_type<GgmlType::Q8_A>(cols, rng);
    check_type<GgmlType::Q4_A>(cols, rng);
    check_type<GgmlType::Q2_K>(cols, rng);
    check_type<GgmlType::Q3_K>(cols, rng);
    check_type<GgmlType::Q4_K>(cols, rng);
    check_type<GgmlType::Q5_K>(cols, rng);
    check_type<GgmlType::Q6_K>(cols, rng);
  }
}

}  // namespace
}  // namespace pensieve
