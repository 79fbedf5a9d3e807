// y = W x for the K-quants against Q8_K activations. Each weight row is first unpacked into a
// common form held in L1 (one byte per level, a 16 x int16 scale vector per 32 levels, the 16 mins
// of each super-block, and its two float factors), then run against up to 64 tokens, 4 at a time.
// The sub-block scales are applied in the integer domain (vpmaddwd by the scale vector), so a
// super-block costs two float multiply-adds per token however many sub-blocks it has:
//   y += dx * (d * sum_e sc(e) q(e) x(e) - dmin * sum_g m(g) bsum(g)),  g = groups of 16.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"
#include "util/fp16.h"

namespace pensieve::kernels::avx2 {

namespace {

// A 32-byte vector as a plain aligned struct, so std::vector keeps its alignment.
struct alignas(32) V256 {
  __m256i v;
};

struct UnpackedRow {
  std::vector<V256> levels;  // 32 levels (0..63) per vector
  std::vector<V256> scales;  // int16 scale of each level pair, per 32 levels
  std::vector<V256> mins;    // int16 m(g) for the 16 groups of a super-block
  std::vector<float> d, dmin;
  void resize(int64_t nsb) {
    levels.resize(size_t(nsb) * 8);
    scales.resize(size_t(nsb) * 8);
    mins.resize(size_t(nsb));
    d.resize(size_t(nsb));
    dmin.resize(size_t(nsb));
  }
};

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Scale vectors for chunks whose 16-element halves have int16 scales s[2c] and s[2c + 1].
inline void scales_per16(const int16_t* s, V256* out) {
  for (int c = 0; c < 8; ++c)
    out[c].v = _mm256_set_m128i(_mm_set1_epi16(s[2 * c + 1]), _mm_set1_epi16(s[2 * c]));
}

// Q4_K / Q5_K: eight 6-bit (scale, min) pairs packed in 12 bytes.
inline void k4_scales(const uint8_t* packed, UnpackedRow& u, int64_t sb) {
  uint32_t a[3];
  std::memcpy(a, packed, 12);
  const uint32_t sc_lo = a[0] & 0x3f3f3f3f, mn_lo = a[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (a[2] & 0x0f0f0f0f) | (((a[0] >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((a[2] >> 4) & 0x0f0f0f0f) | (((a[1] >> 6) & 0x03030303) << 4);
  uint8_t sc[8], mn[8];
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
  for (int c = 0; c < 8; ++c) u.scales[size_t(sb) * 8 + size_t(c)].v = _mm256_set1_epi16(sc[c]);
  const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
  u.mins[size_t(sb)].v = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));  // m(g) = mn[g / 2]
}

void unpack_q4_K(const uint8_t* row, int64_t nsb, UnpackedRow& u) {
  const __m256i lo4 = _mm256_set1_epi8(0x0F);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const auto& b = reinterpret_cast<const block_q4_K*>(row)[sb];
    V256* lv = &u.levels[size_t(sb) * 8];
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load256(b.qs + 32 * c);
      lv[2 * c].v = _mm256_and_si256(v, lo4);
      lv[2 * c + 1].v = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
    }
    k4_scales(b.scales, u, sb);
    u.d[size_t(sb)] = f16_to_f32(b.d);
    u.dmin[size_t(sb)] = f16_to_f32(b.dmin);
  }
}

void unpack_q5_K(const uint8_t* row, int64_t nsb, UnpackedRow& u) {
  const __m256i lo4 = _mm256_set1_epi8(0x0F), ten = _mm256_set1_epi8(0x10);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const auto& b = reinterpret_cast<const block_q5_K*>(row)[sb];
    V256* lv = &u.levels[size_t(sb) * 8];
    const __m256i h = load256(b.qh);
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load256(b.qs + 32 * c);
      const __m256i b0 = _mm256_set1_epi8(char(1 << (2 * c))), b1 = _mm256_set1_epi8(char(2 << (2 * c)));
      const __m256i h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b0), b0), ten);
      const __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b1), b1), ten);
      lv[2 * c].v = _mm256_or_si256(_mm256_and_si256(v, lo4), h0);
      lv[2 * c + 1].v = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4), h1);
    }
    k4_scales(b.scales, u, sb);
    u.d[size_t(sb)] = f16_to_f32(b.d);
    u.dmin[size_t(sb)] = f16_to_f32(b.dmin);
  }
}

// Q6_K levels are q + 32 (0..63); the -32 goes into the mins: m(g) = 32 sc(g), dmin = d.
void unpack_q6_K(const uint8_t* row, int64_t nsb, UnpackedRow& u) {
  const __m256i lo4 = _mm256_set1_epi8(0x0F), hi2 = _mm256_set1_epi8(0x30);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const auto& b = reinterpret_cast<const block_q6_K*>(row)[sb];
    V256* lv = &u.levels[size_t(sb) * 8];
    for (int h = 0; h < 2; ++h) {
      const __m256i v0 = load256(b.ql + 64 * h), v1 = load256(b.ql + 64 * h + 32);
      const __m256i vh = load256(b.qh + 32 * h);
      lv[4 * h + 0].v = _mm256_or_si256(_mm256_and_si256(v0, lo4), _mm256_and_si256(_mm256_slli_epi16(vh, 4), hi2));
      lv[4 * h + 1].v = _mm256_or_si256(_mm256_and_si256(v1, lo4), _mm256_and_si256(_mm256_slli_epi16(vh, 2), hi2));
      lv[4 * h + 2].v = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), lo4), _mm256_and_si256(vh, hi2));
      lv[4 * h + 3].v = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), lo4),
                                      _mm256_and_si256(_mm256_srli_epi16(vh, 2), hi2));
    }
    alignas(32) int16_t s[16];
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), s16);
    scales_per16(s, &u.scales[size_t(sb) * 8]);
    u.mins[size_t(sb)].v = _mm256_slli_epi16(s16, 5);
    u.d[size_t(sb)] = u.dmin[size_t(sb)] = f16_to_f32(b.d);
  }
}

// Q3_K levels are q + 4 (0..7): two bits from qs, the third from hmask; m(g) = 4 sc(g), dmin = d.
void unpack_q3_K(const uint8_t* row, int64_t nsb, UnpackedRow& u) {
  const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const auto& b = reinterpret_cast<const block_q3_K*>(row)[sb];
    V256* lv = &u.levels[size_t(sb) * 8];
    const __m256i hm = load256(b.hmask);
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load256(b.qs + 32 * n);
      for (int j = 0; j < 4; ++j) {
        const __m256i bit = _mm256_set1_epi8(char(1 << (4 * n + j)));
        const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four);
        const __m256i low = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(2 * j)), three);
        lv[4 * n + j].v = _mm256_or_si256(low, high);
      }
    }
    alignas(32) int16_t s[16];
    for (int g = 0; g < 16; ++g) s[g] = int16_t(k3_scale(b.scales, g));
    scales_per16(s, &u.scales[size_t(sb) * 8]);
    u.mins[size_t(sb)].v = _mm256_slli_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)), 2);
    u.d[size_t(sb)] = u.dmin[size_t(sb)] = f16_to_f32(b.d);
  }
}

void unpack_q2_K(const uint8_t* row, int64_t nsb, UnpackedRow& u) {
  const __m256i three = _mm256_set1_epi8(3);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const auto& b = reinterpret_cast<const block_q2_K*>(row)[sb];
    V256* lv = &u.levels[size_t(sb) * 8];
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load256(b.qs + 32 * n);
      for (int j = 0; j < 4; ++j)
        lv[4 * n + j].v = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(2 * j)), three);
    }
    alignas(32) int16_t s[16], m[16];
    for (int g = 0; g < 16; ++g) s[g] = int16_t(b.scales[g] & 0xF), m[g] = int16_t(b.scales[g] >> 4);
    scales_per16(s, &u.scales[size_t(sb) * 8]);
    u.mins[size_t(sb)].v = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
    u.d[size_t(sb)] = f16_to_f32(b.d);
    u.dmin[size_t(sb)] = f16_to_f32(b.dmin);
  }
}

// NT tokens against one unpacked row.
template <int NT>
void row_tokens(const UnpackedRow& u, int64_t nsb, const MatmulArgs& a, int64_t r, int t0) {
  const block_q8_K* x[NT];
  for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const block_q8_K*>(a.act + size_t(t0 + t) * a.act_stride);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    const V256* lv = &u.levels[size_t(sb) * 8];
    const V256* sc = &u.scales[size_t(sb) * 8];
    for (int c = 0; c < 8; ++c) {
      const __m256i q = lv[c].v, s = sc[c].v;
      for (int t = 0; t < NT; ++t) {
        const __m256i p = _mm256_maddubs_epi16(q, load256(x[t][sb].qs + 32 * c));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, s));
      }
    }
    const __m256i mn = u.mins[size_t(sb)].v;
    const float d = u.d[size_t(sb)], dmin = u.dmin[size_t(sb)];
    for (int t = 0; t < NT; ++t) {
      const __m256i msum = _mm256_madd_epi16(load256(x[t][sb].bsums), mn);
      const float dx = x[t][sb].d;
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * dx), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) a.y[(t0 + t) * a.ldy + r] = hsum(acc[t]);
}

using Unpacker = void (*)(const uint8_t*, int64_t, UnpackedRow&);

}  // namespace

void matmul_qk(const MatmulArgs& a, int64_t r0, int64_t r1) {
  // Decode reads each weight once: unpacking first would only add work.
  if (a.n_tok < 4 && matmul_qk_direct(a, r0, r1)) return;
  Unpacker unpack = nullptr;
  switch (a.type) {
    case GgmlType::Q2_K: unpack = unpack_q2_K; break;
    case GgmlType::Q3_K: unpack = unpack_q3_K; break;
    case GgmlType::Q4_K: unpack = unpack_q4_K; break;
    case GgmlType::Q5_K: unpack = unpack_q5_K; break;
    default: unpack = unpack_q6_K; break;
  }
  const int64_t nsb = a.cols / QK_K;
  thread_local UnpackedRow u;
  u.resize(nsb);
  for (int tc = 0; tc < a.n_tok; tc += kTokenChunk) {
    const int tc_end = std::min(a.n_tok, tc + kTokenChunk);
    for (int64_t r = r0; r < r1; ++r) {
      unpack(a.w + size_t(r) * a.w_stride, nsb, u);
      int t = tc;
      for (; t + 4 <= tc_end; t += 4) row_tokens<4>(u, nsb, a, r, t);
      for (; t < tc_end; ++t) row_tokens<1>(u, nsb, a, r, t);
    }
  }
}

}  // namespace pensieve::kernels::avx2
