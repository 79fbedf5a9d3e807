// Every AVX2 kernel against its scalar twin on random data (odd sizes, many row and token counts),
// and the quantized matmul against a float32 product over the dequantized weights under a bound
// derived from the activation rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/kernels.h"
#include "random_weights.h"
#include "kernels/kernels_avx2.h"
#include "kernels/kernels_ref.h"
#include "kernels/matmul_avx2.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {
namespace {

namespace K = kernels;
using test::randn;
using test::Weights;

#define REQUIRE_AVX2() \
  if (!cpu_features().use_avx2()) GTEST_SKIP() << "no AVX2/FMA/F16C (or PENSIEVE_NO_SIMD set)"

const int kSizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 100, 257, 3077};

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float rel, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], rel * (std::fabs(b[i]) + 1e-3f)) << what << " at " << i << " of " << a.size();
}

TEST(KernelsSimd, VectorOpsMatchReference) {
  REQUIRE_AVX2();
  for (int n : kSizes) {
    const auto x = randn(size_t(n), 1 + n), w = randn(size_t(n), 2 + n), u = randn(size_t(n), 3 + n);
    std::vector<uint16_t> h(static_cast<size_t>(n)), h2(static_cast<size_t>(n));
    K::ref::f32_to_f16_row(w.data(), h.data(), n);
    K::avx2::f32_to_f16_row(w.data(), h2.data(), n);
    EXPECT_EQ(h, h2) << n;

    std::vector<float> y1(static_cast<size_t>(n)), y2(static_cast<size_t>(n));
    K::ref::rmsnorm(x.data(), w.data(), y1.data(), n, 1e-5f);
    K::avx2::rmsnorm(x.data(), w.data(), y2.data(), n, 1e-5f);
    expect_close(y2, y1, 1e-5f, "rmsnorm");

    double mag = 0;
    for (int i = 0; i < n; ++i) mag += std::fabs(x[size_t(i)] * w[size_t(i)]);
    EXPECT_NEAR(K::avx2::dot(x.data(), w.data(), n), K::ref::dot(x.data(), w.data(), n), 1e-6 * mag + 1e-6);
    EXPECT_NEAR(K::avx2::dot_f16(h.data(), x.data(), n), K::ref::dot_f16(h.data(), x.data(), n), 1e-6 * mag + 1e-6);
    std::vector<int8_t> q(static_cast<size_t>(n));
    double qmag = 0;
    for (int i = 0; i < n; ++i) {
      q[size_t(i)] = int8_t(std::lround(std::clamp(w[size_t(i)] * 40.0f, -127.0f, 127.0f)));
      qmag += std::fabs(double(q[size_t(i)]) * x[size_t(i)]);
    }
    EXPECT_NEAR(K::avx2::dot_i8(q.data(), x.data(), n), K::ref::dot_i8(q.data(), x.data(), n), 1e-6 * qmag + 1e-6);

    // FMA rounds once where the reference rounds twice: bound by the size of the terms.
    y1 = u, y2 = u;
    K::ref::axpy(0.37f, x.data(), y1.data(), n);
    K::avx2::axpy(0.37f, x.data(), y2.data(), n);
    for (int i = 0; i < n; ++i)
      ASSERT_NEAR(y2[size_t(i)], y1[size_t(i)], 2e-7f * (std::fabs(u[size_t(i)]) + std::fabs(0.37f * x[size_t(i)])));
    y1 = u, y2 = u;
    K::ref::axpy_f16(-1.5f, h.data(), y1.data(), n);
    K::avx2::axpy_f16(-1.5f, h.data(), y2.data(), n);
    for (int i = 0; i < n; ++i)
      ASSERT_NEAR(y2[size_t(i)], y1[size_t(i)], 2e-7f * (std::fabs(u[size_t(i)]) + std::fabs(1.5f * w[size_t(i)]) + 1e-6f));

    y1 = u, y2 = u;
    K::ref::axpy_i8(0.02f, q.data(), y1.data(), n);
    K::avx2::axpy_i8(0.02f, q.data(), y2.data(), n);
    for (int i = 0; i < n; ++i)
      ASSERT_NEAR(y2[size_t(i)], y1[size_t(i)], 2e-7f * (std::fabs(u[size_t(i)]) + std::fabs(0.02f * q[size_t(i)]) + 1e-6f));

    y1 = x, y2 = x;
    for (auto* v : {&y1, &y2}) (*v)[0] = -INFINITY;  // a masked score
    for (auto& v : y1) v *= 8.0f;
    for (auto& v : y2) v *= 8.0f;
    K::ref::softmax(y1.data(), n);
    K::avx2::softmax(y2.data(), n);
    if (n > 1) {
      EXPECT_EQ(y2[0], 0.0f);
      expect_close(y2, y1, 2e-6f, "softmax");
    }

    y1 = x, y2 = x;
    for (auto& v : y1) v *= 6.0f;
    for (auto& v : y2) v *= 6.0f;
    K::ref::silu_mul(y1.data(), u.data(), n);
    K::avx2::silu_mul(y2.data(), u.data(), n);
    expect_close(y2, y1, 2e-6f, "silu_mul");
  }
}

TEST(KernelsSimd, ExpCoversTheFloatRange) {
  REQUIRE_AVX2();
  // softmax of two values a and b is (1, e^(b-a)) / (1 + e^(b-a)): sweep b-a over the whole range.
  for (float dlt = -100.0f; dlt <= 0.0f; dlt += 0.37f) {
    float v[2] = {0.0f, dlt}, r[2] = {0.0f, dlt};
    K::avx2::softmax(v, 2);
    K::ref::softmax(r, 2);
    EXPECT_NEAR(v[1], r[1], 2e-6f * r[1] + 1e-37f) << dlt;
  }
}

const GgmlType kQuantTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                GgmlType::Q8_0, GgmlType::Q8_A, GgmlType::Q4_A, GgmlType::Q2_K, GgmlType::Q3_K,
                                GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K};
const GgmlType kAllTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,
                              GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                              GgmlType::Q8_A, GgmlType::Q4_A, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                              GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K};

TEST(KernelsSimd, ActivationQuantizationIsIdentical) {
  REQUIRE_AVX2();
  const auto x = randn(768, 9);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_K}) {
    const size_t bytes = K::act_row_bytes(t, 768);
    std::vector<uint8_t> a(bytes), b(bytes);
    K::ref::quantize_act(t, x.data(), 768, a.data());
    K::avx2::quantize_act(t, x.data(), 768, b.data());
    EXPECT_EQ(a, b) << type_name(t);
  }
}

TEST(KernelsSimd, MatmulRowsMatchReference) {
  REQUIRE_AVX2();
  const int toks[] = {1, 2, 3, 5, 8, 67};
  uint32_t seed = 100;
  for (GgmlType type : kAllTypes) {
   const int block = type_traits(type)->block_elems;
   // Odd and even block counts (some kernels take blocks in pairs), and for the 32-wide types whole
   // groups of 8 blocks plus a tail (544 = 2 x 256 + 32; Q4_A: 576 = 2 x 256 + 64).
   for (int64_t cols : {block == QK_K ? 512 : block == 1 ? 101 : block == QK_A ? 192 : 96, block == QK_K ? 768 : 128,
                        block == QK ? 544 : block == QK_A ? 576 : 0}) {
    if (cols == 0) continue;
    for (int rows : {1, 2, 3, 4, 5, 7, 13}) {
      for (int n_tok : toks) {
        Weights W(type, rows, cols, ++seed);
        const auto x = randn(size_t(n_tok * cols), ++seed);
        const size_t ab = K::act_row_bytes(type, cols);
        std::vector<uint8_t> act(ab * size_t(n_tok));
        for (int t = 0; t < n_tok; ++t) K::ref::quantize_act(type, x.data() + t * cols, cols, act.data() + ab * size_t(t));
        std::vector<float> y1(size_t(rows * n_tok)), y2(y1.size());
        K::MatmulArgs a{type, cols, W.data.data(), row_size(type, cols), act.data(), ab, n_tok, y1.data(), rows};
        K::ref::matmul_rows(a, 0, rows);
        a.y = y2.data();
        K::avx2::matmul_rows(a, 0, rows);
        for (int t = 0; t < n_tok; ++t)
          for (int r = 0; r < rows; ++r) {
            double mag = 0;
            for (int64_t c = 0; c < cols; ++c) mag += std::fabs(W.deq[size_t(r * cols + c)] * x[size_t(t * cols + c)]);
            const size_t i = size_t(t * rows + r);
            ASSERT_NEAR(y2[i], y1[i], 1e-5 * mag + 1e-7)
                << type_name(type) << " cols " << cols << " rows " << rows << " n_tok " << n_tok << " r " << r
                << " t " << t;
          }
      }
    }
   }
  }
}

// The group-of-8 kernels for Q4_0/Q4_1/Q8_0/Q4_A in both builds (AVX2, and AVX-512 VNNI where the CPU
// has it) called directly, so each is checked whichever one the dispatch picks on this machine.
TEST(KernelsSimd, Group8KernelsMatchReference) {
  REQUIRE_AVX2();
  using Fn = bool (*)(const K::MatmulArgs&, int64_t, int64_t);
  std::vector<std::pair<const char*, Fn>> impls = {{"avx2", &K::avx2::matmul_group8}};
  if (cpu_features().use_vnni()) impls.emplace_back("vnni", &K::vnni::matmul_group8);
  uint32_t seed = 900;
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_A})
    for (int64_t cols : {256, type == GgmlType::Q4_A ? 576 : 544, type == GgmlType::Q4_A ? 320 : 288})
      for (int rows : {1, 2, 5})
        for (int n_tok : {1, 3, 4, 9}) {
          Weights W(type, rows, cols, ++seed);
          const auto x = randn(size_t(n_tok * cols), ++seed);
          const size_t ab = K::act_row_bytes(type, cols);
          std::vector<uint8_t> act(ab * size_t(n_tok));
          for (int t = 0; t < n_tok; ++t) K::ref::quantize_act(type, x.data() + t * cols, cols, act.data() + ab * size_t(t));
          std::vector<float> want(size_t(rows * n_tok));
          K::MatmulArgs a{type, cols, W.data.data(), row_size(type, cols), act.data(), ab, n_tok, want.data(), rows};
          K::ref::matmul_rows(a, 0, rows);
          for (const auto& [name, fn] : impls) {
            std::vector<float> got(want.size(), -1.0f);
            a.y = got.data();
            if (!fn(a, 0, rows)) {
              EXPECT_TRUE(type == GgmlType::Q8_0 && n_tok >= 4) << name << " refused " << type_name(type);
              continue;
            }
            for (size_t i = 0; i < want.size(); ++i)
              ASSERT_NEAR(got[i], want[i], 1e-5 * (std::fabs(want[i]) + 1.0))
                  << name << " " << type_name(type) << " cols " << cols << " rows " << rows << " n_tok " << n_tok;
          }
        }
}

// The public matmul (through the dispatch and the thread pool) against float32 over the
// dequantized weights. Activation rounding moves each x(c) by at most half a quantization step,
// d_x / 2 = amax(block of c) / 254, so |y - y_float| <= sum_c |w(c)| * amax(block of c) / 254;
// float summation adds ~1e-6 of sum |w x|. Float weights must agree to 1e-5 relative.
TEST(Kernels, MatmulWithinActivationRoundingBound) {
  ThreadPool pool(2);
  uint32_t seed = 500;
  for (GgmlType type : kAllTypes) {
    const int block = type_traits(type)->block_elems;
    const int act_block = K::act_format(type) == K::ActFormat::Q8K ? QK_K : QK;
    const int64_t cols = 768, rows = 37, ldx = cols + 3, ldy = rows + 2;
    for (int n_tok : {1, 4, 70}) {
      Weights W(type, rows, cols, ++seed);
      auto x = randn(size_t(n_tok * ldx), ++seed);
      for (size_t i = 0; i < x.size(); i += 61) x[i] *= 10.0f;  // outliers, as in real activations
      std::vector<float> y(size_t(n_tok * ldy), -7.0f);
      K::matmul(W.t, x.data(), ldx, n_tok, y.data(), ldy, pool);
      for (int t = 0; t < n_tok; ++t) {
        const float* xt = x.data() + t * ldx;
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0, mag = 0, bound = 0;
          for (int64_t c = 0; c < cols; ++c) {
            const double w = W.deq[size_t(r * cols + c)];
            exact += w * xt[c];
            mag += std::fabs(w * xt[c]);
          }
          if (block > 1) {
            for (int64_t c0 = 0; c0 < cols; c0 += act_block) {
              float amax = 0, wsum = 0;
              for (int64_t c = c0; c < c0 + act_block; ++c) {
                amax = std::fmax(amax, std::fabs(xt[c]));
                wsum += std::fabs(W.deq[size_t(r * cols + c)]);
              }
              bound += double(wsum) * amax / 254.0;
            }
          }
          bound = bound * 1.001 + 1e-5 * mag + 1e-7;
          ASSERT_NEAR(y[size_t(t * ldy + r)], exact, bound) << type_name(type) << " n_tok " << n_tok << " r " << r;
        }
        EXPECT_EQ(y[size_t(t * ldy + rows)], -7.0f) << "wrote past its rows";
      }
    }
  }
}

TEST(Kernels, ThreadCountDoesNotChangeResults) {
  ThreadPool one(1), two(2);
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::F16}) {
    Weights W(type, 53, 512, 7);
    const auto x = randn(512 * 3, 8);
    std::vector<float> y1(53 * 3), y2(53 * 3);
    K::matmul(W.t, x.data(), 512, 3, y1.data(), 53, one);
    K::matmul(W.t, x.data(), 512, 3, y2.data(), 53, two);
    EXPECT_EQ(y1, y2) << type_name(type);
  }
}

// A batched forward pass runs N sequences' tokens through one matmul: each token's outputs must be
// bit-for-bit what it gets alone, whatever the batch size (so a sequence's output never depends on
// what else is in the batch), through every kernel the dispatch picks (decode, 4-token prefill
// groups, tails).
TEST(Kernels, TokenResultsDoNotDependOnTheBatch) {
  ThreadPool pool(2);
  uint32_t seed = 1300;
  for (GgmlType type : kAllTypes) {
    const int block = type_traits(type)->block_elems;
    const int64_t cols = block == QK_K ? 768 : block == QK ? 544 : block == QK_A ? 576 : 101, rows = 37;
    Weights W(type, rows, cols, ++seed);
    for (int n_tok : {2, 3, 4, 5, 8, 9, 17, 70}) {
      const auto x = randn(size_t(n_tok * cols), ++seed);
      std::vector<float> all(size_t(n_tok) * size_t(rows)), one(static_cast<size_t>(rows));
      K::matmul(W.t, x.data(), cols, n_tok, all.data(), rows, pool);
      for (int t = 0; t < n_tok; ++t) {
        K::matmul(W.t, x.data() + t * cols, cols, 1, one.data(), rows, pool);
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(all[size_t(t * rows + r)], one[size_t(r)])
              << type_name(type) << " n_tok " << n_tok << " token " << t << " row " << r;
      }
    }
  }
}

TEST(Kernels, GetRowAndErrors) {
  Weights W(GgmlType::Q6_K, 5, 256, 11);
  std::vector<float> row(256);
  K::get_row(W.t, 3, row.data());
  for (int c = 0; c < 256; ++c) EXPECT_EQ(row[size_t(c)], W.deq[size_t(3 * 256 + c)]);
  EXPECT_THROW(K::get_row(W.t, 5, row.data()), Error);
  ThreadPool pool(1);
  Tensor bad = W.t;
  bad.type = GgmlType::Q8_1;
  EXPECT_THROW(K::matmul(bad, row.data(), 256, 1, row.data(), 5, pool), Error);
  bad.type = GgmlType::Q4_K;
  bad.ne[0] = 100;
  EXPECT_THROW(K::matmul(bad, row.data(), 100, 1, row.data(), 5, pool), Error);
}

// read_sum adds the 64-bit little-endian words of the first 4 * (n / 256 * 64) bytes (read as four
// streams) and then the remaining bytes one by one; every size must give exactly that sum.
TEST(Bandwidth, ReadSumAddsEveryWordOnce) {
  std::mt19937_64 rng(3);
  std::vector<uint8_t> buf(70000);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t n : {size_t(0), size_t(1), size_t(255), size_t(256), size_t(1000), size_t(4113), buf.size()}) {
    const size_t words = n / 256 * 64 * 4 / 8;
    uint64_t want = 0;
    for (size_t i = 0; i < words; ++i) {
      uint64_t v;
      std::memcpy(&v, buf.data() + 8 * i, 8);
      want += v;
    }
    for (size_t i = 8 * words; i < n; ++i) want += buf[i];
    EXPECT_EQ(read_sum(buf.data(), n), want) << n;
  }
}

TEST(Bandwidth, ProbeOverRegionsMeasuresSomething) {
  ThreadPool pool(2);
  std::vector<uint8_t> a(size_t(3) << 20, 1), b(size_t(1) << 20, 2);
  const std::span<const uint8_t> regions[] = {a, b, {}};
  const double gbs = measure_read_bandwidth_gbs(pool, regions, 2);
  EXPECT_GT(gbs, 0.01);  // 4 MiB read in well under 0.4 s on any machine
  EXPECT_TRUE(std::isfinite(gbs));
  EXPECT_EQ(measure_read_bandwidth_gbs(pool, std::span<const std::span<const uint8_t>>{}, 2), 0.0);
}

}  // namespace
}  // namespace pensieve
