// The packed weight layout (kernels/packed.h): the VNNI kernel against its scalar twin bit for bit,
// the packed matmul against the unpacked one, and the batch invariance the batched forward pass
// relies on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "random_weights.h"
#include "kernels/kernels_ref.h"
#include "kernels/packed.h"
#include "util/cpu.h"
#include "util/error.h"

namespace pensieve {
namespace {

namespace K = kernels;
using test::randn;
using test::Weights;

const GgmlType kPacked[] = {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_A, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

bool k_quant(GgmlType t) { return type_traits(t)->block_elems == QK_K; }
int64_t block(GgmlType t) { return type_traits(t)->block_elems; }

TEST(Packed, OnlyTheTypesWithAKernel) {
  for (GgmlType t : kPacked) EXPECT_TRUE(K::packable(t)) << type_name(t);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q3_K})
    EXPECT_FALSE(K::packable(t)) << type_name(t);
}

TEST(Packed, VnniPackingWritesTheScalarLayout) {
  if (!cpu_features().use_vnni()) GTEST_SKIP() << "no AVX-512 VNNI (or PENSIEVE_NO_VNNI set)";
  uint32_t seed = 30;
  for (GgmlType type : kPacked)
    for (int rows : {1, 5, 16, 17, 40}) {
      const int64_t cols = k_quant(type) ? 512 : 3 * block(type);
      Weights W(type, rows, cols, ++seed);
      K::PackedMatrix a(type, rows, cols), b(type, rows, cols);
      K::pack_tiles(W.t, a, 0, a.tiles());
      std::memset(b.tile(0), 0x5A, b.bytes());  // padding rows must be written as zeros too
      K::vnni::pack_tiles(W.t, b, 0, b.tiles());
      for (size_t i = 0; i < a.bytes(); ++i)
        ASSERT_EQ(a.tile(0)[i], b.tile(0)[i]) << type_name(type) << " rows " << rows << " byte " << i;
    }
}

TEST(Packed, VnniKernelEqualsScalarTwinBitForBit) {
  if (!cpu_features().use_vnni()) GTEST_SKIP() << "no AVX-512 VNNI (or PENSIEVE_NO_VNNI set)";
  ThreadPool pool(1);
  uint32_t seed = 70;
  for (GgmlType type : kPacked)
    for (int64_t cols : {block(type), 3 * block(type), k_quant(type) ? 0 : 17 * block(type)})
      for (int rows : {1, 5, 16, 17, 40})
        if (cols > 0)
        for (int n_tok : {1, 2, 3, 7, 8, 9, 17}) {
          Weights W(type, rows, cols, ++seed);
          const auto P = K::pack_matrix(W.t, pool);
          const auto x = randn(size_t(n_tok * cols), ++seed);
          const size_t ab = K::packed_act_bytes(*P);
          std::vector<uint8_t> act(ab * size_t(n_tok));
          for (int t = 0; t < n_tok; ++t) K::packed_act_ref(*P, x.data() + t * cols, act.data() + ab * size_t(t));
          const int64_t ldy = rows + 3;
          std::vector<float> want(size_t(n_tok * ldy), -9.0f), got(want);
          K::PackedArgs a{P.get(), act.data(), ab, n_tok, want.data(), ldy};
          K::ref::matmul_packed_tiles(a, 0, P->tiles());
          a.y = got.data();
          K::vnni::matmul_packed_tiles(a, 0, P->tiles());
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_EQ(got[i], want[i]) << type_name(type) << " cols " << cols << " rows " << rows << " n_tok "
                                       << n_tok << " at " << i;
          for (int t = 0; t < n_tok; ++t)
            for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(got[size_t(t * ldy + r)], -9.0f) << "wrote past its rows";
        }
}

// The packed matmul against float32 over the dequantized weights, under the bound of the
// activation rounding (each x(c) moves by at most amax(its block of 32) / 254) plus float summation;
// for Q4_0/Q8_0 also against the unpacked matmul, which uses the same quantized activations and
// exact integer block sums, so the two differ only by summation order.
TEST(Packed, MatmulWithinActivationRoundingBound) {
  ThreadPool pool(2);
  uint32_t seed = 170;
  for (GgmlType type : kPacked)
    for (int n_tok : {1, 4, 70}) {
      const int64_t cols = 768, rows = 53, ldx = cols + 5, ldy = rows + 2;
      Weights W(type, rows, cols, ++seed);
      const auto P = K::pack_matrix(W.t, pool);
      auto x = randn(size_t(n_tok * ldx), ++seed);
      for (size_t i = 0; i < x.size(); i += 61) x[i] *= 10.0f;  // outliers, as in real activations
      std::vector<float> unpacked(size_t(n_tok * ldy)), got(unpacked.size(), -7.0f);
      K::matmul(W.t, x.data(), ldx, n_tok, unpacked.data(), ldy, pool);
      K::matmul_packed(*P, x.data(), ldx, n_tok, got.data(), ldy, pool);
      for (int64_t r = 0; r < rows; ++r) {
        const float* deq = W.deq.data() + r * cols;
        for (int t = 0; t < n_tok; ++t) {
          const float* xt = x.data() + t * ldx;
          double exact = 0, mag = 0, bound = 0;
          for (int64_t c = 0; c < cols; ++c) {
            exact += double(deq[c]) * xt[c];
            mag += std::fabs(deq[c] * xt[c]);
          }
          for (int64_t c0 = 0; c0 < cols; c0 += QK) {
            float amax = 0, wsum = 0;
            for (int64_t c = c0; c < c0 + QK; ++c) {
              amax = std::fmax(amax, std::fabs(xt[c]));
              wsum += std::fabs(deq[c]);
            }
            bound += double(wsum) * amax / 254.0;
          }
          const size_t i = size_t(t * ldy + r);
          ASSERT_NEAR(got[i], exact, bound * 1.001 + 1e-5 * mag + 1e-7)
              << type_name(type) << " n_tok " << n_tok << " row " << r;
          if (type == GgmlType::Q4_0 || type == GgmlType::Q8_0) {
            ASSERT_NEAR(got[i], unpacked[i], 2e-6 * mag + 1e-7) << type_name(type) << " n_tok " << n_tok << " row " << r;
          }
        }
      }
      for (int t = 0; t < n_tok; ++t) EXPECT_EQ(got[size_t(t * ldy + rows)], -7.0f) << "wrote past its rows";
    }
}

// A token's outputs are bit-for-bit the same alone and in any batch (any token group and tail), on
// one thread or two: the batched forward pass relies on it.
TEST(Packed, TokenResultsDoNotDependOnTheBatch) {
  ThreadPool one(1), two(2);
  uint32_t seed = 270;
  for (GgmlType type : kPacked) {
    const int64_t cols = k_quant(type) ? 512 : 17 * block(type), rows = 45;
    Weights W(type, rows, cols, ++seed);
    const auto P = K::pack_matrix(W.t, two);
    for (int n_tok : {2, 7, 8, 9, 17, 70}) {
      const auto x = randn(size_t(n_tok * cols), ++seed);
      std::vector<float> all(static_cast<size_t>(n_tok * rows)), all1(all.size()), alone(static_cast<size_t>(rows));
      K::matmul_packed(*P, x.data(), cols, n_tok, all.data(), rows, two);
      K::matmul_packed(*P, x.data(), cols, n_tok, all1.data(), rows, one);
      ASSERT_EQ(all, all1) << type_name(type) << " n_tok " << n_tok << ": thread count changed the result";
      for (int t = 0; t < n_tok; ++t) {
        K::matmul_packed(*P, x.data() + t * cols, cols, 1, alone.data(), rows, two);
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(all[size_t(t * rows + r)], alone[size_t(r)])
              << type_name(type) << " n_tok " << n_tok << " token " << t << " row " << r;
      }
    }
  }
}

// Rows read back from the packed copy are the source rows dequantized, exactly; the exact matmul
// from it equals the one from the source (same float dots).
TEST(Packed, RowsAndExactMatmulFromThePackedCopy) {
  ThreadPool pool(2);
  uint32_t seed = 370;
  for (GgmlType type : kPacked) {
    const int64_t cols = k_quant(type) ? 512 : 3 * block(type), rows = 21;
    Weights W(type, rows, cols, ++seed);
    const auto P = K::pack_matrix(W.t, pool);
    std::vector<float> want(static_cast<size_t>(cols)), got(want.size());
    for (int64_t r = 0; r < rows; ++r) {
      K::get_row(W.t, r, want.data());
      K::packed_row(*P, r, got.data());
      ASSERT_EQ(got, want) << type_name(type) << " row " << r;
    }
    EXPECT_THROW(K::packed_row(*P, rows, got.data()), Error);
    const int n_tok = 3;
    const auto x = randn(size_t(n_tok * cols), ++seed);
    std::vector<float> y1(size_t(n_tok * rows)), y2(y1.size());
    K::matmul_exact(W.t, x.data(), cols, n_tok, y1.data(), rows, pool);
    K::matmul_exact_packed(*P, x.data(), cols, n_tok, y2.data(), rows, pool);
    for (size_t i = 0; i < y1.size(); ++i) ASSERT_NEAR(y2[i], y1[i], 1e-5 * (std::fabs(y1[i]) + 1e-2)) << type_name(type);
  }
}

TEST(Packed, RefusesTypesWithoutALayout) {
  EXPECT_THROW(K::PackedMatrix(GgmlType::Q3_K, 16, 256), Error);
  EXPECT_THROW(K::PackedMatrix(GgmlType::Q4_0, 16, 48), Error);
  EXPECT_THROW(K::PackedMatrix(GgmlType::Q4_K, 16, 288), Error);
}

}  // namespace
}  // namespace pensieve
