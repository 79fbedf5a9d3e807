// Dot products of one K-quant row with one Q8_K activation row, straight from the blocks: the
// decode path (a token or a few), where unpacking a row first would cost more than it saves.
// Exactly the arithmetic of the unpacked kernels (matmul_qk_avx2.cpp), lane for lane and in the
// same order: sub-block scales applied with vpmaddwd, the mins through the activation block sums,
// then per super-block one multiply-add of the level sums and one of the min sums. So a token's
// result does not depend on how many tokens share the call (batched decoding relies on it).
#include <cstring>

#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"
#include "util/fp16.h"

namespace pensieve::kernels::avx2 {

namespace {

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// vpshufb indices that broadcast int16 element e of each 128-bit lane (lo lane: e0, hi lane: e1).
inline __m256i pick16(int e0, int e1) {
  return _mm256_setr_epi8(char(2 * e0), char(2 * e0 + 1), char(2 * e0), char(2 * e0 + 1), char(2 * e0), char(2 * e0 + 1),
                          char(2 * e0), char(2 * e0 + 1), char(2 * e0), char(2 * e0 + 1), char(2 * e0), char(2 * e0 + 1),
                          char(2 * e0), char(2 * e0 + 1), char(2 * e0), char(2 * e0 + 1), char(2 * e1), char(2 * e1 + 1),
                          char(2 * e1), char(2 * e1 + 1), char(2 * e1), char(2 * e1 + 1), char(2 * e1), char(2 * e1 + 1),
                          char(2 * e1), char(2 * e1 + 1), char(2 * e1), char(2 * e1 + 1), char(2 * e1), char(2 * e1 + 1),
                          char(2 * e1), char(2 * e1 + 1));
}

// The eight 6-bit scales (low half) and mins (high half) of a Q4_K/Q5_K block as 16 int16.
inline __m256i k4_scales_mins(const uint8_t* packed) {
  uint32_t a[3];
  std::memcpy(a, packed, 12);
  const uint32_t sc_lo = a[0] & 0x3f3f3f3f, mn_lo = a[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (a[2] & 0x0f0f0f0f) | (((a[0] >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((a[2] >> 4) & 0x0f0f0f0f) | (((a[1] >> 6) & 0x03030303) << 4);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(int(mn_hi), int(mn_lo), int(sc_hi), int(sc_lo)));
}

// The unpacked kernels' min vector: mn_j for the two 16-element groups of sub-block j.
inline __m256i k4_mins_per16(__m256i sm16) {
  const __m128i mn = _mm256_extracti128_si256(sm16, 1);
  return _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
}

template <bool kFive, class B>
float dot_k45(const B* w, const block_q8_K* x, int64_t nsb) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const B& b = w[sb];
    const float dx = x[sb].d;
    const __m256i sm16 = k4_scales_mins(b.scales);
    const __m256i msum = _mm256_madd_epi16(load256(x[sb].bsums), k4_mins_per16(sm16));
    const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16));
    __m256i isum = _mm256_setzero_si256(), hcur = _mm256_setzero_si256();
    if constexpr (kFive) hcur = load256(reinterpret_cast<const block_q5_K&>(b).qh);
    const int8_t* xq = x[sb].qs;
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load256(b.qs + 32 * c);
      __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      if constexpr (kFive) {
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hcur, 4), m16));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hcur, 3), m16));
        hcur = _mm256_srli_epi16(hcur, 2);
      }
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(xq + 64 * c)),
                                           _mm256_shuffle_epi8(sc, pick16(2 * c, 2 * c)));
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(xq + 64 * c + 32)),
                                           _mm256_shuffle_epi8(sc, pick16(2 * c + 1, 2 * c + 1)));
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(f16_to_f32(b.d) * dx), acc);
    acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(f16_to_f32(b.dmin) * dx), acc);
  }
  return hsum(acc);
}

float dot_q6_K(const block_q6_K* w, const block_q8_K* x, int64_t nsb) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const block_q6_K& b = w[sb];
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    // Levels are q + 32: 32 * sum_g sc(g) bsum(g) comes back out as the mins term.
    const __m256i msum = _mm256_madd_epi16(load256(x[sb].bsums), _mm256_slli_epi16(sc16, 5));
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i sc = h == 0 ? _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc16))
                                : _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc16, 1));
      const __m256i v0 = load256(b.ql + 64 * h), v1 = load256(b.ql + 64 * h + 32), vh = load256(b.qh + 32 * h);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(v0, m4), _mm256_and_si256(_mm256_slli_epi16(vh, 4), m30)),
          _mm256_or_si256(_mm256_and_si256(v1, m4), _mm256_and_si256(_mm256_slli_epi16(vh, 2), m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), _mm256_and_si256(vh, m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(vh, 2), m30))};
      const int8_t* xq = x[sb].qs + 128 * h;
      for (int k = 0; k < 4; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], load256(xq + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, pick16(2 * k, 2 * k + 1))));
      }
    }
    const __m256 dd = _mm256_set1_ps(f16_to_f32(b.d) * x[sb].d);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc);
    acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), dd, acc);
  }
  return hsum(acc);
}

}  // namespace

bool matmul_qk_direct(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nsb = a.cols / QK_K;
  // Rows outer, tokens inner: a few sequences decoding together read each row from memory once.
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = a.w + size_t(r) * a.w_stride;
    for (int t = 0; t < a.n_tok; ++t) {
      const auto* x = reinterpret_cast<const block_q8_K*>(a.act + size_t(t) * a.act_stride);
      float* y = a.y + t * a.ldy;
      switch (a.type) {
        case GgmlType::Q4_K: y[r] = dot_k45<false>(reinterpret_cast<const block_q4_K*>(row), x, nsb); break;
        case GgmlType::Q5_K: y[r] = dot_k45<true>(reinterpret_cast<const block_q5_K*>(row), x, nsb); break;
        case GgmlType::Q6_K: y[r] = dot_q6_K(reinterpret_cast<const block_q6_K*>(row), x, nsb); break;
        default: return false;
      }
    }
  }
  return true;
}

}  // namespace pensieve::kernels::avx2
