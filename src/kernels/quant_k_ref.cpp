// Quantizers of the K-quant super-blocks (256 elements). Each sub-block gets its own least-squares
// scale (and min) from quant_fit; those are then quantized to the super-block's 4/6/8-bit scale
// grid, and the elements are re-rounded against the scales actually stored.
#include <cmath>

#include "kernels/kernels_ref.h"
#include "kernels/quant_fit.h"
#include "util/fp16.h"

namespace pensieve::kernels::ref {

using quant::round_clamp;

namespace {

// Sub-block fits of an affine K-quant: x ≈ scale[j] * q - min[j], with min[j] >= 0.
void fit_affine_subblocks(const float* x, int sub, int nmax, float* scale, float* min) {
  float w[32];
  uint8_t q[32];
  for (int j = 0; j < QK_K / sub; ++j) {
    quant::importance_weights(x + j * sub, sub, w);
    float m;
    scale[j] = quant::fit_affine(x + j * sub, w, sub, nmax, false, q, &m);
    min[j] = -m;
  }
}

// Quantizes the per-sub-block scales and mins to `levels` steps under two half-precision
// super-scales, returning the effective (stored) scale and min of every sub-block.
void quantize_scale_pairs(const float* scale, const float* min, int count, int levels, f16_t* d16,
                          f16_t* dmin16, uint8_t* sc, uint8_t* mn, float* eff_d, float* eff_m) {
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < count; ++j) {
    max_scale = std::fmax(max_scale, scale[j]);
    max_min = std::fmax(max_min, min[j]);
  }
  *d16 = f32_to_f16(max_scale / float(levels));
  *dmin16 = f32_to_f16(max_min / float(levels));
  const float d = f16_to_f32(*d16), dmin = f16_to_f32(*dmin16);
  for (int j = 0; j < count; ++j) {
    sc[j] = uint8_t(d > 0.0f ? round_clamp(scale[j] / d, 0, levels) : 0);
    mn[j] = uint8_t(dmin > 0.0f ? round_clamp(min[j] / dmin, 0, levels) : 0);
    eff_d[j] = d * float(sc[j]);
    eff_m[j] = dmin * float(mn[j]);
  }
}

void requantize_affine(const float* x, int sub, int nmax, const float* eff_d, const float* eff_m,
                       uint8_t* q) {
  for (int e = 0; e < QK_K; ++e) {
    const int j = e / sub;
    q[e] = uint8_t(eff_d[j] > 0.0f ? round_clamp((x[e] + eff_m[j]) / eff_d[j], 0, nmax) : 0);
  }
}

// Sub-block fits of a symmetric K-quant (x ≈ scale[j] * q), then the signed scale grid: scales are
// stored as integers in [lo, hi] times one half-precision d. Returns the levels for stored scales.
void fit_symmetric_k(const float* x, int nmax, int lo, int hi, f16_t* d16, int* sc, int8_t* q) {
  constexpr int sub = 16, count = QK_K / 16;
  float scale[count], w[sub];
  float max_scale = 0.0f, amax = 0.0f;
  for (int j = 0; j < count; ++j) {
    quant::importance_weights(x + j * sub, sub, w);
    scale[j] = quant::fit_symmetric(x + j * sub, w, sub, nmax, q + j * sub);
    if (std::fabs(scale[j]) > amax) {
      amax = std::fabs(scale[j]);
      max_scale = scale[j];
    }
  }
  if (amax == 0.0f) {
    *d16 = 0;
    for (int j = 0; j < count; ++j) sc[j] = 0;
    for (int e = 0; e < QK_K; ++e) q[e] = 0;
    return;
  }
  const float iscale = float(lo) / max_scale;  // the largest scale takes the extra negative step
  *d16 = f32_to_f16(1.0f / iscale);
  const float d = f16_to_f32(*d16);
  for (int j = 0; j < count; ++j) {
    sc[j] = round_clamp(iscale * scale[j], lo, hi);
    const float eff = d * float(sc[j]);
    for (int l = 0; l < sub; ++l)
      q[j * sub + l] = int8_t(eff != 0.0f ? round_clamp(x[j * sub + l] / eff, -nmax, nmax - 1) : 0);
  }
}

}  // namespace

void quantize_q2_K(const float* x, block_q2_K* y, int64_t n) {
  float scale[16], min[16], eff_d[16], eff_m[16];
  uint8_t sc[16], mn[16], q[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    fit_affine_subblocks(x, 16, 3, scale, min);
    quantize_scale_pairs(scale, min, 16, 15, &y[b].d, &y[b].dmin, sc, mn, eff_d, eff_m);
    requantize_affine(x, 16, 3, eff_d, eff_m, q);
    for (int j = 0; j < 16; ++j) y[b].scales[j] = uint8_t(sc[j] | (mn[j] << 4));
    for (int i = 0; i < QK_K / 4; ++i) y[b].qs[i] = 0;
    for (int e = 0; e < QK_K; ++e)
      y[b].qs[(e / 128) * 32 + e % 32] |= uint8_t(q[e] << (2 * ((e % 128) / 32)));
  }
}

void quantize_q3_K(const float* x, block_q3_K* y, int64_t n) {
  int sc[16];
  int8_t q[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    fit_symmetric_k(x, 4, -32, 31, &y[b].d, sc, q);
    for (int i = 0; i < 12; ++i) y[b].scales[i] = 0;
    for (int j = 0; j < 16; ++j) {
      const int s = sc[j] + 32;
      if (j < 8) y[b].scales[j] |= uint8_t(s & 0xF);
      else y[b].scales[j - 8] |= uint8_t((s & 0xF) << 4);
      y[b].scales[8 + j % 4] |= uint8_t((s >> 4) << (2 * (j / 4)));
    }
    for (int i = 0; i < QK_K / 4; ++i) y[b].qs[i] = 0;
    for (int i = 0; i < QK_K / 8; ++i) y[b].hmask[i] = 0;
    for (int e = 0; e < QK_K; ++e) {
      const int u = q[e] + 4;  // 0..7: low 2 bits in qs, the third in hmask
      y[b].qs[(e / 128) * 32 + e % 32] |= uint8_t((u & 3) << (2 * ((e % 128) / 32)));
      y[b].hmask[e % 32] |= uint8_t((u >> 2) << (e / 32));
    }
  }
}

// Q4_K and Q5_K share the 12-byte packing of eight 6-bit scales and eight 6-bit mins.
static void pack_k4_scales(const uint8_t* sc, const uint8_t* mn, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

void quantize_q4_K(const float* x, block_q4_K* y, int64_t n) {
  float scale[8], min[8], eff_d[8], eff_m[8];
  uint8_t sc[8], mn[8], q[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    fit_affine_subblocks(x, 32, 15, scale, min);
    quantize_scale_pairs(scale, min, 8, 63, &y[b].d, &y[b].dmin, sc, mn, eff_d, eff_m);
    requantize_affine(x, 32, 15, eff_d, eff_m, q);
    pack_k4_scales(sc, mn, y[b].scales);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[b].qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_K(const float* x, block_q5_K* y, int64_t n) {
  float scale[8], min[8], eff_d[8], eff_m[8];
  uint8_t sc[8], mn[8], q[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    fit_affine_subblocks(x, 32, 31, scale, min);
    quantize_scale_pairs(scale, min, 8, 63, &y[b].d, &y[b].dmin, sc, mn, eff_d, eff_m);
    requantize_affine(x, 32, 31, eff_d, eff_m, q);
    pack_k4_scales(sc, mn, y[b].scales);
    for (int l = 0; l < 32; ++l) y[b].qh[l] = 0;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint8_t a = q[64 * c + l], h = q[64 * c + 32 + l];
        y[b].qs[32 * c + l] = uint8_t((a & 0xF) | ((h & 0xF) << 4));
        y[b].qh[l] |= uint8_t(((a >> 4) << (2 * c)) | ((h >> 4) << (2 * c + 1)));
      }
  }
}

void quantize_q6_K(const float* x, block_q6_K* y, int64_t n) {
  int sc[16];
  int8_t q[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    fit_symmetric_k(x, 32, -128, 127, &y[b].d, sc, q);
    for (int j = 0; j < 16; ++j) y[b].scales[j] = int8_t(sc[j]);
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        int u[4];
        for (int k = 0; k < 4; ++k) u[k] = q[128 * h + 32 * k + l] + 32;
        y[b].ql[64 * h + l] = uint8_t((u[0] & 0xF) | ((u[2] & 0xF) << 4));
        y[b].ql[64 * h + l + 32] = uint8_t((u[1] & 0xF) | ((u[3] & 0xF) << 4));
        y[b].qh[32 * h + l] =
            uint8_t((u[0] >> 4) | ((u[1] >> 4) << 2) | ((u[2] >> 4) << 4) | ((u[3] >> 4) << 6));
      }
  }
}

}  // namespace pensieve::kernels::ref
