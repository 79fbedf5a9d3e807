// Scalar reference kernels: vector operations, activation quantization, the integer dot products
// of every weight type with its activation format, and the row-range matmul built on them.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/kernels_ref.h"
#include "kernels/quant_fit.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve::kernels {

ActFormat act_format(GgmlType wtype) {
  switch (wtype) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return ActFormat::F32;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q8_K: return ActFormat::Q8K;
    default: return ActFormat::Q8X;
  }
}

size_t act_row_bytes(GgmlType wtype, int64_t n) {
  switch (act_format(wtype)) {
    case ActFormat::F32: return size_t(n) * sizeof(float);
    case ActFormat::Q8K: return size_t(n / QK_K) * sizeof(block_q8_K);
    case ActFormat::Q8X: break;
  }
  return size_t(n / QK) * sizeof(block_q8_x);
}

namespace ref {

void rmsnorm(const float* x, const float* weight, float* y, int n, float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

float dot(const float* a, const float* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return float(s);
}

float dot_f16(const uint16_t* a, const float* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += double(f16_to_f32(a[i])) * b[i];
  return float(s);
}

float dot_i8(const int8_t* a, const float* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return float(s);
}

void axpy(float a, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

void axpy_i8(float a, const int8_t* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * float(x[i]);
}

void softmax(float* x, int n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(float* gate, const float* up, int n) {
  for (int i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void f32_to_f16_row(const float* x, uint16_t* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

static void quantize_q8_x(const float* x, block_q8_x* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    float amax = 0.0f;
    for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    if (!std::isfinite(amax)) amax = 0.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK; ++j) {
      y[b].qs[j] = int8_t(quant::round_clamp(x[j] * id, -127, 127));
      sum += y[b].qs[j];
    }
    y[b].d = amax / 127.0f;
    y[b].ds = y[b].d * float(sum);
  }
}

void quantize_act(GgmlType wtype, const float* x, int64_t n, void* out) {
  switch (act_format(wtype)) {
    case ActFormat::F32: std::memcpy(out, x, size_t(n) * sizeof(float)); return;
    case ActFormat::Q8K: quantize_q8_K(x, static_cast<block_q8_K*>(out), n); return;
    case ActFormat::Q8X: quantize_q8_x(x, static_cast<block_q8_x*>(out), n); return;
  }
}

}  // namespace ref
}  // namespace pensieve::kernels
