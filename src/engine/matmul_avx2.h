// The AVX2 matmul kernels by weight family, called from avx2::matmul_rows for rows [r0, r1).
#pragma once
#include <cstdint>

#include "engine/quant.h"

namespace pensieve::kernels::avx2 {

void matmul_float(const MatmulArgs& a, int64_t r0, int64_t r1);  // F32, F16, BF16
void matmul_q32(const MatmulArgs& a, int64_t r0, int64_t r1);    // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_A
// Q4_0/Q4_1 (any n_tok) and Q8_0 (decode) eight blocks at a time; false (nothing done) otherwise.
bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1);
void matmul_qk(const MatmulArgs& a, int64_t r0, int64_t r1);     // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
// Row-by-row from the blocks, for few tokens; false (nothing done) for a type it lacks.
bool matmul_qk_direct(const MatmulArgs& a, int64_t r0, int64_t r1);  // Q4_K, Q5_K, Q6_K

// Tokens handled per pass over a weight tile, chosen so their activations stay in L2 while the
// weights of a few rows stay in L1.
constexpr int kTokenChunk = 64;

}  // namespace pensieve::kernels::avx2

namespace pensieve::kernels::vnni {
// matmul_group8 with AVX-512 VNNI dot products (matmul_group8_vnni.cpp); only where use_vnni().
bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1);
}  // namespace pensieve::kernels::vnni
