// y = W x for float weights (F32, F16, BF16) in float32 with FMA: tiles of 4 rows x 2 tokens so
// each weight load serves two tokens and each activation load four rows.
#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"
#include "util/fp16.h"

namespace pensieve::kernels::avx2 {

namespace {

template <GgmlType T>
__m256 load8(const uint8_t* row, int64_t i) {
  if constexpr (T == GgmlType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else if constexpr (T == GgmlType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i)));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <GgmlType T>
float load1(const uint8_t* row, int64_t i) {
  if constexpr (T == GgmlType::F32) return reinterpret_cast<const float*>(row)[i];
  else if constexpr (T == GgmlType::F16) return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  else return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
}

template <GgmlType T, int R, int NT>
void tile(const MatmulArgs& a, int64_t r0, int t0) {
  const uint8_t* w[R];
  const float* x[NT];
  for (int r = 0; r < R; ++r) w[r] = a.w + size_t(r0 + r) * a.w_stride;
  for (int t = 0; t < NT; ++t) x[t] = reinterpret_cast<const float*>(a.act + size_t(t0 + t) * a.act_stride);
  __m256 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= a.cols; i += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load8<T>(w[r], i);
    for (int t = 0; t < NT; ++t) {
      const __m256 xv = _mm256_loadu_ps(x[t] + i);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NT; ++t) {
      float s = hsum(acc[r][t]);
      for (int64_t j = i; j < a.cols; ++j) s += load1<T>(w[r], j) * x[t][j];
      a.y[(t0 + t) * a.ldy + r0 + r] = s;
    }
}

template <GgmlType T>
void run(const MatmulArgs& a, int64_t r0, int64_t r1) {
  for_each_tile(a, r0, r1, [&](auto rows, auto toks, int64_t r, int t) {
    tile<T, decltype(rows)::value, decltype(toks)::value>(a, r, t);
  });
}

}  // namespace

void matmul_float(const MatmulArgs& a, int64_t r0, int64_t r1) {
  switch (a.type) {
    case GgmlType::F32: return run<GgmlType::F32>(a, r0, r1);
    case GgmlType::F16: return run<GgmlType::F16>(a, r0, r1);
    default: return run<GgmlType::BF16>(a, r0, r1);
  }
}

}  // namespace pensieve::kernels::avx2
