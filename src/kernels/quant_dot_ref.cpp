// Scalar dot products of one weight row with one prepared activation row, for every weight type.
// Integer sums are exact per (sub-)block and then scaled in float, the same arithmetic as the AVX2
// kernels, so the two differ only in float summation order.
#include <cstring>
#include <string>

#include "kernels/kernels_ref.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve::kernels::ref {

namespace {

// Levels (unsigned or signed integers) and float scale/offset of one 32-wide weight block.
template <class B>
void levels32(const B& b, int* q, float* d, float* m);

template <>
void levels32(const block_q4_0& b, int* q, float* d, float* m) {
  for (int j = 0; j < 16; ++j) {
    q[j] = (b.qs[j] & 0xF) - 8;
    q[j + 16] = (b.qs[j] >> 4) - 8;
  }
  *d = f16_to_f32(b.d);
  *m = 0.0f;
}

template <>
void levels32(const block_q4_1& b, int* q, float* d, float* m) {
  for (int j = 0; j < 16; ++j) {
    q[j] = b.qs[j] & 0xF;
    q[j + 16] = b.qs[j] >> 4;
  }
  *d = f16_to_f32(b.d);
  *m = f16_to_f32(b.m);
}

uint32_t qh32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <>
void levels32(const block_q5_0& b, int* q, float* d, float* m) {
  const uint32_t h = qh32(b.qh);
  for (int j = 0; j < 16; ++j) {
    q[j] = ((b.qs[j] & 0xF) | int(((h >> j) & 1) << 4)) - 16;
    q[j + 16] = ((b.qs[j] >> 4) | int(((h >> (j + 16)) & 1) << 4)) - 16;
  }
  *d = f16_to_f32(b.d);
  *m = 0.0f;
}

template <>
void levels32(const block_q5_1& b, int* q, float* d, float* m) {
  const uint32_t h = qh32(b.qh);
  for (int j = 0; j < 16; ++j) {
    q[j] = (b.qs[j] & 0xF) | int(((h >> j) & 1) << 4);
    q[j + 16] = (b.qs[j] >> 4) | int(((h >> (j + 16)) & 1) << 4);
  }
  *d = f16_to_f32(b.d);
  *m = f16_to_f32(b.m);
}

template <>
void levels32(const block_q8_0& b, int* q, float* d, float* m) {
  for (int j = 0; j < 32; ++j) q[j] = b.qs[j];
  *d = f16_to_f32(b.d);
  *m = 0.0f;
}

template <>
void levels32(const block_q8_a& b, int* q, float* d, float* m) {
  for (int j = 0; j < 32; ++j) q[j] = b.qs[j];
  *d = b.d;
  *m = b.m;
}

// sum_b d_w * d_x * sum_j q_j x_j + m_w * d_x * sum_j x_j
template <class B>
float dot32(int64_t n, const void* w, const void* act) {
  const B* wb = static_cast<const B*>(w);
  const block_q8_x* xb = static_cast<const block_q8_x*>(act);
  float sum = 0.0f;
  int q[32];
  for (int64_t b = 0; b < n / QK; ++b) {
    float d, m;
    levels32(wb[b], q, &d, &m);
    int s = 0;
    for (int j = 0; j < 32; ++j) s += q[j] * xb[b].qs[j];
    sum += d * xb[b].d * float(s) + m * xb[b].ds;
  }
  return sum;
}

// Q4_A: each 64-wide block is two 32-wide sub-blocks that share d and m, each against its own
// activation block, with the same per-32 arithmetic as dot32.
float dot_q4_a(int64_t n, const void* w, const void* act) {
  const auto* wb = static_cast<const block_q4_a*>(w);
  const auto* xb = static_cast<const block_q8_x*>(act);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK; ++b) {
    const block_q4_a& blk = wb[b / 2];
    const uint8_t* qs = blk.qs + 16 * (b % 2);
    int s = 0;
    for (int j = 0; j < 16; ++j) s += (qs[j] & 0xF) * xb[b].qs[j] + (qs[j] >> 4) * xb[b].qs[j + 16];
    sum += f16_to_f32(blk.d) * xb[b].d * float(s) + f16_to_f32(blk.m) * xb[b].ds;
  }
  return sum;
}

// K-quants: the levels and per-sub-block (scale, min) of a super-block in integers, with the
// super-block's float factors: w = d * sc[j] * q - dmin * mn[j] for sub-blocks of `sub` elements.
struct KLevels {
  int q[QK_K];
  int sc[16];
  int mn[16];
  int sub;
  float d;
  float dmin;
};

void k_levels(GgmlType t, const uint8_t* blk, KLevels* k) {
  switch (t) {
    case GgmlType::Q2_K: {
      const auto& b = *reinterpret_cast<const block_q2_K*>(blk);
      k->sub = 16, k->d = f16_to_f32(b.d), k->dmin = f16_to_f32(b.dmin);
      for (int j = 0; j < 16; ++j) k->sc[j] = b.scales[j] & 0xF, k->mn[j] = b.scales[j] >> 4;
      for (int e = 0; e < QK_K; ++e)
        k->q[e] = (b.qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      return;
    }
    case GgmlType::Q3_K: {
      const auto& b = *reinterpret_cast<const block_q3_K*>(blk);
      k->sub = 16, k->d = f16_to_f32(b.d), k->dmin = 0.0f;
      for (int j = 0; j < 16; ++j) k->sc[j] = k3_scale(b.scales, j), k->mn[j] = 0;
      for (int e = 0; e < QK_K; ++e) {
        const int lo = (b.qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        k->q[e] = lo - (((b.hmask[e % 32] >> (e / 32)) & 1) ? 0 : 4);
      }
      return;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const auto& b4 = *reinterpret_cast<const block_q4_K*>(blk);
      const auto& b5 = *reinterpret_cast<const block_q5_K*>(blk);
      const uint8_t* scales = five ? b5.scales : b4.scales;
      const uint8_t* qs = five ? b5.qs : b4.qs;
      k->sub = 32, k->d = f16_to_f32(b4.d), k->dmin = f16_to_f32(b4.dmin);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, mn;
        k4_scale_min(scales, j, &sc, &mn);
        k->sc[j] = sc, k->mn[j] = mn;
      }
      for (int e = 0; e < QK_K; ++e) {
        const uint8_t byte = qs[(e / 64) * 32 + e % 32];
        k->q[e] = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
        if (five) k->q[e] |= ((b5.qh[e % 32] >> (e / 32)) & 1) << 4;
      }
      return;
    }
    case GgmlType::Q6_K: {
      const auto& b = *reinterpret_cast<const block_q6_K*>(blk);
      k->sub = 16, k->d = f16_to_f32(b.d), k->dmin = 0.0f;
      for (int j = 0; j < 16; ++j) k->sc[j] = b.scales[j], k->mn[j] = 0;
      for (int e = 0; e < QK_K; ++e) {
        const int h = e / 128, kk = (e % 128) / 32, l = e % 32;
        const uint8_t lob = b.ql[64 * h + l + 32 * (kk & 1)];
        const int lo = kk < 2 ? (lob & 0xF) : (lob >> 4);
        k->q[e] = (lo | (((b.qh[32 * h + l] >> (2 * kk)) & 3) << 4)) - 32;
      }
      return;
    }
    case GgmlType::Q8_K: {
      const auto& b = *reinterpret_cast<const block_q8_K*>(blk);
      k->sub = 16, k->d = b.d, k->dmin = 0.0f;
      for (int j = 0; j < 16; ++j) k->sc[j] = 1, k->mn[j] = 0;
      for (int e = 0; e < QK_K; ++e) k->q[e] = b.qs[e];
      return;
    }
    default: break;
  }
}

float dot_k(GgmlType t, int64_t n, const void* w, const void* act) {
  const size_t bytes = row_size(t, QK_K);
  const auto* xb = static_cast<const block_q8_K*>(act);
  KLevels k{};
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    k_levels(t, static_cast<const uint8_t*>(w) + size_t(b) * bytes, &k);
    int scaled = 0, mins = 0;
    for (int j = 0; j < QK_K / k.sub; ++j) {
      int s = 0, xs = 0;
      for (int l = 0; l < k.sub; ++l) {
        s += k.q[j * k.sub + l] * xb[b].qs[j * k.sub + l];
        xs += xb[b].qs[j * k.sub + l];
      }
      scaled += k.sc[j] * s;
      mins += k.mn[j] * xs;
    }
    sum += xb[b].d * (k.d * float(scaled) - k.dmin * float(mins));
  }
  return sum;
}

}  // namespace

float vec_dot(GgmlType wtype, int64_t n, const void* w, const void* act) {
  const float* x = static_cast<const float*>(act);
  switch (wtype) {
    case GgmlType::F32: return dot(static_cast<const float*>(w), x, int(n));
    case GgmlType::F16: return dot_f16(static_cast<const uint16_t*>(w), x, int(n));
    case GgmlType::BF16: {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += double(bf16_to_f32(static_cast<const uint16_t*>(w)[i])) * x[i];
      return float(s);
    }
    case GgmlType::Q4_0: return dot32<block_q4_0>(n, w, act);
    case GgmlType::Q4_1: return dot32<block_q4_1>(n, w, act);
    case GgmlType::Q5_0: return dot32<block_q5_0>(n, w, act);
    case GgmlType::Q5_1: return dot32<block_q5_1>(n, w, act);
    case GgmlType::Q8_0: return dot32<block_q8_0>(n, w, act);
    case GgmlType::Q8_A: return dot32<block_q8_a>(n, w, act);
    case GgmlType::Q4_A: return dot_q4_a(n, w, act);
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q8_K: return dot_k(wtype, n, w, act);
    default: break;
  }
  throw Error("matmul: weight type " + std::string(type_name(wtype)) + " is not supported");
}

void matmul_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  for (int t = 0; t < a.n_tok; ++t)
    for (int64_t r = r0; r < r1; ++r)
      a.y[t * a.ldy + r] = vec_dot(a.type, a.cols, a.w + size_t(r) * a.w_stride,
                                   a.act + size_t(t) * a.act_stride);
}

}  // namespace pensieve::kernels::ref
