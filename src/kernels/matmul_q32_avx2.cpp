// y = W x for Q5_0, Q5_1 and Q8_A against 8-bit activations (block_q8_x; Q4_0, Q4_1 and Q8_0 go to
// matmul_group8.inl). A tile of up to 4
// rows x 2 tokens unpacks each weight block once and each activation block once; the per-block
// scales of the 4 rows are converted together, and the terms that do not depend on the levels
// (the -16 offset of Q5_0, the m * sum(x) of the affine types) are accumulated apart as
// one 4-lane vector per token.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"
#include "util/cpu.h"
#include "util/fp16.h"

namespace pensieve::kernels::avx2 {

namespace {

inline __m256i nibbles(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j where bit j of the 32-bit little-endian qh is set.
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(h)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// Per block type: its levels as 32 bytes (unsigned unless kSigned), the offset subtracted from
// unsigned levels, and whether it has an additive m.
template <class B> struct Q32;

template <> struct Q32<block_q5_0> {
  static constexpr bool kSigned = false, kAffine = false;
  static constexpr float kOffset = 16.0f;
  static __m256i levels(const block_q5_0& b) { return _mm256_or_si256(nibbles(b.qs), fifth_bits(b.qh)); }
};
template <> struct Q32<block_q5_1> {
  static constexpr bool kSigned = false, kAffine = true;
  static constexpr float kOffset = 0.0f;
  static __m256i levels(const block_q5_1& b) { return _mm256_or_si256(nibbles(b.qs), fifth_bits(b.qh)); }
};
template <> struct Q32<block_q8_a> {
  static constexpr bool kSigned = true, kAffine = true;
  static constexpr float kOffset = 0.0f;
  static __m256i levels(const block_q8_a& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};

// Lane r of the result is f(r) for r < R (zero above): f gives a half (gather16) or a float.
template <int R, class F>
inline __m128 gather16(F f) {
  __m128i v = _mm_cvtsi32_si128(f(0));
  if constexpr (R > 1) v = _mm_insert_epi16(v, f(1), 1);
  if constexpr (R > 2) v = _mm_insert_epi16(v, f(2), 2);
  if constexpr (R > 3) v = _mm_insert_epi16(v, f(3), 3);
  return _mm_cvtph_ps(v);
}

template <int R, class F>
inline __m128 gather32(F f) {
  __m128 v = _mm_set_ss(f(0));
  if constexpr (R > 1) v = _mm_insert_ps(v, _mm_set_ss(f(1)), 0x10);
  if constexpr (R > 2) v = _mm_insert_ps(v, _mm_set_ss(f(2)), 0x20);
  if constexpr (R > 3) v = _mm_insert_ps(v, _mm_set_ss(f(3)), 0x30);
  return v;
}

// The scales (and for affine types the m) of block b of R rows, one lane per row.
template <class B, int R>
inline void scales(const B* const* w, int64_t b, __m128* d, __m128* m) {
  if constexpr (std::is_same_v<B, block_q8_a>) {
    *d = gather32<R>([&](int r) { return w[r][b].d; });
    *m = gather32<R>([&](int r) { return w[r][b].m; });
  } else {
    *d = gather16<R>([&](int r) { return int(w[r][b].d); });
    if constexpr (Q32<B>::kAffine) *m = gather16<R>([&](int r) { return int(w[r][b].m); });
    else *m = _mm_setzero_ps();
  }
}

template <int r>
inline __m256 lane(__m256 v) {
  return _mm256_permute_ps(v, r * 0x55);
}

template <class B, int R, int NT>
void tile(const MatmulArgs& a, int64_t r0, int t0) {
  using Tr = Q32<B>;
  const B* w[R];
  const block_q8_x* x[NT];
  for (int r = 0; r < R; ++r) w[r] = reinterpret_cast<const B*>(a.w + size_t(r0 + r) * a.w_stride);
  for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const block_q8_x*>(a.act + size_t(t0 + t) * a.act_stride);
  constexpr bool kCorr = Tr::kAffine || Tr::kOffset != 0.0f;
  __m256 acc[R][NT];
  __m128 corr[NT];
  for (int t = 0; t < NT; ++t) {
    corr[t] = _mm_setzero_ps();
    for (int r = 0; r < R; ++r) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t nb = a.cols / QK;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i q[R];
    for (int r = 0; r < R; ++r) q[r] = Tr::levels(w[r][b]);
    __m128 d4, m4;
    scales<B, R>(w, b, &d4, &m4);
    __m128 c4 = _mm_setzero_ps();
    if constexpr (Tr::kAffine) c4 = m4;
    else if constexpr (Tr::kOffset != 0.0f) c4 = _mm_mul_ps(d4, _mm_set1_ps(-Tr::kOffset));
    for (int t = 0; t < NT; ++t) {
      const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].qs));
      const __m128 dd = _mm_mul_ps(d4, _mm_set1_ps(x[t][b].d));
      const __m256 dd8 = _mm256_set_m128(dd, dd);
      auto one = [&](auto rc) {
        constexpr int r = decltype(rc)::value;
        if constexpr (r < R) {
          const __m256i p = Tr::kSigned ? dot_s8s8(q[r], xq) : dot_u8s8(q[r], xq);
          acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), lane<r>(dd8), acc[r][t]);
        }
      };
      one(std::integral_constant<int, 0>{});
      one(std::integral_constant<int, 1>{});
      one(std::integral_constant<int, 2>{});
      one(std::integral_constant<int, 3>{});
      if constexpr (kCorr) corr[t] = _mm_fmadd_ps(c4, _mm_set1_ps(x[t][b].ds), corr[t]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    alignas(16) float c[4];
    _mm_store_ps(c, corr[t]);
    for (int r = 0; r < R; ++r) a.y[(t0 + t) * a.ldy + r0 + r] = hsum(acc[r][t]) + c[r];
  }
}

// Decode and short batches: tiles straight from the blocks.
template <class B>
void run_tiles(const MatmulArgs& a, int64_t r0, int64_t r1) {
  for_each_tile(a, r0, r1, [&](auto rows, auto toks, int64_t r, int t) {
    tile<B, decltype(rows)::value, decltype(toks)::value>(a, r, t);
  });
}

// Prefill: each weight row is unpacked once into levels and float scales held in L1, then run
// against 4 tokens at a time, so per block and token only the integer dot, one conversion and one
// multiply-add remain.
struct alignas(32) V256 {
  __m256i v;
};

struct UnpackedRow32 {
  std::vector<V256> levels;
  std::vector<float> d, c;  // scale, and the coefficient of d_x * sum(x) (-offset * d, or m)
};

template <class B>
void unpack_row(const B* w, int64_t nb, UnpackedRow32& u) {
  using Tr = Q32<B>;
  u.levels.resize(size_t(nb));
  u.d.resize(size_t(nb));
  u.c.resize(size_t(nb));
  for (int64_t b = 0; b < nb; ++b) {
    u.levels[size_t(b)].v = Tr::levels(w[b]);
    float d, m = 0.0f;
    if constexpr (std::is_same_v<B, block_q8_a>) {
      d = w[b].d, m = w[b].m;
    } else {
      d = f16_to_f32(w[b].d);
      if constexpr (Tr::kAffine) m = f16_to_f32(w[b].m);
    }
    u.d[size_t(b)] = d;
    u.c[size_t(b)] = Tr::kAffine ? m : -Tr::kOffset * d;
  }
}

template <class B, int NT>
void row_tokens(const UnpackedRow32& u, int64_t nb, const MatmulArgs& a, int64_t r, int t0) {
  using Tr = Q32<B>;
  const block_q8_x* x[NT];
  for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const block_q8_x*>(a.act + size_t(t0 + t) * a.act_stride);
  __m256 acc[NT];
  float corr[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps(), corr[t] = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i q = u.levels[size_t(b)].v;
    const __m256 d = _mm256_broadcast_ss(&u.d[size_t(b)]);
    const float c = u.c[size_t(b)];
    for (int t = 0; t < NT; ++t) {
      const block_q8_x& xb = x[t][b];
      const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs));
      const __m256i p = Tr::kSigned ? dot_s8s8(q, xq) : dot_u8s8(q, xq);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(d, _mm256_broadcast_ss(&xb.d)), acc[t]);
      if constexpr (Tr::kAffine || Tr::kOffset != 0.0f) corr[t] += c * xb.ds;
    }
  }
  for (int t = 0; t < NT; ++t) a.y[(t0 + t) * a.ldy + r] = hsum(acc[t]) + corr[t];
}

template <class B>
void run_unpacked(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / QK;
  thread_local UnpackedRow32 u;
  for (int tc = 0; tc < a.n_tok; tc += kTokenChunk) {
    const int tc_end = std::min(a.n_tok, tc + kTokenChunk);
    for (int64_t r = r0; r < r1; ++r) {
      unpack_row(reinterpret_cast<const B*>(a.w + size_t(r) * a.w_stride), nb, u);
      int t = tc;
      for (; t + 4 <= tc_end; t += 4) row_tokens<B, 4>(u, nb, a, r, t);
      for (; t < tc_end; ++t) row_tokens<B, 1>(u, nb, a, r, t);
    }
  }
}

template <class B>
void run(const MatmulArgs& a, int64_t r0, int64_t r1) {
  if (a.n_tok >= 4) run_unpacked<B>(a, r0, r1);
  else run_tiles<B>(a, r0, r1);
}

}  // namespace

void matmul_q32(const MatmulArgs& a, int64_t r0, int64_t r1) {
  // Q4_0, Q4_1, Q8_0 and Q4_A always take the group-of-8 kernels (matmul_group8.inl).
  if (cpu_features().use_vnni() ? vnni::matmul_group8(a, r0, r1) : matmul_group8(a, r0, r1)) return;
  switch (a.type) {
    case GgmlType::Q5_0: return run<block_q5_0>(a, r0, r1);
    case GgmlType::Q5_1: return run<block_q5_1>(a, r0, r1);
    default: return run<block_q8_a>(a, r0, r1);
  }
}

}  // namespace pensieve::kernels::avx2
