// The AVX2 matmul kernels by weight family, called from avx2::matmul_rows for rows [r0, r1).
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/quant.h"

namespace pensieve::kernels::avx2 {

void matmul_float(const MatmulArgs& a, int64_t r0, int64_t r1);  // F32, F16, BF16
void matmul_q32(const MatmulArgs& a, int64_t r0, int64_t r1);    // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_A, Q4_A
// Q4_0/Q4_1/Q4_A (any n_tok) and Q8_0 (decode) eight blocks at a time; false (nothing done) otherwise.
bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1);
void matmul_qk(const MatmulArgs& a, int64_t r0, int64_t r1);     // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
// Row-by-row from the blocks, for few tokens; false (nothing done) for a type it lacks.
bool matmul_qk_direct(const MatmulArgs& a, int64_t r0, int64_t r1);  // Q4_K, Q5_K, Q6_K

// Tokens handled per pass over a weight tile, chosen so their activations stay in L2 while the
// weights of a few rows stay in L1.
constexpr int kTokenChunk = 64;

// Runs tile(R, NT, r, t) -- R rows from r times NT tokens from t, R and NT as integral_constant --
// over rows [r0, r1) and every token. Decode (one token) goes one row at a time, one sequential
// stream for the hardware prefetchers (see matmul_group8.inl); batches go in tiles of 4 rows x 2
// tokens over 64-token chunks, so each weight load serves two tokens and each activation load four
// rows, then the rows left over one at a time.
template <class Tile>
void for_each_tile(const MatmulArgs& a, int64_t r0, int64_t r1, Tile tile) {
  using one = std::integral_constant<int, 1>;
  using two = std::integral_constant<int, 2>;
  using four = std::integral_constant<int, 4>;
  if (a.n_tok == 1) {
    for (int64_t r = r0; r < r1; ++r) tile(one{}, one{}, r, 0);
    return;
  }
  for (int tc = 0; tc < a.n_tok; tc += kTokenChunk) {
    const int tc_end = a.n_tok < tc + kTokenChunk ? a.n_tok : tc + kTokenChunk;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
      int t = tc;
      for (; t + 2 <= tc_end; t += 2) tile(four{}, two{}, r, t);
      if (t < tc_end) tile(four{}, one{}, r, t);
    }
    for (; r < r1; ++r) {
      int t = tc;
      for (; t + 2 <= tc_end; t += 2) tile(one{}, two{}, r, t);
      if (t < tc_end) tile(one{}, one{}, r, t);
    }
  }
}

}  // namespace pensieve::kernels::avx2

namespace pensieve::kernels::vnni {
// matmul_group8 with AVX-512 VNNI dot products (matmul_group8_vnni.cpp); only where use_vnni().
bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1);
}  // namespace pensieve::kernels::vnni
