// The packed-layout matmul (packed.h) with 512-bit AVX-512 VNNI: per group of 32 weights, the 16
// rows' weights are unpacked once into eight vectors (lane r = four weights of row r) and each of
// up to eight tokens runs eight vpdpbusd against broadcasts of its own activation bytes. Every
// token does the same operations in the same order whatever the group size, and the same as the
// scalar twin (ref::matmul_packed_tiles), so results are bit-identical across batch sizes and with
// it. Built with AVX-512 F/BW/VL/VNNI enabled (this file only); reached only when use_vnni().
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own _mm512_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "engine/packed.h"

namespace pensieve::kernels::vnni {

namespace {

constexpr int kGroup = 8;  // tokens per pass over a tile's unpacked weights
constexpr int kQ4KScale = 64, kQ4KMin = 192, kQ4KNib = 320, kQ5KHigh = 2368;
constexpr int kQ6KScale = 32, kQ6KLow = 288, kQ6KHigh = 2336;

inline __m512i chunk(const uint8_t* base, int k) { return _mm512_loadu_si512(base + 64 * k); }
inline __m512 f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 u8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 s8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// isum over weights vectors w[j0..j1) against dwords j0..j1 of a token's block.
template <int J0, int J1>
inline __m512i dot(const __m512i* w, const int32_t* a4) {
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[J0], _mm512_set1_epi32(a4[J0]));
  for (int j = J0 + 1; j < J1; ++j) s = _mm512_dpbusd_epi32(s, w[j], _mm512_set1_epi32(a4[j]));
  return s;
}

// One group of 32 weights of 16 rows (already unpacked into w) against T tokens.
enum class Math { Offset, ScaleMin, Halves };

template <Math kMath, int T>
inline void group_tokens(const __m512i* w, __m512 s0, __m512 s1, float off, const block_q8_x* const* x,
                         const float* const* s16, int64_t gi, __m512* acc) {
  for (int t = 0; t < T; ++t) {
    const block_q8_x& xb = x[t][gi];
    int32_t a4[8];
    std::memcpy(a4, xb.qs, sizeof(a4));
    if constexpr (kMath == Math::Offset) {
      const __m512 f = _mm512_fmsub_ps(_mm512_cvtepi32_ps(dot<0, 8>(w, a4)), _mm512_set1_ps(xb.d),
                                       _mm512_set1_ps(off * xb.ds));
      acc[t] = _mm512_fmadd_ps(s0, f, acc[t]);
    } else if constexpr (kMath == Math::ScaleMin) {
      const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(dot<0, 8>(w, a4)), _mm512_set1_ps(xb.d));
      acc[t] = _mm512_fmadd_ps(s0, f, acc[t]);
      acc[t] = _mm512_fnmadd_ps(s1, _mm512_set1_ps(xb.ds), acc[t]);
    } else {
      const float* h = s16[t] + 2 * gi;
      const __m512 f0 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(dot<0, 4>(w, a4)), _mm512_set1_ps(xb.d),
                                        _mm512_set1_ps(32.0f * h[0]));
      acc[t] = _mm512_fmadd_ps(s0, f0, acc[t]);
      const __m512 f1 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(dot<4, 8>(w, a4)), _mm512_set1_ps(xb.d),
                                        _mm512_set1_ps(32.0f * h[1]));
      acc[t] = _mm512_fmadd_ps(s1, f1, acc[t]);
    }
  }
}

template <GgmlType kType, int T>
void tile_tokens(const PackedMatrix& P, const uint8_t* tile, const uint8_t* act, size_t act_stride, float* y,
                 int64_t ldy, __mmask16 rows) {
  const int64_t nsb = P.sbs(), nb = P.cols() / QK;
  const size_t sbb = P.sb_bytes();
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[T];
  const block_q8_x* x[T];
  const float* s16[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm512_setzero_ps();
    x[t] = reinterpret_cast<const block_q8_x*>(act + size_t(t) * act_stride);
    s16[t] = reinterpret_cast<const float*>(act + size_t(t) * act_stride + size_t(nb) * sizeof(block_q8_x));
  }
  __m512i w[8];
  for (int64_t b = 0; b < nsb; ++b) {
    const uint8_t* sb = tile + size_t(b) * sbb;
    if constexpr (kType == GgmlType::Q4_0 || kType == GgmlType::Q8_0) {
      const __m512 dw = f16x16(sb);
      if constexpr (kType == GgmlType::Q4_0) {
        for (int c = 0; c < 4; ++c) {
          const __m512i v = chunk(sb + 32, c);
          w[c] = _mm512_and_si512(v, m4);
          w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
      } else {
        for (int c = 0; c < 8; ++c) w[c] = chunk(sb + 32, c);
      }
      group_tokens<Math::Offset, T>(w, dw, dw, kType == GgmlType::Q4_0 ? 8.0f : 128.0f, x, s16, b, acc);
    } else if constexpr (kType == GgmlType::Q4_K || kType == GgmlType::Q5_K) {
      const __m512 d = f16x16(sb), dmin = f16x16(sb + 32);
      for (int g = 0; g < 8; ++g) {
        const uint8_t* nib = sb + kQ4KNib + 64 * 8 * (g / 2);
        for (int c = 0; c < 8; ++c) {
          const __m512i v = chunk(nib, c);
          w[c] = _mm512_and_si512(g & 1 ? _mm512_srli_epi16(v, 4) : v, m4);
          if constexpr (kType == GgmlType::Q5_K) {
            const __mmask64 hi = _mm512_test_epi8_mask(chunk(sb + kQ5KHigh, c), _mm512_set1_epi8(char(1 << g)));
            w[c] = _mm512_mask_add_epi8(w[c], hi, w[c], _mm512_set1_epi8(16));
          }
        }
        const __m512 S = _mm512_mul_ps(d, u8x16(sb + kQ4KScale + 16 * g));
        const __m512 M = _mm512_mul_ps(dmin, u8x16(sb + kQ4KMin + 16 * g));
        group_tokens<Math::ScaleMin, T>(w, S, M, 0.0f, x, s16, b * 8 + g, acc);
      }
    } else {  // Q6_K
      const __m512 d = f16x16(sb);
      const __m512i m3 = _mm512_set1_epi8(3);
      for (int g = 0; g < 8; ++g) {
        const int h = g / 4, k = g % 4;
        const uint8_t* lo = sb + kQ6KLow + 64 * 8 * (2 * h + (k & 1));
        const uint8_t* hi = sb + kQ6KHigh + 64 * 8 * h;
        const __m128i shift = _mm_cvtsi32_si128(2 * k);
        for (int c = 0; c < 8; ++c) {
          const __m512i l = chunk(lo, c);
          const __m512i nibble = _mm512_and_si512(k < 2 ? l : _mm512_srli_epi16(l, 4), m4);
          const __m512i top = _mm512_and_si512(_mm512_srl_epi16(chunk(hi, c), shift), m3);
          w[c] = _mm512_or_si512(nibble, _mm512_slli_epi16(top, 4));
        }
        const __m512 S0 = _mm512_mul_ps(d, s8x16(sb + kQ6KScale + 16 * (2 * g)));
        const __m512 S1 = _mm512_mul_ps(d, s8x16(sb + kQ6KScale + 16 * (2 * g + 1)));
        group_tokens<Math::Halves, T>(w, S0, S1, 0.0f, x, s16, b * 8 + g, acc);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + size_t(t) * size_t(ldy), rows, acc[t]);
}

template <GgmlType kType>
void tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  const PackedMatrix& P = *a.P;
  for (int64_t ti = t0; ti < t1; ++ti) {
    const int64_t r0 = ti * kPackRows;
    const int64_t left = P.rows() - r0;
    const __mmask16 rows = left >= kPackRows ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const uint8_t* tile = P.tile(ti);
    int t = 0;
    for (; t + kGroup <= a.n_tok; t += kGroup)
      tile_tokens<kType, kGroup>(P, tile, a.act + size_t(t) * a.act_stride, a.act_stride,
                                 a.y + r0 + size_t(t) * size_t(a.ldy), a.ldy, rows);
    const uint8_t* act = a.act + size_t(t) * a.act_stride;
    float* y = a.y + r0 + size_t(t) * size_t(a.ldy);
    switch (a.n_tok - t) {
      case 1: tile_tokens<kType, 1>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 2: tile_tokens<kType, 2>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 3: tile_tokens<kType, 3>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 4: tile_tokens<kType, 4>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 5: tile_tokens<kType, 5>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 6: tile_tokens<kType, 6>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      case 7: tile_tokens<kType, 7>(P, tile, act, a.act_stride, y, a.ldy, rows); break;
      default: break;
    }
  }
}

}  // namespace

void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  switch (a.P->type()) {
    case GgmlType::Q4_0: return tiles<GgmlType::Q4_0>(a, t0, t1);
    case GgmlType::Q8_0: return tiles<GgmlType::Q8_0>(a, t0, t1);
    case GgmlType::Q4_K: return tiles<GgmlType::Q4_K>(a, t0, t1);
    case GgmlType::Q5_K: return tiles<GgmlType::Q5_K>(a, t0, t1);
    case GgmlType::Q6_K: return tiles<GgmlType::Q6_K>(a, t0, t1);
    default: return;
  }
}

}  // namespace pensieve::kernels::vnni
