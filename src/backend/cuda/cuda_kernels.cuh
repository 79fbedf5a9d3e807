// Device code of the CUDA backend: dequantization of every weight type (one 32-element sub-block at
// a time, from the block layouts of kernels/ggml_type.h), the fused dequantize-GEMV, and the vector
// ops of a forward pass. Each function mirrors a scalar reference on the CPU (kernels/quant_ref.cpp,
// kernels/kernels_ref.cpp, model/rope.cpp, the CPU backend's attention) and test_backend compares them.
//
// The dequantization below also compiles as plain host C++ (without nvcc), so that a test on any
// machine checks it element for element against the CPU's dequantize_row for every type.
#pragma once
#include <cstdint>

#include "kernels/ggml_type.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define PENSIEVE_HD __device__ __forceinline__
#else
#include <bit>

#include "util/fp16.h"
#define PENSIEVE_HD inline
#endif

namespace pensieve::cuda {

#ifdef __CUDACC__
PENSIEVE_HD float h2f(f16_t h) { return __half2float(__ushort_as_half(h)); }
PENSIEVE_HD float bits_to_float(uint32_t u) { return __uint_as_float(u); }
#else
struct float4 { float x, y, z, w; };
struct uint4 { uint32_t x, y, z, w; };
inline float h2f(f16_t h) { return f16_to_f32(h); }
inline float bits_to_float(uint32_t u) { return std::bit_cast<float>(u); }
#endif

PENSIEVE_HD uint16_t ld16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
PENSIEVE_HD uint32_t ld32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

PENSIEVE_HD void k4_scale_min(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

PENSIEVE_HD int k3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// Elements [32 s, 32 s + 32) of a row of 16-bit floats (F16; BF16 where BF), as float32.
template <bool BF>
PENSIEVE_HD void dequant32_16bit(const uint8_t* row, int s, float* v) {
  const uint4* p = reinterpret_cast<const uint4*>(row) + s * 4;
#ifdef __CUDACC__
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i) {
    const uint4 u = p[i];
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int k = 0; k < 4; ++k) {
      if constexpr (BF) {
        v[8 * i + 2 * k] = bits_to_float(w[k] << 16);
        v[8 * i + 2 * k + 1] = bits_to_float(w[k] & 0xFFFF0000u);
      } else {
        v[8 * i + 2 * k] = h2f(f16_t(w[k] & 0xFFFF));
        v[8 * i + 2 * k + 1] = h2f(f16_t(w[k] >> 16));
      }
    }
  }
}

// The 32 values of 16 nibble bytes qs (byte j: value j low, value j + 16 high): d (q - 8), or
// d q + m where Affine.
template <bool Affine>
PENSIEVE_HD void dequant32_nibbles(const uint8_t* qs, float d, float m, float* v) {
#ifdef __CUDACC__
#pragma unroll
#endif
  for (int j = 0; j < 16; ++j) {
    const int q = qs[j];
    if constexpr (Affine) {
      v[j] = d * float(q & 0xF) + m;
      v[j + 16] = d * float(q >> 4) + m;
    } else {
      v[j] = d * float((q & 0xF) - 8);
      v[j + 16] = d * float((q >> 4) - 8);
    }
  }
}

// Elements [32 s, 32 s + 32) of a row of type T starting at `row`, as float32.
template <GgmlType T>
PENSIEVE_HD void dequant32(const uint8_t* row, int s, float* v) {
  if constexpr (T == GgmlType::F32) {
    const float4* p = reinterpret_cast<const float4*>(row) + s * 8;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int i = 0; i < 8; ++i) {
      const float4 f = p[i];
      v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
    }
  } else if constexpr (T == GgmlType::F16 || T == GgmlType::BF16) {
    dequant32_16bit<T == GgmlType::BF16>(row, s, v);
  } else if constexpr (T == GgmlType::Q4_0) {
    const uint8_t* b = row + size_t(s) * sizeof(block_q4_0);
    dequant32_nibbles<false>(b + 2, h2f(ld16(b)), 0.0f, v);
  } else if constexpr (T == GgmlType::Q4_1) {
    const uint8_t* b = row + size_t(s) * sizeof(block_q4_1);
    dequant32_nibbles<true>(b + 4, h2f(ld16(b)), h2f(ld16(b + 2)), v);
  } else if constexpr (T == GgmlType::Q4_A) {
    // Sub-block s is half s % 2 of 64-wide block s / 2: d, m, then 16 nibble bytes per half.
    const uint8_t* b = row + size_t(s / 2) * sizeof(block_q4_a);
    dequant32_nibbles<true>(b + 4 + 16 * (s % 2), h2f(ld16(b)), h2f(ld16(b + 2)), v);
  } else if constexpr (T == GgmlType::Q5_0 || T == GgmlType::Q5_1) {
    constexpr bool affine = T == GgmlType::Q5_1;
    const uint8_t* b = row + size_t(s) * (affine ? sizeof(block_q5_1) : sizeof(block_q5_0));
    const float d = h2f(ld16(b)), m = affine ? h2f(ld16(b + 2)) : 0.0f;
    const uint8_t* qhp = b + (affine ? 4 : 2);
    const uint32_t qh = ld32(qhp);
    const uint8_t* qs = qhp + 4;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      if constexpr (affine) {
        v[j] = d * float(lo) + m;
        v[j + 16] = d * float(hi) + m;
      } else {
        v[j] = d * float(lo - 16);
        v[j + 16] = d * float(hi - 16);
      }
    }
  } else if constexpr (T == GgmlType::Q8_0) {
    const uint8_t* b = row + size_t(s) * sizeof(block_q8_0);
    const float d = h2f(ld16(b));
    const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int j = 0; j < 32; ++j) v[j] = d * float(q[j]);
  } else if constexpr (T == GgmlType::Q8_A) {
    const block_q8_a* b = reinterpret_cast<const block_q8_a*>(row) + s;
    const float d = b->d, m = b->m;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int j = 0; j < 32; ++j) v[j] = d * float(b->qs[j]) + m;
  } else if constexpr (T == GgmlType::Q2_K) {
    const block_q2_K* b = reinterpret_cast<const block_q2_K*>(row) + s / 8;
    const int j0 = (s % 8) * 32;
    const float d = h2f(b->d), dmin = h2f(b->dmin);
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int l = 0; l < 32; ++l) {
      const int e = j0 + l;
      const int q = (b->qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const int sc = b->scales[e / 16];
      v[l] = d * float(sc & 0xF) * float(q) - dmin * float(sc >> 4);
    }
  } else if constexpr (T == GgmlType::Q3_K) {
    const block_q3_K* b = reinterpret_cast<const block_q3_K*>(row) + s / 8;
    const int j0 = (s % 8) * 32;
    const float d = h2f(b->d);
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int l = 0; l < 32; ++l) {
      const int e = j0 + l;
      const int lo = (b->qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const int high = (b->hmask[e % 32] >> (e / 32)) & 1;
      v[l] = d * float(k3_scale(b->scales, e / 16)) * float(lo - (high ? 0 : 4));
    }
  } else if constexpr (T == GgmlType::Q4_K || T == GgmlType::Q5_K) {
    constexpr bool five = T == GgmlType::Q5_K;
    const uint8_t* b = row + size_t(s / 8) * (five ? sizeof(block_q5_K) : sizeof(block_q4_K));
    const int j = s % 8;  // sub-block: elements 32 j .. 32 j + 31
    const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 4 + K_SCALE_SIZE;
    const uint8_t* qs = five ? qh + QK_K / 8 : qh;
    int sc, mn;
    k4_scale_min(scales, j, &sc, &mn);
    const float ds = d * float(sc), dm = dmin * float(mn);
    const uint8_t* q = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int l = 0; l < 32; ++l) {
      int x = (q[l] >> shift) & 0xF;
      if constexpr (five) x |= ((qh[l] >> j) & 1) << 4;
      v[l] = ds * float(x) - dm;
    }
  } else if constexpr (T == GgmlType::Q6_K) {
    const block_q6_K* b = reinterpret_cast<const block_q6_K*>(row) + s / 8;
    const int j = s % 8, h = j / 4, k = j % 4;  // elements 128 h + 32 k + l
    const float d = h2f(b->d);
    const uint8_t* ql = b->ql + 64 * h + 32 * (k & 1);
    const uint8_t* qh = b->qh + 32 * h;
    const int lshift = k < 2 ? 0 : 4;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int l = 0; l < 32; ++l) {
      const int lo = (ql[l] >> lshift) & 0xF;
      const int hi = (qh[l] >> (2 * k)) & 3;
      v[l] = d * float(b->scales[(128 * h + 32 * k + l) / 16]) * float((lo | (hi << 4)) - 32);
    }
  }
}

}  // namespace pensieve::cuda
