// Internal pieces of the quantized kernels shared by the scalar and AVX2 code: the 8-bit activation
// block used against the 32-wide weight types, and the unpacking of K-quant scales.
#pragma once
#include <cstdint>

#include "kernels/ggml_type.h"

namespace pensieve::kernels {

// Activations quantized for a dot product with a 32-wide weight block: x ≈ d * qs, and
// ds = d * sum(qs) so that affine weight types (w = dw * q + m) get their m * sum(x) term cheaply.
struct block_q8_x {
  float d;
  float ds;
  int8_t qs[QK];
};
static_assert(sizeof(block_q8_x) == 40);

// What the activations of a matmul are turned into for each weight type: float32 for the float
// types, block_q8_x per 32 elements for the 32-wide types, block_q8_K per 256 for the K-quants.
enum class ActFormat { F32, Q8X, Q8K };
ActFormat act_format(GgmlType wtype);
size_t act_row_bytes(GgmlType wtype, int64_t n);

// One call of a row-range matmul kernel: y[t * ldy + r] for r in [r0, r1), t < n_tok.
struct MatmulArgs {
  GgmlType type;
  int64_t cols;             // elements per weight row
  const uint8_t* w;         // first weight row
  size_t w_stride;          // bytes between weight rows
  const uint8_t* act;       // first prepared activation row
  size_t act_stride;        // bytes between activation rows
  int n_tok;
  float* y;
  int64_t ldy;
};

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block.
inline void k4_scale_min(const uint8_t* s, int j, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = uint8_t((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *mn = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// The signed 6-bit scale of sub-block j (0..15) of a Q3_K super-block.
inline int k3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

}  // namespace pensieve::kernels
