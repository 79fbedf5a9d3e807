// Scalar codecs of the GGUF block types (and our Q8_A, Q4_A): dequantizers for every type, quantizers of
// the 32-wide types, and the by-type dispatch. The K-quant quantizers live in quant_k_ref.cpp.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/kernels_ref.h"
#include "kernels/quant_fit.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve::kernels::ref {

using quant::round_clamp;

void dequantize_q4_0(const block_q4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = d * float((x[b].qs[j] & 0xF) - 8);
      y[j + QK / 2] = d * float((x[b].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_q4_1(const block_q4_1* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK) {
    const float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = d * float(x[b].qs[j] & 0xF) + m;
      y[j + QK / 2] = d * float(x[b].qs[j] >> 4) + m;
    }
  }
}

void dequantize_q4_a(const block_q4_a* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_A; ++b) {
    const float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
    for (int h = 0; h < 2; ++h, y += QK)
      for (int j = 0; j < QK / 2; ++j) {
        y[j] = d * float(x[b].qs[16 * h + j] & 0xF) + m;
        y[j + QK / 2] = d * float(x[b].qs[16 * h + j] >> 4) + m;
      }
  }
}

// The fifth bit of element j of a Q5 block is bit j of the little-endian 32-bit word qh.
static uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;
}

void dequantize_q5_0(const block_q5_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK) {
    const float d = f16_to_f32(x[b].d);
    const uint32_t qh = load_qh(x[b].qh);
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (x[b].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (x[b].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = d * float(lo - 16);
      y[j + QK / 2] = d * float(hi - 16);
    }
  }
}

void dequantize_q5_1(const block_q5_1* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK) {
    const float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
    const uint32_t qh = load_qh(x[b].qh);
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (x[b].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (x[b].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = d * float(lo) + m;
      y[j + QK / 2] = d * float(hi) + m;
    }
  }
}

void dequantize_q8_0(const block_q8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < QK; ++j) y[j] = d * float(x[b].qs[j]);
  }
}

void dequantize_q8_a(const block_q8_a* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, y += QK)
    for (int j = 0; j < QK; ++j) y[j] = x[b].d * float(x[b].qs[j]) + x[b].m;
}

void dequantize_q2_K(const block_q2_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
    // Element e: 2 bits at qs[(e / 128) * 32 + e % 32], shift 2 * ((e % 128) / 32); scale e / 16.
    for (int e = 0; e < QK_K; ++e) {
      const int q = (x[b].qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const uint8_t sc = x[b].scales[e / 16];
      y[b * QK_K + e] = d * float(sc & 0xF) * float(q) - dmin * float(sc >> 4);
    }
  }
}

void dequantize_q3_K(const block_q3_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float d = f16_to_f32(x[b].d);
    // Low 2 bits as in Q2_K; the third bit is bit (e / 32) of hmask[e % 32]; a clear bit means -4.
    for (int e = 0; e < QK_K; ++e) {
      const int lo = (x[b].qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const int high = (x[b].hmask[e % 32] >> (e / 32)) & 1;
      const int q = lo - (high ? 0 : 4);
      y[b * QK_K + e] = d * float(k3_scale(x[b].scales, e / 16)) * float(q);
    }
  }
}

void dequantize_q4_K(const block_q4_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
    // Each 64 elements share 32 bytes: the first 32 in the low nibbles, the next 32 in the high.
    for (int e = 0; e < QK_K; ++e) {
      const uint8_t byte = x[b].qs[(e / 64) * 32 + e % 32];
      const int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      uint8_t sc, mn;
      k4_scale_min(x[b].scales, e / 32, &sc, &mn);
      y[b * QK_K + e] = d * float(sc) * float(q) - dmin * float(mn);
    }
  }
}

void dequantize_q5_K(const block_q5_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
    for (int e = 0; e < QK_K; ++e) {
      const uint8_t byte = x[b].qs[(e / 64) * 32 + e % 32];
      const int lo = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      const int q = lo | (((x[b].qh[e % 32] >> (e / 32)) & 1) << 4);
      uint8_t sc, mn;
      k4_scale_min(x[b].scales, e / 32, &sc, &mn);
      y[b * QK_K + e] = d * float(sc) * float(q) - dmin * float(mn);
    }
  }
}

void dequantize_q6_K(const block_q6_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float d = f16_to_f32(x[b].d);
    // Element e = 128 h + 32 k + l: low 4 bits in ql[64 h + l + 32 (k & 1)] (nibble k / 2), high 2
    // bits at qh[32 h + l] bits 2k.
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t lob = x[b].ql[64 * h + l + 32 * (k & 1)];
      const int lo = (k < 2) ? (lob & 0xF) : (lob >> 4);
      const int hi = (x[b].qh[32 * h + l] >> (2 * k)) & 3;
      y[b * QK_K + e] = d * float(x[b].scales[e / 16]) * float((lo | (hi << 4)) - 32);
    }
  }
}

void dequantize_q8_K(const block_q8_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b)
    for (int e = 0; e < QK_K; ++e) y[b * QK_K + e] = x[b].d * float(x[b].qs[e]);
}

void quantize_q4_0(const float* x, block_q4_0* y, int64_t n) {
  int8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    y[b].d = f32_to_f16(quant::fit_symmetric(x, nullptr, QK, 8, q));
    const float d = f16_to_f32(y[b].d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; ++j) q[j] = int8_t(round_clamp(x[j] * id, -8, 7) + 8);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = uint8_t(q[j] | (q[j + QK / 2] << 4));
  }
}

// Fits x ≈ d * q + m with q in [0, nmax], stores d and m as halves and returns the levels for the
// stored (rounded) d and m.
static void fit_affine_f16(const float* x, int nmax, uint8_t* q, f16_t* d16, f16_t* m16, int n = QK) {
  float m;
  const float d = quant::fit_affine(x, nullptr, n, nmax, true, q, &m);
  *d16 = f32_to_f16(d);
  *m16 = f32_to_f16(m);
  const float dr = f16_to_f32(*d16), mr = f16_to_f32(*m16), id = dr != 0.0f ? 1.0f / dr : 0.0f;
  for (int j = 0; j < n; ++j) q[j] = uint8_t(round_clamp((x[j] - mr) * id, 0, nmax));
}

void quantize_q4_1(const float* x, block_q4_1* y, int64_t n) {
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    fit_affine_f16(x, 15, q, &y[b].d, &y[b].m);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = uint8_t(q[j] | (q[j + QK / 2] << 4));
  }
}

void quantize_q4_a(const float* x, block_q4_a* y, int64_t n) {
  uint8_t q[QK_A];
  for (int64_t b = 0; b < n / QK_A; ++b, x += QK_A) {
    fit_affine_f16(x, 15, q, &y[b].d, &y[b].m, QK_A);
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < QK / 2; ++j)
        y[b].qs[16 * h + j] = uint8_t(q[32 * h + j] | (q[32 * h + j + QK / 2] << 4));
  }
}

static void pack_q5(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < QK / 2; ++j) {
    qs[j] = uint8_t((q[j] & 0xF) | ((q[j + QK / 2] & 0xF) << 4));
    h |= uint32_t(q[j] >> 4) << j;
    h |= uint32_t(q[j + QK / 2] >> 4) << (j + 16);
  }
  std::memcpy(qh, &h, 4);
}

void quantize_q5_0(const float* x, block_q5_0* y, int64_t n) {
  int8_t s[QK];
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    y[b].d = f32_to_f16(quant::fit_symmetric(x, nullptr, QK, 16, s));
    const float d = f16_to_f32(y[b].d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; ++j) q[j] = uint8_t(round_clamp(x[j] * id, -16, 15) + 16);
    pack_q5(q, y[b].qs, y[b].qh);
  }
}

void quantize_q5_1(const float* x, block_q5_1* y, int64_t n) {
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    fit_affine_f16(x, 31, q, &y[b].d, &y[b].m);
    pack_q5(q, y[b].qs, y[b].qh);
  }
}

void quantize_q8_0(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    float amax = 0.0f;
    for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    y[b].d = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(y[b].d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; ++j) y[b].qs[j] = int8_t(round_clamp(x[j] * id, -127, 127));
  }
}

void quantize_q8_a(const float* x, block_q8_a* y, int64_t n) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < QK; ++j) {
      lo = std::fmin(lo, x[j]);
      hi = std::fmax(hi, x[j]);
    }
    if (!std::isfinite(lo) || !std::isfinite(hi)) lo = hi = 0.0f;
    // 256 levels span [lo, hi]; level -128 sits at lo.
    const float d = (hi - lo) / 255.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    y[b].d = d;
    y[b].m = lo + 128.0f * d;
    for (int j = 0; j < QK; ++j) y[b].qs[j] = int8_t(round_clamp((x[j] - y[b].m) * id, -128, 127));
  }
}

void quantize_q8_K(const float* x, block_q8_K* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    float amax = 0.0f;
    for (int j = 0; j < QK_K; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    if (!std::isfinite(amax)) amax = 0.0f;
    y[b].d = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < QK_K; ++j) y[b].qs[j] = int8_t(round_clamp(x[j] * id, -127, 127));
    for (int g = 0; g < QK_K / 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += y[b].qs[16 * g + j];
      y[b].bsums[g] = int16_t(s);
    }
  }
}

static void check_blocks(GgmlType t, int64_t n, const char* what) {
  const auto tr = type_traits(t);
  if (!tr) throw Error(std::string(what) + ": unsupported tensor type id " + std::to_string(uint32_t(t)));
  if (n < 0 || n % tr->block_elems != 0)
    throw Error(std::string(what) + ": " + std::to_string(n) + " elements is not a whole number of " +
                std::string(tr->name) + " blocks of " + std::to_string(tr->block_elems));
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  check_blocks(t, n, "dequantize");
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return;
    case GgmlType::Q4_0: return dequantize_q4_0(static_cast<const block_q4_0*>(src), dst, n);
    case GgmlType::Q4_1: return dequantize_q4_1(static_cast<const block_q4_1*>(src), dst, n);
    case GgmlType::Q5_0: return dequantize_q5_0(static_cast<const block_q5_0*>(src), dst, n);
    case GgmlType::Q5_1: return dequantize_q5_1(static_cast<const block_q5_1*>(src), dst, n);
    case GgmlType::Q8_0: return dequantize_q8_0(static_cast<const block_q8_0*>(src), dst, n);
    case GgmlType::Q8_A: return dequantize_q8_a(static_cast<const block_q8_a*>(src), dst, n);
    case GgmlType::Q4_A: return dequantize_q4_a(static_cast<const block_q4_a*>(src), dst, n);
    case GgmlType::Q2_K: return dequantize_q2_K(static_cast<const block_q2_K*>(src), dst, n);
    case GgmlType::Q3_K: return dequantize_q3_K(static_cast<const block_q3_K*>(src), dst, n);
    case GgmlType::Q4_K: return dequantize_q4_K(static_cast<const block_q4_K*>(src), dst, n);
    case GgmlType::Q5_K: return dequantize_q5_K(static_cast<const block_q5_K*>(src), dst, n);
    case GgmlType::Q6_K: return dequantize_q6_K(static_cast<const block_q6_K*>(src), dst, n);
    case GgmlType::Q8_K: return dequantize_q8_K(static_cast<const block_q8_K*>(src), dst, n);
    default: break;
  }
  throw Error("dequantize: tensor type " + std::string(type_name(t)) + " is not supported");
}

size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  check_blocks(t, n, "quantize");
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * 4); break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]);
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
      break;
    case GgmlType::Q4_0: quantize_q4_0(src, static_cast<block_q4_0*>(dst), n); break;
    case GgmlType::Q4_1: quantize_q4_1(src, static_cast<block_q4_1*>(dst), n); break;
    case GgmlType::Q5_0: quantize_q5_0(src, static_cast<block_q5_0*>(dst), n); break;
    case GgmlType::Q5_1: quantize_q5_1(src, static_cast<block_q5_1*>(dst), n); break;
    case GgmlType::Q8_0: quantize_q8_0(src, static_cast<block_q8_0*>(dst), n); break;
    case GgmlType::Q8_A: quantize_q8_a(src, static_cast<block_q8_a*>(dst), n); break;
    case GgmlType::Q4_A: quantize_q4_a(src, static_cast<block_q4_a*>(dst), n); break;
    case GgmlType::Q2_K: quantize_q2_K(src, static_cast<block_q2_K*>(dst), n); break;
    case GgmlType::Q3_K: quantize_q3_K(src, static_cast<block_q3_K*>(dst), n); break;
    case GgmlType::Q4_K: quantize_q4_K(src, static_cast<block_q4_K*>(dst), n); break;
    case GgmlType::Q5_K: quantize_q5_K(src, static_cast<block_q5_K*>(dst), n); break;
    case GgmlType::Q6_K: quantize_q6_K(src, static_cast<block_q6_K*>(dst), n); break;
    case GgmlType::Q8_K: quantize_q8_K(src, static_cast<block_q8_K*>(dst), n); break;
    default: throw Error("quantize: tensor type " + std::string(type_name(t)) + " is not supported");
  }
  return row_size(t, n);
}

}  // namespace pensieve::kernels::ref
