// Quantize/dequantize: every block type round-trips random weights within an error bound, beats
// plain max-abs rounding where it searches scales, decodes hand-built GGUF blocks as the format
// defines them, and rejects bad sizes with an Error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/kernels_ref.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {
namespace {

namespace K = kernels;

// Weight-like data: gaussian with a few outliers, the case that separates good quantizers.
std::vector<float> weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> x(size_t(n), 0.0f);
  for (auto& v : x) v = g(rng);
  for (int64_t i = 0; i < n; i += 97) x[size_t(i)] *= 6.0f;
  return x;
}

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> round_trip(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_size(t, int64_t(x.size())));
  EXPECT_EQ(K::quantize_row(t, x.data(), q.data(), int64_t(x.size())), q.size());
  std::vector<float> y(x.size());
  K::dequantize_row(t, q.data(), y.data(), int64_t(x.size()));
  return y;
}

struct Bound {
  GgmlType type;
  double max_rel_rms;  // relative RMS error on the weight-like data above
};

// Each bound is the uniform-rounding error step/sqrt(12) of its bit width for a block whose range
// is about +-3 sigma, relative to sigma, with ~25% headroom: b bits over 6 sigma give a step of
// 6/(2^b - 1) sigma. Q8_0: 0.0136 -> 0.02; 6 bits: 0.027 -> 0.035; 5 bits: 0.056 -> 0.07;
// 4 bits: 0.115 -> 0.14; 3 bits (Q3_K): 0.247 -> 0.30; 2 bits (Q2_K, affine over 16): 0.58 -> 0.60.
// Half precision and bfloat16 carry 11 and 8 significant bits.
const Bound kBounds[] = {
    {GgmlType::F32, 0.0},      {GgmlType::F16, 5e-4},     {GgmlType::BF16, 4e-3},
    {GgmlType::Q8_0, 0.02},    {GgmlType::Q8_K, 0.02},    {GgmlType::Q8_A, 0.02},
    {GgmlType::Q6_K, 0.035},   {GgmlType::Q5_0, 0.07},    {GgmlType::Q5_1, 0.07},
    {GgmlType::Q5_K, 0.07},    {GgmlType::Q4_0, 0.14},    {GgmlType::Q4_1, 0.14},
    {GgmlType::Q4_K, 0.14},    {GgmlType::Q4_A, 0.14},    {GgmlType::Q3_K, 0.30},    {GgmlType::Q2_K, 0.60},
};

TEST(Quant, RoundTripWithinBound) {
  const auto x = weights(256 * 24, 1);
  for (const auto& b : kBounds) {
    const double err = rel_rms(x, round_trip(b.type, x));
    EXPECT_LE(err, b.max_rel_rms) << type_name(b.type);
    if (b.type != GgmlType::F32) {
      EXPECT_GT(err, 0.0) << type_name(b.type);
    }
    std::printf("  %-5s rel rms %.5f\n", std::string(type_name(b.type)).c_str(), err);
  }
}

// Plain max-abs rounding, the baseline that the scale search has to beat.
double naive_symmetric_error(const std::vector<float>& x, int block, int nmax) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size(); b += size_t(block)) {
    float amax = 0;
    for (int j = 0; j < block; ++j) amax = std::fmax(amax, std::fabs(x[b + size_t(j)]));
    const float d = amax / float(nmax);
    for (int j = 0; j < block; ++j)
      y[b + size_t(j)] = d * std::fmin(float(nmax), std::nearbyint(x[b + size_t(j)] / d));
  }
  return rel_rms(x, y);
}

TEST(Quant, ScaleSearchBeatsMaxAbs) {
  const auto x = weights(256 * 16, 2);
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q4_0, x)), naive_symmetric_error(x, 32, 7));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q5_0, x)), naive_symmetric_error(x, 32, 15));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q4_K, x)), naive_symmetric_error(x, 32, 7));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q6_K, x)), naive_symmetric_error(x, 16, 31));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q3_K, x)), naive_symmetric_error(x, 16, 3));
}

TEST(Quant, AffineTypesFollowAnOffset) {
  // All-positive data: affine types must use their min, symmetric ones cannot do as well.
  auto x = weights(256 * 8, 3);
  for (auto& v : x) v = std::fabs(v) + 0.05f;
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q4_1, x)), rel_rms(x, round_trip(GgmlType::Q4_0, x)));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q5_1, x)), rel_rms(x, round_trip(GgmlType::Q5_0, x)));
  EXPECT_LT(rel_rms(x, round_trip(GgmlType::Q8_A, x)), 0.01);
}

TEST(Quant, ZerosStayZero) {
  for (const auto& b : kBounds) {
    std::vector<float> z(512, 0.0f);
    const auto y = round_trip(b.type, z);
    for (float v : y) EXPECT_EQ(v, 0.0f) << type_name(b.type);
  }
}

TEST(Quant, NonFiniteInputDoesNotCrash) {
  auto x = weights(512, 4);
  x[3] = NAN;
  x[300] = INFINITY;
  for (const auto& b : kBounds) round_trip(b.type, x);  // any value, but no UB or crash
}

TEST(Quant, PartialBlocksAndUnknownTypesAreErrors) {
  std::vector<float> x(100);
  std::vector<uint8_t> q(1024);
  EXPECT_THROW(K::quantize_row(GgmlType::Q4_0, x.data(), q.data(), 33), Error);
  EXPECT_THROW(K::dequantize_row(GgmlType::Q6_K, q.data(), x.data(), 32), Error);
  EXPECT_THROW(K::dequantize_row(GgmlType(77), q.data(), x.data(), 32), Error);
  EXPECT_THROW(K::quantize_row(GgmlType::Q8_1, x.data(), q.data(), 32), Error);
}

// Hand-built blocks decoded as the GGUF format defines them.
TEST(Quant, DecodesHandBuiltBlocks) {
  float y[256];
  block_q4_0 b40{};
  b40.d = f32_to_f16(0.5f);
  b40.qs[0] = 0x2F;  // element 0: 15 - 8 = 7, element 16: 2 - 8 = -6
  K::dequantize_row(GgmlType::Q4_0, &b40, y, 32);
  EXPECT_EQ(y[0], 3.5f);
  EXPECT_EQ(y[16], -3.0f);
  EXPECT_EQ(y[1], -4.0f);

  block_q5_0 b50{};
  b50.d = f32_to_f16(1.0f);
  b50.qs[1] = 0x03;
  b50.qh[0] = 0x02;  // element 1 high bit
  b50.qh[2] = 0x01;  // element 16 high bit
  K::dequantize_row(GgmlType::Q5_0, &b50, y, 32);
  EXPECT_EQ(y[1], float(16 + 3 - 16));
  EXPECT_EQ(y[16], float(16 - 16));
  EXPECT_EQ(y[0], -16.0f);

  block_q4_K b4k{};
  b4k.d = f32_to_f16(1.0f);
  b4k.dmin = f32_to_f16(1.0f);
  b4k.scales[1] = 2;          // sub-block 1 scale
  b4k.scales[5] = 3;          // sub-block 1 min
  b4k.scales[9] = 0x45;       // sub-block 5: scale low 4 bits 5, min low 4 bits 4
  b4k.scales[1] |= 0x40;      // sub-block 5 scale bit 4
  b4k.qs[0] = 0x70;           // element 32 (sub-block 1, high nibble of byte 0) = 7
  b4k.qs[64] = 0x09;          // element 128 (sub-block 4, low nibble) = 9, element 160 = 0
  b4k.qs[65] = 0x10;          // element 161 (sub-block 5, high nibble of byte 65) = 1
  K::dequantize_row(GgmlType::Q4_K, &b4k, y, 256);
  EXPECT_EQ(y[32], 2.0f * 7 - 3);
  EXPECT_EQ(y[161], 21.0f * 1 - 4);
  EXPECT_EQ(y[160], -4.0f);
  EXPECT_EQ(y[128], 0.0f);  // sub-block 4 has scale 0, min 0

  block_q6_K b6{};
  b6.d = f32_to_f16(1.0f);
  for (auto& s : b6.scales) s = 1;
  b6.scales[6] = -2;      // elements 96..111
  b6.ql[32] = 0xA0;       // element 96 (k=3): high nibble of ql[32] = 10
  b6.qh[0] = 0x80;        // element 96 high bits 2 -> 32 + 10
  K::dequantize_row(GgmlType::Q6_K, &b6, y, 256);
  EXPECT_EQ(y[96], -2.0f * (42 - 32));
  EXPECT_EQ(y[0], -32.0f);

  block_q3_K b3{};
  b3.d = f32_to_f16(1.0f);
  for (int j = 0; j < 8; ++j) b3.scales[j] = 0x00;
  b3.scales[8] = 0xAA;    // sub-blocks 0, 4, 8, 12 get high bits 2 (0 after the -32 bias)...
  b3.scales[0] = 0x01;    // ... and sub-block 0 low bits 1: scale 33 - 32 = 1
  b3.qs[0] = 0x03;        // element 0 low bits 3
  b3.hmask[0] = 0x01;     // element 0 third bit set -> 3
  b3.qs[1] = 0x01;        // element 1 low bits 1, third bit clear -> 1 - 4
  K::dequantize_row(GgmlType::Q3_K, &b3, y, 256);
  EXPECT_EQ(y[0], 3.0f);
  EXPECT_EQ(y[1], -3.0f);

  block_q2_K b2{};
  b2.d = f32_to_f16(1.0f);
  b2.dmin = f32_to_f16(0.5f);
  b2.scales[2] = 0x43;    // elements 32..47: scale 3, min 4
  b2.qs[0] = 0x0C;        // element 32 (shift 2 of qs[0]) = 3
  K::dequantize_row(GgmlType::Q2_K, &b2, y, 256);
  EXPECT_EQ(y[32], 9.0f - 2.0f);
  EXPECT_EQ(y[0], 0.0f);
}

TEST(Quant, Q8KBlockSums) {
  const auto x = weights(512, 5);
  std::vector<block_q8_K> q(2);
  K::quantize_row(GgmlType::Q8_K, x.data(), q.data(), 512);
  for (const auto& b : q)
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += b.qs[16 * g + j];
      EXPECT_EQ(b.bsums[g], s);
    }
}

}  // namespace
}  // namespace pensieve
