// attend_group (attention.h) with 512-bit vectors: head_dim / 16 vectors per row; up to 6 of them
// per query (head_dim 96) stay in registers for four queries, larger heads take several passes
// over the values. Built with AVX-512 enabled (this file only); reached only when use_vnni().
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own _mm512_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "model/attention.h"
#include "kernels/kernels.h"

namespace pensieve::kernels::vnni {

namespace {

constexpr int kMaxVec = 6;  // 16-float vectors of a query's output held in registers per pass

template <KvType T>
inline __m512 load16(const void* row, int64_t i) {
  if constexpr (T == KvType::F32) return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  if constexpr (T == KvType::Q8)
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(row) + i))));
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i)));
}

// A row's factor: Q8's scale of the head, else 1.
template <KvType T>
inline float row_scale(const void* row, const AttnRows& rows) {
  if constexpr (T != KvType::Q8) return 1.0f;
  return kv_q8_scale(row, size_t(rows.scale_at));
}

template <KvType T, int V>
void values(const AttnQuery* qs, int n, const AttnRows& rows, const float* const* s, int lo, int hi, int64_t d0) {
  __m512 o[kAttnGroup][V];
  for (int g = 0; g < n; ++g)
    for (int v = 0; v < V; ++v) o[g][v] = _mm512_setzero_ps();
  for (int p = lo; p <= hi; ++p) {
    __m512 x[V];
    const void* row = rows.value_rows[p - rows.first];
    for (int v = 0; v < V; ++v) x[v] = load16<T>(row, rows.off + d0 + 16 * v);
    const float d = row_scale<T>(row, rows);
    for (int g = 0; g < n; ++g) {
      if (p < qs[g].lo || p > qs[g].hi) continue;
      const __m512 w = _mm512_set1_ps(T == KvType::Q8 ? s[g][p - qs[g].lo] * d : s[g][p - qs[g].lo]);
      for (int v = 0; v < V; ++v) o[g][v] = _mm512_fmadd_ps(w, x[v], o[g][v]);
    }
  }
  for (int g = 0; g < n; ++g)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(qs[g].out + d0 + 16 * v, o[g][v]);
}

template <KvType T>
void attend(const AttnQuery* qs, int n, const AttnRows& rows, int head_dim, float scale, std::vector<float>& scores) {
  int lo = qs[0].lo, hi = qs[0].hi;
  size_t total = 0;
  for (int g = 0; g < n; ++g) {
    lo = std::min(lo, qs[g].lo), hi = std::max(hi, qs[g].hi);
    total += size_t(qs[g].hi - qs[g].lo + 1);
  }
  scores.resize(total);
  float* s[kAttnGroup];
  for (int g = 0, at = 0; g < n; at += qs[g].hi - qs[g].lo + 1, ++g) s[g] = scores.data() + at;
  const int nv = head_dim / 16;
  // Scores: each key row widened once, one dot product per query (16-float partial sums in
  // dimension order, then one reduction).
  for (int p = lo; p <= hi; ++p) {
    const void* k = rows.key_rows[p - rows.first];
    const float d = scale * row_scale<T>(k, rows);
    for (int g = 0; g < n; ++g) {
      if (p < qs[g].lo || p > qs[g].hi) continue;
      __m512 acc = _mm512_mul_ps(load16<T>(k, rows.off), _mm512_loadu_ps(qs[g].q));
      for (int v = 1; v < nv; ++v)
        acc = _mm512_fmadd_ps(load16<T>(k, rows.off + 16 * v), _mm512_loadu_ps(qs[g].q + 16 * v), acc);
      s[g][p - qs[g].lo] = d * _mm512_reduce_add_ps(acc);
    }
  }
  for (int g = 0; g < n; ++g) softmax(s[g], qs[g].hi - qs[g].lo + 1);
  // Values, position by position into outputs held in registers.
  for (int d0 = 0; d0 < nv; d0 += kMaxVec) {
    switch (std::min(kMaxVec, nv - d0)) {
      case 1: values<T, 1>(qs, n, rows, s, lo, hi, 16 * d0); break;
      case 2: values<T, 2>(qs, n, rows, s, lo, hi, 16 * d0); break;
      case 3: values<T, 3>(qs, n, rows, s, lo, hi, 16 * d0); break;
      case 4: values<T, 4>(qs, n, rows, s, lo, hi, 16 * d0); break;
      case 5: values<T, 5>(qs, n, rows, s, lo, hi, 16 * d0); break;
      default: values<T, 6>(qs, n, rows, s, lo, hi, 16 * d0); break;
    }
  }
}

}  // namespace

void attend_group(const AttnQuery* qs, int n, const AttnRows& rows, int head_dim, float scale,
                  std::vector<float>& scores) {
  switch (rows.type) {
    case KvType::F32: attend<KvType::F32>(qs, n, rows, head_dim, scale, scores); break;
    case KvType::Q8: attend<KvType::Q8>(qs, n, rows, head_dim, scale, scores); break;
    default: attend<KvType::F16>(qs, n, rows, head_dim, scale, scores); break;
  }
}

}  // namespace pensieve::kernels::vnni
