// AVX2/FMA vector operations, activation quantization, and the matmul kernels of the float weight
// types; the quantized ones live in matmul_q32_avx2.cpp and matmul_qk_avx2.cpp.
#include <cmath>
#include <cstring>

#include "kernels/kernels_avx2.h"
#include "kernels/kernels_ref.h"
#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"
#include "util/fp16.h"

namespace pensieve::kernels::avx2 {

void rmsnorm(const float* x, const float* weight, float* y, int n, float eps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  double ss = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / n + eps));
  const __m256 s = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(weight + i)));
  for (; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

float dot(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Eight elements of a half or int8 row widened to float, and one of them.
static __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
static __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
static float load1(uint16_t v) { return f16_to_f32(v); }
static float load1(int8_t v) { return float(v); }

// dot and axpy with the row a widened from half or int8.
template <class T>
static float dot_widened(const T* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(load8(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(load8(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += load1(a[i]) * b[i];
  return s;
}
template <class T>
static void axpy_widened(float a, const T* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * load1(x[i]);
}

float dot_f16(const uint16_t* a, const float* b, int n) { return dot_widened(a, b, n); }
float dot_i8(const int8_t* a, const float* b, int n) { return dot_widened(a, b, n); }

void axpy(float a, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, int n) { axpy_widened(a, x, y, n); }
void axpy_i8(float a, const int8_t* x, float* y, int n) { axpy_widened(a, x, y, n); }

// The scalar tails go through the same vector exp (one padded lane group) so every element of a
// row is computed the same way.
static void exp_tail(float* x, int n, __m256 sub, __m256 mul) {
  alignas(32) float buf[8] = {0};
  std::memcpy(buf, x, size_t(n) * 4);
  _mm256_store_ps(buf, _mm256_mul_ps(exp(_mm256_sub_ps(_mm256_load_ps(buf), sub)), mul));
  std::memcpy(x, buf, size_t(n) * 4);
}

void softmax(float* x, int n) {
  if (n <= 0) return;
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  float mx = hmax(vm);
  for (int j = i; j < n; ++j) mx = std::fmax(mx, x[j]);
  const __m256 m = _mm256_set1_ps(mx), one = _mm256_set1_ps(1.0f);
  __m256 vs = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    vs = _mm256_add_ps(vs, e);
  }
  double sum = hsum(vs);
  if (i < n) {
    exp_tail(x + i, n - i, m, one);
    for (int j = i; j < n; ++j) sum += x[j];
  }
  const float inv = float(1.0 / sum);
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
  for (; i < n; ++i) x[i] *= inv;
}

void silu_mul(float* gate, const float* up, int n) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp(_mm256_sub_ps(zero, g));
    _mm256_storeu_ps(gate + i, _mm256_div_ps(_mm256_mul_ps(g, _mm256_loadu_ps(up + i)), _mm256_add_ps(one, e)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void f32_to_f16_row(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

// Rounds 32 floats times `id` to int8 (same rounding as the reference: to nearest, ties to even)
// and returns their sum.
static int quantize32(const float* x, float id, int8_t* out) {
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int k = 0; k < 4; ++k)
    q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
  const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
  __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  // pack works within 128-bit lanes: restore element order.
  p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), p8);
  return hsum_i32(sum);
}

static float amax_of(const float* x, int n) {
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, abs(_mm256_loadu_ps(x + i)));
  const float a = hmax(m);
  return std::isfinite(a) ? a : 0.0f;
}

void quantize_act(GgmlType wtype, const float* x, int64_t n, void* out) {
  switch (act_format(wtype)) {
    case ActFormat::F32: std::memcpy(out, x, size_t(n) * sizeof(float)); return;
    case ActFormat::Q8X: {
      auto* y = static_cast<block_q8_x*>(out);
      for (int64_t b = 0; b < n / QK; ++b, x += QK) {
        const float amax = amax_of(x, QK);
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        const int sum = quantize32(x, id, y[b].qs);
        y[b].d = amax / 127.0f;
        y[b].ds = y[b].d * float(sum);
      }
      return;
    }
    case ActFormat::Q8K: {
      auto* y = static_cast<block_q8_K*>(out);
      for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        const float amax = amax_of(x, QK_K);
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int k = 0; k < QK_K / 32; ++k) quantize32(x + 32 * k, id, y[b].qs + 32 * k);
        y[b].d = amax / 127.0f;
        for (int g = 0; g < QK_K / 16; ++g) {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y[b].qs + 16 * g));
          const __m256i w = _mm256_cvtepi8_epi16(v);
          const __m256i s = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
          y[b].bsums[g] = int16_t(hsum_i32(s));
        }
      }
      return;
    }
  }
}

void matmul_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  switch (a.type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return matmul_float(a, r0, r1);
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
    case GgmlType::Q8_A:
    case GgmlType::Q4_A: return matmul_q32(a, r0, r1);
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return matmul_qk(a, r0, r1);
    default: return ref::matmul_rows(a, r0, r1);
  }
}

}  // namespace pensieve::kernels::avx2
