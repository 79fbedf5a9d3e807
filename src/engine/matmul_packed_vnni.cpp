// The packed-layout matmul (packed.h) with 512-bit AVX-512 VNNI: per 32-weight block, the 16 rows'
// weights are unpacked once into eight vectors (lane r = four weights of row r) and each of up to
// eight tokens runs eight vpdpbusd against broadcasts of its own activation bytes. Every token
// does the same operations in the same order whatever the group size, and the same as the scalar
// twin (ref::matmul_packed_tiles), so results are bit-identical across batch sizes and with it.
// Built with AVX-512 F/BW/VL/VNNI enabled (this file only); reached only when use_vnni().
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own _mm512_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "engine/packed.h"

namespace pensieve::kernels::vnni {

namespace {

constexpr int kGroup = 8;  // tokens per pass over a tile's unpacked blocks

template <bool kQ4, int T>
void tile_tokens(const uint8_t* tile, int64_t nb, size_t bb, const uint8_t* act, size_t act_stride,
                 float* y, int64_t ldy, __mmask16 rows) {
  constexpr float kOff = kQ4 ? 8.0f : 128.0f;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  const block_q8_x* x[T];
  for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const block_q8_x*>(act + size_t(t) * act_stride);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = tile + size_t(b) * bb;
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    const uint8_t* q = blk + 2 * kPackRows;
    __m512i w[8];
    if constexpr (kQ4) {
      for (int c = 0; c < 4; ++c) {
        const __m512i v = _mm512_loadu_si512(q + 64 * c);
        w[c] = _mm512_and_si512(v, m4);
        w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      }
    } else {
      for (int c = 0; c < 8; ++c) w[c] = _mm512_loadu_si512(q + 64 * c);
    }
    for (int t = 0; t < T; ++t) {
      const block_q8_x& xb = x[t][b];
      int32_t a4[8];
      std::memcpy(a4, xb.qs, sizeof(a4));
      __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(a4[0]));
      for (int j = 1; j < 8; ++j) s = _mm512_dpbusd_epi32(s, w[j], _mm512_set1_epi32(a4[j]));
      const __m512 f = _mm512_fmsub_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xb.d), _mm512_set1_ps(kOff * xb.ds));
      acc[t] = _mm512_fmadd_ps(dw, f, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + size_t(t) * size_t(ldy), rows, acc[t]);
}

template <bool kQ4>
void tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  const PackedMatrix& P = *a.P;
  const int64_t nb = P.cols() / QK;
  const size_t bb = P.block_bytes();
  for (int64_t ti = t0; ti < t1; ++ti) {
    const int64_t r0 = ti * kPackRows;
    const int64_t left = P.rows() - r0;
    const __mmask16 rows = left >= kPackRows ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    float* y = a.y + r0;
    int t = 0;
    for (; t + kGroup <= a.n_tok; t += kGroup)
      tile_tokens<kQ4, kGroup>(P.tile(ti), nb, bb, a.act + size_t(t) * a.act_stride, a.act_stride,
                               y + size_t(t) * size_t(a.ldy), a.ldy, rows);
    const uint8_t* act = a.act + size_t(t) * a.act_stride;
    float* yt = y + size_t(t) * size_t(a.ldy);
    switch (a.n_tok - t) {
      case 1: tile_tokens<kQ4, 1>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 2: tile_tokens<kQ4, 2>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 3: tile_tokens<kQ4, 3>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 4: tile_tokens<kQ4, 4>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 5: tile_tokens<kQ4, 5>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 6: tile_tokens<kQ4, 6>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      case 7: tile_tokens<kQ4, 7>(P.tile(ti), nb, bb, act, a.act_stride, yt, a.ldy, rows); break;
      default: break;
    }
  }
}

}  // namespace

void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  if (a.P->type() == GgmlType::Q4_0) tiles<true>(a, t0, t1);
  else tiles<false>(a, t0, t1);
}

}  // namespace pensieve::kernels::vnni
