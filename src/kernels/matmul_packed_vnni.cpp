// The packed-layout matmul (packed.h) with 512-bit AVX-512 VNNI: per group of 32 weights, the 16
// rows' weights are unpacked once into eight vectors (lane r = four weights of row r) and each of
// up to eight tokens runs eight vpdpbusd against broadcasts of its own activation bytes. Every
// token does the same operations in the same order whatever the group size, and the same as the
// scalar twin (ref::matmul_packed_tiles), so results are bit-identical across batch sizes and with
// it. Built with AVX-512 F/BW/VL/VNNI enabled (this file only); reached only when use_vnni().
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (and, in the gathers of the packing,
// -Wuninitialized) in their own _mm512_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <type_traits>

#include "kernels/packed.h"

namespace pensieve::kernels::vnni {

namespace {

constexpr int kGroup = 8;  // tokens per pass over a tile's unpacked weights
constexpr size_t kPrefetchAhead = 16 << 10;
using namespace packed_at;

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

// Lines [part * n / kParts, (part + 1) * n / kParts) of the n 64-byte lines of the super-block
// kPrefetchAhead bytes after sb, into L2.
template <int kParts>
inline void prefetch_ahead(const uint8_t* sb, size_t sbb, int part) {
  const size_t lines = (sbb + 63) / 64;
  for (size_t l = lines * size_t(part) / kParts; l < lines * size_t(part + 1) / kParts; ++l)
    _mm_prefetch(reinterpret_cast<const char*>(sb + kPrefetchAhead + 64 * l), _MM_HINT_T1);
}

// Dword j of a token's block in every lane (a broadcast load, which vpdpbusd takes as its operand).
inline __m512i bcst(const int8_t* qs, int j) { return _mm512_broadcastd_epi32(_mm_loadu_si32(qs + 4 * j)); }

// isum over weights vectors w[j0..j1) against dwords j0..j1 of a token's block, in two chains
// summed at the end (integer sums: the order changes nothing), so each waits on half as many
// vpdpbusd latencies.
template <int J0, int J1>
inline __m512i dot(const __m512i* w, const int8_t* qs) {
  __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[J0], bcst(qs, J0));
  __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[J0 + 1], bcst(qs, J0 + 1));
  for (int j = J0 + 2; j < J1; j += 2) {
    s0 = _mm512_dpbusd_epi32(s0, w[j], bcst(qs, j));
    s1 = _mm512_dpbusd_epi32(s1, w[j + 1], bcst(qs, j + 1));
  }
  return _mm512_add_epi32(s0, s1);
}

// One group of 32 weights of 16 rows (already unpacked into w) against T tokens.
enum class Math { Offset, ScaleMin, Halves };

template <Math kMath, int T>
inline void group_tokens(const __m512i* w, __m512 s0, __m512 s1, float off, const block_q8_x* const* x,
                         const float* const* s16, int64_t gi, __m512* acc) {
  for (int t = 0; t < T; ++t) {
    const block_q8_x& xb = x[t][gi];
    const int8_t* a4 = xb.qs;
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

// Q6_K levels of group k (of four) from a chunk of low nibbles and one of top bits: the nibble
// from l (k < 2: low, else high), bits 4-5 from qh shifted so that bits 2k land there, in one
// ternary-logic select ((a & 0x0F) | (b & ~0x0F)), then the bits above 5 cleared.
template <int K>
inline __m512i q6_levels(__m512i l, __m512i qh, __m512i m4, __m512i m6) {
  const __m512i a = K < 2 ? l : _mm512_srli_epi16(l, 4);
  __m512i b;
  if constexpr (K == 0) b = _mm512_slli_epi16(qh, 4);
  else if constexpr (K == 1) b = _mm512_slli_epi16(qh, 2);
  else if constexpr (K == 2) b = qh;
  else b = _mm512_srli_epi16(qh, 2);
  return _mm512_and_si512(_mm512_ternarylogic_epi32(a, b, m4, 0xE4), m6);
}

// Q5_K levels of group g: the nibble (low for even g, high for odd) with the fifth bit, bit g of
// the qh byte, shifted to bit 4 and merged in one ternary-logic select, then bits above 4 cleared
// (16-bit shifts by at most 4 keep every byte's bits 0-4 inside that byte).
template <int G>
inline __m512i q5_levels(__m512i v, __m512i qh, __m512i m4, __m512i m5) {
  const __m512i a = G & 1 ? _mm512_srli_epi16(v, 4) : v;
  __m512i b;
  if constexpr (G < 4) b = _mm512_slli_epi16(qh, 4 - G);
  else if constexpr (G == 4) b = qh;
  else b = _mm512_srli_epi16(qh, G - 4);
  return _mm512_and_si512(_mm512_ternarylogic_epi32(a, b, m4, 0xE4), m5);
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
    // Few tokens (decode): the weights stream from memory once, and the hardware prefetcher alone
    // keeps too few lines in flight; ask for the lines 16 KB ahead into L2 as well (past the end
    // of the matrix this reads nothing: prefetches do not fault). The K-quants' super-blocks (37-53
    // lines) ask an eighth of them before each group rather than all at once.
    constexpr bool kPrefetch = T < kGroup;
    constexpr bool kKQuant = kType == GgmlType::Q4_K || kType == GgmlType::Q5_K || kType == GgmlType::Q6_K;
    if constexpr (kPrefetch && !kKQuant) prefetch_ahead<1>(sb, sbb, 0);
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
    } else if constexpr (kType == GgmlType::Q4_A) {
      const __m512 d = f16x16(sb);
      const __m512 M = _mm512_castsi512_ps(  // min = -m
          _mm512_xor_si512(_mm512_castps_si512(f16x16(sb + 32)), _mm512_set1_epi32(int(0x80000000u))));
      for (int h = 0; h < 2; ++h) {
        for (int c = 0; c < 4; ++c) {
          const __m512i v = chunk(sb + kQ4ANib, 4 * h + c);
          w[c] = _mm512_and_si512(v, m4);
          w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        group_tokens<Math::ScaleMin, T>(w, d, M, 0.0f, x, s16, b * 2 + h, acc);
      }
    } else if constexpr (kType == GgmlType::Q4_K || kType == GgmlType::Q5_K) {
      const __m512 d = f16x16(sb), dmin = f16x16(sb + 32);
      const __m512i m5 = _mm512_set1_epi8(0x1F);
      auto group = [&](auto gc) {
        constexpr int g = decltype(gc)::value;
        if constexpr (kPrefetch) prefetch_ahead<8>(sb, sbb, g);
        const uint8_t* nib = sb + kQ4KNib + 64 * 8 * (g / 2);
        for (int c = 0; c < 8; ++c) {
          if constexpr (kType == GgmlType::Q5_K) w[c] = q5_levels<g>(chunk(nib, c), chunk(sb + kQ5KHigh, c), m4, m5);
          else w[c] = _mm512_and_si512(g & 1 ? _mm512_srli_epi16(chunk(nib, c), 4) : chunk(nib, c), m4);
        }
        const __m512 S = _mm512_mul_ps(d, u8x16(sb + kQ4KScale + 16 * g));
        const __m512 M = _mm512_mul_ps(dmin, u8x16(sb + kQ4KMin + 16 * g));
        group_tokens<Math::ScaleMin, T>(w, S, M, 0.0f, x, s16, b * 8 + g, acc);
      };
      group(std::integral_constant<int, 0>{});
      group(std::integral_constant<int, 1>{});
      group(std::integral_constant<int, 2>{});
      group(std::integral_constant<int, 3>{});
      group(std::integral_constant<int, 4>{});
      group(std::integral_constant<int, 5>{});
      group(std::integral_constant<int, 6>{});
      group(std::integral_constant<int, 7>{});
    } else {  // Q6_K: group g = 4h + k, low 4 bits in ql region 2h + (k & 1) (nibble k / 2), the
              // top 2 at bits 2k of qh region h
      const __m512 d = f16x16(sb);
      const __m512i m6 = _mm512_set1_epi8(0x3F);
      auto group = [&](auto kc, int h) {
        constexpr int k = decltype(kc)::value;
        const int g = 4 * h + k;
        if constexpr (kPrefetch) prefetch_ahead<8>(sb, sbb, g);
        const uint8_t* lo = sb + kQ6KLow + 64 * 8 * (2 * h + (k & 1));
        const uint8_t* hi = sb + kQ6KHigh + 64 * 8 * h;
        for (int c = 0; c < 8; ++c) w[c] = q6_levels<k>(chunk(lo, c), chunk(hi, c), m4, m6);
        const __m512 S0 = _mm512_mul_ps(d, s8x16(sb + kQ6KScale + 16 * (2 * g)));
        const __m512 S1 = _mm512_mul_ps(d, s8x16(sb + kQ6KScale + 16 * (2 * g + 1)));
        group_tokens<Math::Halves, T>(w, S0, S1, 0.0f, x, s16, b * 8 + g, acc);
      };
      for (int h = 0; h < 2; ++h) {
        group(std::integral_constant<int, 0>{}, h);
        group(std::integral_constant<int, 1>{}, h);
        group(std::integral_constant<int, 2>{}, h);
        group(std::integral_constant<int, 3>{}, h);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + size_t(t) * size_t(ldy), rows, acc[t]);
}

// tile_tokens for a tail of n < kGroup tokens.
template <GgmlType kType, int T>
void tail(int n, const PackedMatrix& P, const uint8_t* tile, const uint8_t* act, size_t act_stride, float* y,
          int64_t ldy, __mmask16 rows) {
  if constexpr (T > 0) {
    if (n == T) return tile_tokens<kType, T>(P, tile, act, act_stride, y, ldy, rows);
    tail<kType, T - 1>(n, P, tile, act, act_stride, y, ldy, rows);
  }
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
    if (t < a.n_tok)
      tail<kType, kGroup - 1>(a.n_tok - t, P, tile, a.act + size_t(t) * a.act_stride, a.act_stride,
                              a.y + r0 + size_t(t) * size_t(a.ldy), a.ldy, rows);
  }
}

// Packing: lane r of each 64-byte chunk is a dword of row r's block at the same offset, so one
// masked gather (indices r * row_bytes) fills a chunk; padding rows gather as zeros.
struct Gather {
  const uint8_t* base;  // row 0 of the tile, this super-block
  __m512i index;
  __mmask16 rows;
  __m512i at(int off) const { return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, index, base + off, 1); }
};

void gather_chunks(const Gather& g, int src_off, int n_bytes, uint8_t* dst) {
  for (int k = 0; k < n_bytes / 4; ++k) _mm512_storeu_si512(dst + 64 * k, g.at(src_off + 4 * k));
}
// The f16 in the low (high) half of the dword at src_off, 16 rows side by side.
void gather_f16(const Gather& g, int src_off, bool high, uint8_t* dst) {
  __m512i v = g.at(src_off);
  if (high) v = _mm512_srli_epi32(v, 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi32_epi16(v));
}
// Byte j (0..3) of each lane's dword, 16 rows side by side.
inline __m512i byte_of(__m512i v, int j) {
  return _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * j)), _mm512_set1_epi32(0xFF));
}
inline void store_bytes(uint8_t* dst, __m512i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(v));
}

}  // namespace

void pack_tiles(const Tensor& W, PackedMatrix& P, int64_t t0, int64_t t1) {
  const int64_t nsb = P.sbs();
  const size_t sbb = P.sb_bytes(), row_bytes = W.row_bytes();
  const int src_bytes = int(row_size(P.type(), P.sb_elems()));
  const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(int(row_bytes)));
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t left = P.rows() - t * kPackRows;
    const __mmask16 rows = left >= kPackRows ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    uint8_t* out = P.tile(t);
    const uint8_t* src = W.row(t * kPackRows);
    for (int64_t b = 0; b < nsb; ++b) {
      const Gather g{src + size_t(b) * size_t(src_bytes), index, rows};
      uint8_t* sb = out + size_t(b) * sbb;
      switch (P.type()) {
        case GgmlType::Q4_0:
          gather_f16(g, 0, false, sb);
          gather_chunks(g, 2, QK / 2, sb + 32);
          break;
        case GgmlType::Q8_0:
          gather_f16(g, 0, false, sb);
          for (int k = 0; k < QK / 4; ++k)
            _mm512_storeu_si512(sb + 32 + 64 * k, _mm512_mask_xor_epi32(_mm512_setzero_si512(), rows, g.at(2 + 4 * k),
                                                                      _mm512_set1_epi8(char(0x80))));
          break;
        case GgmlType::Q4_A:
          gather_f16(g, 0, false, sb);
          gather_f16(g, 0, true, sb + 32);
          gather_chunks(g, 4, QK_A / 2, sb + kQ4ANib);
          break;
        case GgmlType::Q4_K:
        case GgmlType::Q5_K: {
          gather_f16(g, 0, false, sb);
          gather_f16(g, 0, true, sb + 32);
          // The 6-bit scales and mins of the eight groups from the 12 packed bytes (quant.h).
          const __m512i s0 = g.at(4), s1 = g.at(8), s2 = g.at(12);
          const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(0xF);
          for (int j = 0; j < 4; ++j) {
            store_bytes(sb + kQ4KScale + 16 * j, _mm512_and_si512(byte_of(s0, j), m6));
            store_bytes(sb + kQ4KMin + 16 * j, _mm512_and_si512(byte_of(s1, j), m6));
            const __m512i lo = byte_of(s2, j);
            store_bytes(sb + kQ4KScale + 16 * (j + 4),
                        _mm512_or_si512(_mm512_and_si512(lo, m4), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(s0, j), 6), 4)));
            store_bytes(sb + kQ4KMin + 16 * (j + 4),
                        _mm512_or_si512(_mm512_srli_epi32(lo, 4), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(s1, j), 6), 4)));
          }
          if (P.type() == GgmlType::Q4_K) {
            gather_chunks(g, 16, QK_K / 2, sb + kQ4KNib);
          } else {
            gather_chunks(g, 16, QK_K / 8, sb + kQ5KHigh);
            gather_chunks(g, 16 + QK_K / 8, QK_K / 2, sb + kQ4KNib);
          }
          break;
        }
        default: {  // Q6_K: ql[128] qh[64] scales[16] d
          gather_chunks(g, 0, QK_K / 2, sb + kQ6KLow);
          gather_chunks(g, QK_K / 2, QK_K / 4, sb + kQ6KHigh);
          for (int k = 0; k < 4; ++k) {
            const __m512i v = g.at(192 + 4 * k);
            for (int j = 0; j < 4; ++j) store_bytes(sb + kQ6KScale + 16 * (4 * k + j), byte_of(v, j));
          }
          gather_f16(g, 206, true, sb);  // d is the block's last two bytes
          break;
        }
      }
    }
  }
}

void matmul_packed_tiles(const PackedArgs& a, int64_t t0, int64_t t1) {
  switch (a.P->type()) {
    case GgmlType::Q4_0: return tiles<GgmlType::Q4_0>(a, t0, t1);
    case GgmlType::Q8_0: return tiles<GgmlType::Q8_0>(a, t0, t1);
    case GgmlType::Q4_A: return tiles<GgmlType::Q4_A>(a, t0, t1);
    case GgmlType::Q4_K: return tiles<GgmlType::Q4_K>(a, t0, t1);
    case GgmlType::Q5_K: return tiles<GgmlType::Q5_K>(a, t0, t1);
    case GgmlType::Q6_K: return tiles<GgmlType::Q6_K>(a, t0, t1);
    default: return;
  }
}

}  // namespace pensieve::kernels::vnni
