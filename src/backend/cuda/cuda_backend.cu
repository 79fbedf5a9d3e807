// The CUDA backend: weights copied once to the GPU in their file layout, every op of the forward
// pass run there on one stream, keys and values in a device copy of each KV pool, and only the
// logits copied back. Decode matmuls (and every float32-exact one) are fused dequantize-GEMVs
// (Q4_0, Q8_0, Q4_K, Q6_K: two rows a warp, coalesced; other types: one row a warp), several tokens
// per read of the row; larger matmuls use an fp16 copy of the weight (cached on first use when the
// GPU has room, else dequantized into a workspace) and cuBLAS (fp16 in, fp32 accumulate and out).
// A pass's launches are recorded and replayed as a CUDA graph once the same pass recurs.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.cuh"
#include "backend/cuda/cuda_ops.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/rope.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {
namespace cuda {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
static void check_launch(const char* what) { check(cudaGetLastError(), what); }
static void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuBLAS error in ") + what + ": " + std::to_string(int(s)));
}

static std::string gib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / double(1ull << 30));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Kernels

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float dot32(const float* w, const float* x) {
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float4 a = x4[i];
    s = fmaf(w[4 * i], a.x, s);
    s = fmaf(w[4 * i + 1], a.y, s);
    s = fmaf(w[4 * i + 2], a.z, s);
    s = fmaf(w[4 * i + 3], a.w, s);
  }
  return s;
}

constexpr int kGemvTokens = 8;  // tokens sharing one read of a weight row
constexpr int kGemvWarps = 4;   // rows per block

// y[t * ldy + r] = W[r] . x[t * ldx] for t < nt <= kGemvTokens. One warp per row; lane i takes the
// sub-blocks i, i + 32, ...; each token's sum is formed in the same order whatever nt is, so a
// token's result does not depend on the batch. cols % 32 == 0 and ldx % 4 == 0.
template <GgmlType T>
__global__ void gemv_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows, int cols,
                            const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                            int64_t ldy, int nt) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = blockIdx.x * kGemvWarps + warp;
  if (r >= rows) return;
  const uint8_t* row = W + size_t(r) * row_bytes;
  float acc[kGemvTokens];
#pragma unroll
  for (int t = 0; t < kGemvTokens; ++t) acc[t] = 0.0f;
  const int nsub = cols / 32;
  for (int s = lane; s < nsub; s += 32) {
    float v[32];
    dequant32<T>(row, s, v);
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t)
      if (t < nt) acc[t] += dot32(v, x + t * ldx + s * 32);
  }
#pragma unroll
  for (int t = 0; t < kGemvTokens; ++t) {
    if (t < nt) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[t * ldy + r] = s;
    }
  }
}

// Coalesced GEMV for the common decode types. A warp takes R rows at once, so every activation
// value it loads serves R weights; the lanes of a warp read neighbouring bytes of a row (and
// neighbouring activations), 8 weights per lane per step, instead of one whole 32-element block
// per lane. Lane<T>::load dequantizes a lane's 8 weights of block b exactly as dequant32<T> does;
// Lane<T>::xload gathers the 8 activations they multiply. A token's sum is formed in the same
// order whatever nt is.
template <GgmlType T>
struct Lane;

__device__ __forceinline__ uint32_t ldu16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }

template <>
struct Lane<GgmlType::Q4_0> {
  static constexpr int kElems = 32, kLanes = 4;  // lane `sub` takes bytes 4 sub .. 4 sub + 3
  __device__ static void load(const uint8_t* row, int b, int sub, float* w) {
    const uint8_t* blk = row + size_t(b) * sizeof(block_q4_0);
    const float d = h2f(f16_t(ldu16(blk)));
    const uint32_t u = ldu16(blk + 2 + 4 * sub) | (ldu16(blk + 4 + 4 * sub) << 16);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = d * float(int((u >> (8 * i)) & 0xF) - 8);
      w[4 + i] = d * float(int((u >> (8 * i + 4)) & 0xF) - 8);
    }
  }
  __device__ static void xload(const float* x, int b, int sub, float* v) {
    const float* p = x + b * 32 + 4 * sub;
    const float4 a = *reinterpret_cast<const float4*>(p), c = *reinterpret_cast<const float4*>(p + 16);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = c.x; v[5] = c.y; v[6] = c.z; v[7] = c.w;
  }
};

template <>
struct Lane<GgmlType::Q8_0> {
  static constexpr int kElems = 32, kLanes = 4;  // lane `sub` takes elements 8 sub .. 8 sub + 7
  __device__ static void load(const uint8_t* row, int b, int sub, float* w) {
    const uint8_t* blk = row + size_t(b) * sizeof(block_q8_0);
    const float d = h2f(f16_t(ldu16(blk)));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = ldu16(blk + 2 + 8 * sub + 2 * i);
      w[2 * i] = d * float(int8_t(q & 0xFF));
      w[2 * i + 1] = d * float(int8_t(q >> 8));
    }
  }
  __device__ static void xload(const float* x, int b, int sub, float* v) {
    const float* p = x + b * 32 + 8 * sub;
    const float4 a = *reinterpret_cast<const float4*>(p), c = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = c.x; v[5] = c.y; v[6] = c.z; v[7] = c.w;
  }
};

template <>
struct Lane<GgmlType::Q4_K> {
  // Lane l takes quant bytes 4 (l % 8) .. + 3 of sub-block pair l / 8: their low nibbles belong to
  // sub-block 2 p, their high nibbles to sub-block 2 p + 1.
  static constexpr int kElems = QK_K, kLanes = 32;
  __device__ static void load(const uint8_t* row, int b, int sub, float* w) {
    const uint8_t* blk = row + size_t(b) * sizeof(block_q4_K);
    const int p = sub / 8, e0 = 4 * (sub % 8);
    const float d = h2f(f16_t(ldu16(blk))), dmin = h2f(f16_t(ldu16(blk + 2)));
    int sc0, mn0, sc1, mn1;
    k4_scale_min(blk + 4, 2 * p, &sc0, &mn0);
    k4_scale_min(blk + 4, 2 * p + 1, &sc1, &mn1);
    const float ds0 = d * float(sc0), dm0 = dmin * float(mn0), ds1 = d * float(sc1), dm1 = dmin * float(mn1);
    const uint32_t u = *reinterpret_cast<const uint32_t*>(blk + 4 + K_SCALE_SIZE + 32 * p + e0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = ds0 * float((u >> (8 * i)) & 0xF) - dm0;
      w[4 + i] = ds1 * float((u >> (8 * i + 4)) & 0xF) - dm1;
    }
  }
  __device__ static void xload(const float* x, int b, int sub, float* v) {
    const float* p = x + b * QK_K + 64 * (sub / 8) + 4 * (sub % 8);
    const float4 a = *reinterpret_cast<const float4*>(p), c = *reinterpret_cast<const float4*>(p + 32);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = c.x; v[5] = c.y; v[6] = c.z; v[7] = c.w;
  }
};

template <>
struct Lane<GgmlType::Q6_K> {
  // Lane l takes, in half h = l / 16 of the super-block, elements 128 h + 32 k + lq + {0, 1} for
  // k = 0..3, lq = 2 (l % 16).
  static constexpr int kElems = QK_K, kLanes = 32;
  __device__ static void load(const uint8_t* row, int b, int sub, float* w) {
    const block_q6_K* blk = reinterpret_cast<const block_q6_K*>(row + size_t(b) * sizeof(block_q6_K));
    const int h = sub / 16, lq = 2 * (sub % 16);
    const float d = h2f(blk->d);
    const uint32_t qa = ldu16(blk->ql + 64 * h + lq), qb = ldu16(blk->ql + 64 * h + 32 + lq);
    const uint32_t qh = ldu16(blk->qh + 32 * h + lq);
    const int sbase = 8 * h + (lq >= 16 ? 1 : 0);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t ql = (k & 1) ? qb : qa;
      const int shift = k < 2 ? 0 : 4;
      const float ds = d * float(blk->scales[sbase + 2 * k]);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int lo = int((ql >> (8 * i + shift)) & 0xF);
        const int hi = int((qh >> (8 * i + 2 * k)) & 3);
        w[2 * k + i] = ds * float((lo | (hi << 4)) - 32);
      }
    }
  }
  __device__ static void xload(const float* x, int b, int sub, float* v) {
    const float* p = x + b * QK_K + 128 * (sub / 16) + 2 * (sub % 16);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 a = *reinterpret_cast<const float2*>(p + 32 * k);
      v[2 * k] = a.x;
      v[2 * k + 1] = a.y;
    }
  }
};

template <GgmlType T, int R>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_vec_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows, int cols,
                                const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                                int64_t ldy, int nt) {
  using L = Lane<T>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = (blockIdx.x * kGemvWarps + warp) * R;
  if (r0 >= rows) return;
  const uint8_t* rowp[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rowp[r] = W + size_t(min(r0 + r, rows - 1)) * row_bytes;
  float acc[R][kGemvTokens];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t) acc[r][t] = 0.0f;
  const int nb = cols / L::kElems, sub = lane % L::kLanes;
  constexpr int kStep = 32 / L::kLanes;
  for (int b = lane / L::kLanes; b < nb; b += kStep) {
    float w[R][8];
#pragma unroll
    for (int r = 0; r < R; ++r) L::load(rowp[r], b, sub, w[r]);
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t) {
      if (t < nt) {
        float v[8];
        L::xload(x + t * ldx, b, sub, v);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][t] = fmaf(w[r][i], v[i], acc[r][t]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r0 + r >= rows) break;
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t) {
      if (t < nt) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) y[t * ldy + r0 + r] = s;
      }
    }
  }
}

static bool has_vec_kernel(GgmlType t) {
  return t == GgmlType::Q4_0 || t == GgmlType::Q8_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K;
}

// Rows per warp of the coalesced GEMV: 1, 2 or 4 (PENSIEVE_CUDA_GEMV_ROWS; default 2).
static int gemv_rows() {
  static const int r = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_GEMV_ROWS");
    const int v = e ? std::atoi(e) : 2;
    return v == 1 || v == 4 ? v : 2;
  }();
  return r;
}

template <GgmlType T>
static void launch_vec(const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, int nt,
                       cudaStream_t stream) {
  const int R = gemv_rows();
  const unsigned grid = unsigned((w.rows + kGemvWarps * R - 1) / (kGemvWarps * R));
  const dim3 block(32 * kGemvWarps);
  if (R == 1) gemv_vec_kernel<T, 1><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
  else if (R == 4) gemv_vec_kernel<T, 4><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
  else gemv_vec_kernel<T, 2><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
}

// Float weights of any width (tiny test models): element by element.
template <GgmlType T>
__global__ void gemv_float_any_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows,
                                      int cols, const float* __restrict__ x, int64_t ldx,
                                      float* __restrict__ y, int64_t ldy, int nt) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = blockIdx.x * kGemvWarps + warp;
  if (r >= rows) return;
  const uint8_t* row = W + size_t(r) * row_bytes;
  for (int t = 0; t < nt; ++t) {
    float acc = 0.0f;
    for (int c = lane; c < cols; c += 32) {
      float w;
      if constexpr (T == GgmlType::F32) w = reinterpret_cast<const float*>(row)[c];
      else if constexpr (T == GgmlType::F16) w = h2f(reinterpret_cast<const f16_t*>(row)[c]);
      else w = __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(row)[c]) << 16);
      acc = fmaf(w, x[t * ldx + c], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[t * ldy + r] = acc;
  }
}

// W (rows x cols, type T) to fp16, one thread per 32-element sub-block.
template <GgmlType T>
__global__ void dequant_f16_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows,
                                   int cols, __half* __restrict__ out) {
  const int nsub = cols / 32;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(rows) * nsub) return;
  const int r = int(i / nsub), s = int(i % nsub);
  float v[32];
  dequant32<T>(W + size_t(r) * row_bytes, s, v);
  __half2* o = reinterpret_cast<__half2*>(out + size_t(r) * cols + size_t(s) * 32);
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j] = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
}

__global__ void to_f16_kernel(const float* __restrict__ x, int64_t ldx, int cols, int n,
                              __half* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n) * cols) return;
  const int t = int(i / cols), c = int(i % cols);
  out[i] = __float2half_rn(x[t * ldx + c]);
}

constexpr int kNormThreads = 256, kNormVec = 8;  // the vector path holds dim <= 8192 in registers

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                               float* __restrict__ y, int dim, float eps, int vec) {
  const float* xr = x + size_t(blockIdx.x) * dim;
  float* yr = y + size_t(blockIdx.x) * dim;
  float ss = 0.0f;
  if (vec) {
    // Every load is issued before the first is used: the row is read once, into registers.
    const int n4 = dim / 4;
    float4 v[kNormVec];
#pragma unroll
    for (int j = 0; j < kNormVec; ++j) {
      const int i = threadIdx.x + j * kNormThreads;
      v[j] = i < n4 ? reinterpret_cast<const float4*>(xr)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int j = 0; j < kNormVec; ++j) {
      ss = fmaf(v[j].x, v[j].x, ss);
      ss = fmaf(v[j].y, v[j].y, ss);
      ss = fmaf(v[j].z, v[j].z, ss);
      ss = fmaf(v[j].w, v[j].w, ss);
    }
    __shared__ float vpart[32];
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) vpart[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
      float t = threadIdx.x < kNormThreads / 32 ? vpart[threadIdx.x] : 0.0f;
      t = warp_sum(t);
      if (threadIdx.x == 0) vpart[0] = t;
    }
    __syncthreads();
    const float scale = float(1.0 / sqrt(double(vpart[0]) / dim + double(eps)));
#pragma unroll
    for (int j = 0; j < kNormVec; ++j) {
      const int i = threadIdx.x + j * kNormThreads;
      if (i < n4) {
        const float4 g = reinterpret_cast<const float4*>(w)[i];
        float4 o;
        o.x = v[j].x * scale * g.x;
        o.y = v[j].y * scale * g.y;
        o.z = v[j].z * scale * g.z;
        o.w = v[j].w * scale * g.w;
        reinterpret_cast<float4*>(yr)[i] = o;
      }
    }
    return;
  }
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  __shared__ float part[32];
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float scale = float(1.0 / sqrt(double(part[0]) / dim + double(eps)));
  for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ y, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void add_bias_kernel(float* __restrict__ y, int64_t ldy, int rows, const float* __restrict__ b, int n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(rows) * n) return;
  y[(i / n) * ldy + i % n] += b[i % n];
}

__global__ void silu_mul_kernel(float* __restrict__ g, int rows, int ff) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(rows) * ff) return;
  float* row = g + (i / ff) * 2 * ff;
  const int64_t c = i % ff;
  const float a = row[c];
  row[c] = a / (1.0f + expf(-a)) * row[ff + c];
}

// Rotates head blockIdx.y (q heads, then k heads) of token blockIdx.x; a k head's block then writes
// that head's k and v into the token's KV rows.
__global__ void rope_store_kernel(float* __restrict__ qkv, const SlotMeta* __restrict__ slots, int layer,
                                  int n_heads, int n_kv_heads, int head_dim, int n_rot, int style_half,
                                  const float* __restrict__ inv_short, const float* __restrict__ inv_long,
                                  float mscale) {
  const int t = blockIdx.x, h = blockIdx.y;
  const SlotMeta s = slots[t];
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  float* row = qkv + size_t(t) * (q_dim + 2 * kv_dim);
  const float* inv = s.long_rope ? inv_long : inv_short;
  const int half = n_rot / 2;
  float* v = row + size_t(h) * head_dim;  // k heads follow q heads
  for (int k = threadIdx.x; k < half; k += blockDim.x) {
    const float angle = float(s.pos) * inv[k];
    const float c = cosf(angle) * mscale, sn = sinf(angle) * mscale;
    const int ia = style_half ? k : 2 * k, ib = style_half ? k + half : 2 * k + 1;
    const float a = v[ia], b = v[ib];
    v[ia] = a * c - b * sn;
    v[ib] = b * c + a * sn;
  }
  if (h < n_heads) return;
  __syncthreads();
  const int kh = h - n_heads;
  uint8_t* krow = reinterpret_cast<uint8_t*>(s.kv_base) + size_t(s.block) * s.block_bytes +
                  (size_t(layer * 2) * s.block_size + s.off) * s.row_bytes;
  uint8_t* vrow = krow + size_t(s.block_size) * s.row_bytes;
  const float* k = row + q_dim;
  const float* vv = row + q_dim + kv_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const int i = kh * head_dim + d;
    if (s.f32) {
      reinterpret_cast<float*>(krow)[i] = k[i];
      reinterpret_cast<float*>(vrow)[i] = vv[i];
    } else {
      reinterpret_cast<__half*>(krow)[i] = __float2half_rn(k[i]);
      reinterpret_cast<__half*>(vrow)[i] = __float2half_rn(vv[i]);
    }
  }
}

constexpr int kAttnWarps = 4;
constexpr int kMaxHeadDim = 256;

// Attention of token blockIdx.x, head blockIdx.y over its sequence's positions: each warp takes
// every kAttnWarps-th position with an online softmax, then the warps' partial results merge.
__global__ void attention_kernel(const float* __restrict__ qkv, const SlotMeta* __restrict__ slots,
                                 const int32_t* __restrict__ tables, int layer, int n_heads, int n_kv_heads,
                                 int head_dim, int window, float scale, float* __restrict__ out) {
  constexpr int D = kMaxHeadDim / 32;
  const int t = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SlotMeta s = slots[t];
  const int group = n_heads / n_kv_heads;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const float* q = qkv + size_t(t) * (q_dim + 2 * kv_dim) + size_t(h) * head_dim;
  const size_t koff = size_t(h / group) * head_dim;
  float qr[D], acc[D];
#pragma unroll
  for (int i = 0; i < D; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < head_dim ? q[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int start = window > 0 ? max(0, s.pos - window + 1) : 0;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(s.kv_base);
  for (int p = start + warp; p <= s.pos; p += kAttnWarps) {
    const int block = tables[s.table + p / s.block_size], off = p % s.block_size;
    const uint8_t* krow = base + size_t(block) * s.block_bytes + (size_t(layer * 2) * s.block_size + off) * s.row_bytes;
    const uint8_t* vrow = krow + size_t(s.block_size) * s.row_bytes;
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) {
        const float k = s.f32 ? reinterpret_cast<const float*>(krow)[koff + d]
                              : __half2float(reinterpret_cast<const __half*>(krow)[koff + d]);
        part = fmaf(qr[i], k, part);
      }
    }
    const float score = warp_sum(part) * scale;
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), e = expf(score - m_new);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) {
        const float v = s.f32 ? reinterpret_cast<const float*>(vrow)[koff + d]
                              : __half2float(reinterpret_cast<const __half*>(vrow)[koff + d]);
        acc[i] = acc[i] * corr + e * v;
      }
    }
    m = m_new;
  }
  __shared__ float sm[kAttnWarps], sl[kAttnWarps], sacc[kAttnWarps][kMaxHeadDim];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < D; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) sacc[warp][d] = acc[i];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm[w]);
  float L = 0.0f;
  for (int w = 0; w < kAttnWarps; ++w)
    if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
  float* o = out + size_t(t) * q_dim + size_t(h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w)
      if (sl[w] > 0.0f) sum += sacc[w][d] * expf(sm[w] - M);
    o[d] = sum / L;
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch by weight type

#define PENSIEVE_CUDA_TYPES(X)                                                              \
  X(F32) X(F16) X(BF16) X(Q4_0) X(Q4_1) X(Q5_0) X(Q5_1) X(Q8_0) X(Q8_A) X(Q4_A) X(Q2_K) \
  X(Q3_K) X(Q4_K) X(Q5_K) X(Q6_K)

bool has_kernel(GgmlType t) {
  switch (t) {
#define X(name) case GgmlType::name: return true;
    PENSIEVE_CUDA_TYPES(X)
#undef X
    default: return false;
  }
}

static bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

void gemv(const DeviceWeight& w, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
          cudaStream_t stream, DeviceBuffer* staging) {
  const dim3 grid(unsigned((w.rows + kGemvWarps - 1) / kGemvWarps)), block(32 * kGemvWarps);
  // The vector kernel reads x 16 bytes at a time: a misaligned x is first copied to `staging`.
  if ((ldx % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0) && w.cols % 32 == 0) {
    if (!staging) throw Error("CUDA matmul: activations not 16-byte aligned");
    const int64_t ld = (w.cols + 3) / 4 * 4;
    const size_t need = size_t(n_tok) * size_t(ld) * sizeof(float);
    if (staging->bytes < need) {
      check(cudaStreamSynchronize(stream), "staging");
      staging->reserve(need, "activation staging");
    }
    check(cudaMemcpy2DAsync(staging->ptr, size_t(ld) * sizeof(float), x, size_t(ldx) * sizeof(float),
                            size_t(w.cols) * sizeof(float), size_t(n_tok), cudaMemcpyDeviceToDevice, stream),
          "staging copy");
    x = static_cast<const float*>(staging->ptr);
    ldx = ld;
  }
  const bool any_width = w.cols % 32 != 0;
  if (any_width && !is_float_type(w.type))
    throw Error("CUDA matmul: " + std::string(type_name(w.type)) + " rows of " + std::to_string(w.cols) +
                " elements (not whole blocks)");
  for (int t0 = 0; t0 < n_tok; t0 += kGemvTokens) {
    const int nt = std::min(kGemvTokens, n_tok - t0);
    const float* xt = x + t0 * ldx;
    float* yt = y + t0 * ldy;
    if (any_width) {
      switch (w.type) {
        case GgmlType::F32: gemv_float_any_kernel<GgmlType::F32><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, xt, ldx, yt, ldy, nt); break;
        case GgmlType::F16: gemv_float_any_kernel<GgmlType::F16><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, xt, ldx, yt, ldy, nt); break;
        default: gemv_float_any_kernel<GgmlType::BF16><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, xt, ldx, yt, ldy, nt); break;
      }
    } else if (has_vec_kernel(w.type)) {
      switch (w.type) {
        case GgmlType::Q4_0: launch_vec<GgmlType::Q4_0>(w, xt, ldx, yt, ldy, nt, stream); break;
        case GgmlType::Q8_0: launch_vec<GgmlType::Q8_0>(w, xt, ldx, yt, ldy, nt, stream); break;
        case GgmlType::Q4_K: launch_vec<GgmlType::Q4_K>(w, xt, ldx, yt, ldy, nt, stream); break;
        default: launch_vec<GgmlType::Q6_K>(w, xt, ldx, yt, ldy, nt, stream); break;
      }
    } else {
      switch (w.type) {
#define X(name)                                                                                   \
  case GgmlType::name:                                                                            \
    gemv_kernel<GgmlType::name><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, \
                                                            xt, ldx, yt, ldy, nt);              \
    break;
        PENSIEVE_CUDA_TYPES(X)
#undef X
        default: throw Error("CUDA matmul: no kernel for " + std::string(type_name(w.type)));
      }
    }
    check_launch("gemv");
  }
}

void dequantize_f16(const DeviceWeight& w, __half* out, cudaStream_t stream) {
  const int64_t n = int64_t(w.rows) * (w.cols / 32);
  const unsigned grid = unsigned((n + 255) / 256);
  switch (w.type) {
#define X(name)                                                                                        \
  case GgmlType::name:                                                                                 \
    dequant_f16_kernel<GgmlType::name><<<grid, 256, 0, stream>>>(w.data, w.row_bytes, w.rows, w.cols, out); \
    break;
    PENSIEVE_CUDA_TYPES(X)
#undef X
    default: throw Error("CUDA dequantize: no kernel for " + std::string(type_name(w.type)));
  }
  check_launch("dequantize_f16");
}

static unsigned blocks_for(int64_t n, int threads = 256) { return unsigned((n + threads - 1) / threads); }

void rmsnorm(const float* x, const float* w, float* y, int rows, int dim, float eps, cudaStream_t st) {
  if (rows <= 0) return;
  const int vec = dim % 4 == 0 && dim <= 4 * kNormThreads * kNormVec &&
                  (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(y)) % 16 == 0;
  rmsnorm_kernel<<<rows, kNormThreads, 0, st>>>(x, w, y, dim, eps, vec);
  check_launch("rmsnorm");
}
void add(float* x, const float* y, size_t n, cudaStream_t st) {
  add_kernel<<<blocks_for(int64_t(n)), 256, 0, st>>>(x, y, n);
  check_launch("add");
}
void add_bias(float* y, int64_t ldy, int rows, const float* b, int n, cudaStream_t st) {
  add_bias_kernel<<<blocks_for(int64_t(rows) * n), 256, 0, st>>>(y, ldy, rows, b, n);
  check_launch("add_bias");
}
void silu_mul(float* g, int rows, int ff, cudaStream_t st) {
  silu_mul_kernel<<<blocks_for(int64_t(rows) * ff), 256, 0, st>>>(g, rows, ff);
  check_launch("silu_mul");
}
void rope_store(float* qkv, const SlotMeta* slots, int n_slots, int layer, const ModelConfig& cfg,
                const float* inv_short, const float* inv_long, float mscale, cudaStream_t st) {
  if (n_slots <= 0) return;
  rope_store_kernel<<<dim3(n_slots, cfg.n_heads + cfg.n_kv_heads), 128, 0, st>>>(qkv, slots, layer, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                                             cfg.rope.n_rot, cfg.rope.style == RopeStyle::RotateHalf,
                                             inv_short, inv_long, mscale);
  check_launch("rope_store");
}
void attention(const float* qkv, const SlotMeta* slots, const int32_t* tables, int n_slots, int layer,
               const ModelConfig& cfg, float* out, cudaStream_t st) {
  if (cfg.head_dim > kMaxHeadDim)
    throw Error("CUDA attention: head_dim " + std::to_string(cfg.head_dim) + " > " + std::to_string(kMaxHeadDim));
  attention_kernel<<<dim3(n_slots, cfg.n_heads), 32 * kAttnWarps, 0, st>>>(
      qkv, slots, tables, layer, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.sliding_window,
      1.0f / std::sqrt(float(cfg.head_dim)), out);
  check_launch("attention");
}

// ---------------------------------------------------------------------------------------------
// Device memory

DeviceBuffer::~DeviceBuffer() {
  if (ptr) cudaFree(ptr);
}
void DeviceBuffer::reserve(size_t n, const char* what) {
  if (n <= bytes) return;
  if (ptr) cudaFree(ptr);
  ptr = nullptr;
  bytes = 0;
  const cudaError_t e = cudaMalloc(&ptr, n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(std::string("out of GPU memory for ") + what + ": need " + gib(n) + ", " + gib(free_b) +
                " free of " + gib(total_b));
  }
  bytes = n;
}

namespace {

// A KV pool's device copy; its size counts in the backend's report while the pool lives.
struct KvDeviceStorage final : KvPool::DeviceStorage {
  DeviceBuffer buf;
  std::shared_ptr<std::atomic<size_t>> counter;
  ~KvDeviceStorage() override {
    if (counter) *counter -= buf.bytes;
  }
};

class CudaBackend;

class CudaPass final : public BackendPass {
 public:
  CudaPass(const CudaBackend& b, std::span<const PassSlot> slots);
  float* buffer(Act role, size_t n) override;
  void embed(int weight, std::span<const int32_t> ids, float* x) override;
  void rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) override;
  void matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy, bool exact) override;
  void add_bias(float* y, int64_t ldy, int rows, int b) override;
  void rope_and_store_kv(int layer, float* qkv) override;
  void attention(int layer, const float* qkv, float* out) override;
  void add(float* x, const float* y, size_t n) override;
  void silu_mul(float* g, int rows, int ff) override;
  void read(const float* src, float* host, size_t n) override;
  void write(float* dst, const float* host, size_t n) override;

 ~CudaPass() override;

 private:
  // The launches of a pass are recorded with a signature (op kind and every argument) and run at
  // the next point that needs their results (read, write, embed, a growing buffer). A pass whose
  // recorded launches have a signature seen before is captured once as a CUDA graph and replayed
  // from then on (one launch instead of ~11 a layer); its kernels read positions and KV rows from
  // the metadata uploaded per pass, so the same graph serves every decode step of a batch shape.
  // Passes that use cuBLAS run as plain launches. PENSIEVE_CUDA_GRAPHS=0 turns graphs off.
  void record(std::initializer_list<uint64_t> sig, std::function<void()> f);
  void flush();
  CudaBackend& b_;
  std::unique_lock<std::mutex> lock_;
  int n_slots_;
  std::vector<uint64_t> sig_;
  std::vector<std::function<void()>> ops_;
  bool graphable_ = true;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& cfg, int device) : cfg_(cfg), device_(device) {
    if (const char* e = std::getenv("PENSIEVE_CUDA_GEMV_MAX")) gemv_max_ = std::max(0, std::atoi(e));
    if (const char* e = std::getenv("PENSIEVE_CUDA_F16_CACHE")) f16_cache_on_ = std::atoi(e) != 0;
    if (const char* e = std::getenv("PENSIEVE_CUDA_GRAPHS")) graphs_on_ = std::atoi(e) != 0;
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    device_name_ = prop.name;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_blas(cublasCreate(&blas_), "cublasCreate");
    check_blas(cublasSetStream(blas_, stream_), "cublasSetStream");
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (cfg_.rope.n_rot > 0) {
      const RopeTable s(cfg_.rope, false), l(cfg_.rope, true);
      std::vector<float> both = s.inv_freq();
      both.insert(both.end(), l.inv_freq().begin(), l.inv_freq().end());
      rope_.reserve(both.size() * sizeof(float), "RoPE tables");
      check(cudaMemcpy(rope_.ptr, both.data(), both.size() * sizeof(float), cudaMemcpyHostToDevice), "RoPE upload");
      mscale_ = cfg_.rope.scaling == RopeScaling::LongRope ? cfg_.rope.attn_factor : 1.0f;
    }
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (auto& [sig, g] : graphs_)
      if (g.exec) cudaGraphExecDestroy(g.exec);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }

  int add_weight(const Tensor& t) override {
    host_.push_back(&t);
    return int(host_.size()) - 1;
  }
  int add_vector(std::vector<float> v) override {
    vectors_.push_back(std::move(v));
    return int(vectors_.size()) - 1;
  }

  // One arena for every weight and vector, each at a 256-byte boundary. Types without a device
  // kernel (none of the loadable ones today) would be converted to F16 here.
  void finish_load() override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    auto align = [](size_t n) { return (n + 255) & ~size_t(255); };
    size_t total = 0;
    for (const Tensor* t : host_) total += align(t->nbytes);
    for (const auto& v : vectors_) total += align(v.size() * sizeof(float));
    weights_arena_.reserve(std::max<size_t>(total, 256), "the model's weights");
    uint8_t* p = static_cast<uint8_t*>(weights_arena_.ptr);
    for (const Tensor* t : host_) {
      if (!has_kernel(t->type))
        throw Error(t->name + ": weight type " + std::string(type_name(t->type)) + " has no CUDA kernel");
      check(cudaMemcpy(p, t->data, t->nbytes, cudaMemcpyHostToDevice), "weight upload");
      weights_.push_back({t->type, int(t->rows()), int(t->cols()), t->row_bytes(), p});
      max_weight_elems_ = std::max(max_weight_elems_, size_t(t->rows()) * size_t(t->cols()));
      p += align(t->nbytes);
    }
    for (const auto& v : vectors_) {
      check(cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), "vector upload");
      dvectors_.push_back(reinterpret_cast<float*>(p));
      p += align(v.size() * sizeof(float));
    }
    weight_bytes_ = total;
  }

  std::unique_ptr<BackendPass> begin_pass(std::span<const PassSlot> slots, ThreadPool&) const override {
    return std::make_unique<CudaPass>(*this, slots);
  }

  size_t device_bytes() const override {
    std::lock_guard<std::mutex> g(mu_);
    size_t n = weights_arena_.bytes + f16_cache_bytes_ + f16_ws_.bytes + act_ws_.bytes + rope_.bytes + meta_.bytes +
               staging_.bytes;
    for (const auto& b : bufs_) n += b.bytes;
    return n + kv_bytes_->load();
  }
  std::string memory_report() const override {
    std::lock_guard<std::mutex> g(mu_);
    size_t acts = act_ws_.bytes + meta_.bytes + staging_.bytes;
    for (const auto& b : bufs_) acts += b.bytes;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return device_name_ + ": weights " + gib(weight_bytes_) + ", fp16 weight cache " + gib(f16_cache_bytes_) +
           ", KV pools " + gib(kv_bytes_->load()) + ", workspace " +
           gib(f16_ws_.bytes + acts) + "; " + gib(free_b) + " free of " + gib(total_b);
  }

  // The fp16 copy of weight `i` for the cuBLAS path, made on first use while the GPU keeps at
  // least max(2 GiB, 10%) free after it (KV pools are allocated first, at the start of a pass);
  // nullptr when it does not fit or PENSIEVE_CUDA_F16_CACHE=0. Made on the pass's stream.
  bool has_cached_f16(int i) const {
    return size_t(i) < f16_cache_.size() && f16_cache_[size_t(i)] && f16_cache_[size_t(i)]->ptr;
  }
  const __half* cached_f16(int i) {
    if (has_cached_f16(i)) return static_cast<const __half*>(f16_cache_[size_t(i)]->ptr);
    if (!f16_cache_on_) return nullptr;
    const DeviceWeight& w = weights_[size_t(i)];
    const size_t need = size_t(w.rows) * size_t(w.cols) * sizeof(__half);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    const size_t keep = std::max<size_t>(size_t(2) << 30, total_b / 10);
    if (free_b < need + keep) return nullptr;
    if (f16_cache_.size() < weights_.size()) f16_cache_.resize(weights_.size());
    auto buf = std::make_unique<DeviceBuffer>();
    void* ptr = nullptr;
    if (cudaMalloc(&ptr, need) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    buf->ptr = ptr;
    buf->bytes = need;
    dequantize_f16(w, static_cast<__half*>(ptr), stream_);
    f16_cache_bytes_ += need;
    f16_cache_[size_t(i)] = std::move(buf);
    return static_cast<const __half*>(ptr);
  }

  // State a pass uses; a pass holds mu_ for its whole life.
  ModelConfig cfg_;
  int device_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::vector<const Tensor*> host_;
  std::vector<std::vector<float>> vectors_;
  std::vector<DeviceWeight> weights_;
  std::vector<float*> dvectors_;
  DeviceBuffer weights_arena_, rope_;
  float mscale_ = 1.0f;
  size_t weight_bytes_ = 0, max_weight_elems_ = 0;
  mutable std::mutex mu_;
  mutable DeviceBuffer bufs_[size_t(Act::Logits) + 1];
  mutable DeviceBuffer f16_ws_, act_ws_, meta_, staging_;
  // Matmuls of at most this many tokens (and every exact one) run as fused GEMVs; larger ones
  // dequantize to fp16 and use cuBLAS. PENSIEVE_CUDA_GEMV_MAX overrides it.
  int gemv_max_ = kGemvMaxTokensDefault;
  bool f16_cache_on_ = true;
  bool graphs_on_ = true;
  struct GraphEntry {
    cudaGraphExec_t exec = nullptr;  // null: seen once, not captured yet (or capture failed)
    bool failed = false;
  };
  std::map<std::vector<uint64_t>, GraphEntry> graphs_;
  std::vector<std::unique_ptr<DeviceBuffer>> f16_cache_;
  size_t f16_cache_bytes_ = 0;
  mutable std::vector<float> host_rows_;
  std::shared_ptr<std::atomic<size_t>> kv_bytes_ = std::make_shared<std::atomic<size_t>>(0);
};

CudaPass::CudaPass(const CudaBackend& b, std::span<const PassSlot> slots)
    : b_(const_cast<CudaBackend&>(b)), lock_(b.mu_), n_slots_(int(slots.size())) {
  check(cudaSetDevice(b_.device_), "cudaSetDevice");
  // Slot metadata and the block tables of the pass's sequences, in one upload.
  std::vector<SlotMeta> meta(slots.size());
  std::vector<int32_t> tables;
  std::unordered_map<const SequenceState*, int> table_of;
  for (size_t i = 0; i < slots.size(); ++i) {
    const PassSlot& s = slots[i];
    const KvPool& pool = *s.seq->pool;
    if (!pool.device_storage()) {
      auto st = std::make_unique<KvDeviceStorage>();
      st->buf.reserve(pool.bytes(), "the KV cache");
      st->counter = b_.kv_bytes_;
      *b_.kv_bytes_ += st->buf.bytes;
      pool.set_device_storage(std::move(st));
    }
    auto it = table_of.find(s.seq);
    if (it == table_of.end()) {
      it = table_of.emplace(s.seq, int(tables.size())).first;
      tables.insert(tables.end(), s.seq->blocks.begin(), s.seq->blocks.end());
    }
    const int bs = pool.block_size();
    SlotMeta& m = meta[i];
    m.kv_base = static_cast<KvDeviceStorage*>(pool.device_storage())->buf.ptr;
    m.block_bytes = int64_t(pool.bytes_per_block());
    m.row_bytes = int64_t(pool.bytes_per_row());
    m.block_size = bs;
    m.f32 = pool.is_f32();
    m.pos = s.pos;
    m.table = it->second;
    m.block = s.seq->blocks[size_t(s.pos / bs)];
    m.off = s.pos % bs;
    m.long_rope = s.long_rope;
  }
  if (tables.empty()) tables.push_back(0);
  const size_t meta_bytes = meta.size() * sizeof(SlotMeta);
  const size_t table_off = (meta_bytes + 255) & ~size_t(255);
  b_.meta_.reserve(table_off + tables.size() * sizeof(int32_t), "pass metadata");
  std::vector<uint8_t> staging(table_off + tables.size() * sizeof(int32_t));
  std::memcpy(staging.data(), meta.data(), meta_bytes);
  std::memcpy(staging.data() + table_off, tables.data(), tables.size() * sizeof(int32_t));
  check(cudaMemcpyAsync(b_.meta_.ptr, staging.data(), staging.size(), cudaMemcpyHostToDevice, b_.stream_),
        "metadata upload");
  check(cudaStreamSynchronize(b_.stream_), "metadata upload");
}

float* CudaPass::buffer(Act role, size_t n) {
  DeviceBuffer& d = b_.bufs_[size_t(role)];
  if (d.bytes < n * sizeof(float)) {
    flush();
    check(cudaStreamSynchronize(b_.stream_), "buffer");
    d.reserve(n * sizeof(float) + (n * sizeof(float)) / 4, "activations");
  }
  return static_cast<float*>(d.ptr);
}

void CudaPass::embed(int weight, std::span<const int32_t> ids, float* x) {
  // The embedding rows are gathered on the host from the mapped file (a few KB per token).
  flush();
  const Tensor& w = *b_.host_[size_t(weight)];
  const size_t dim = size_t(w.cols());
  b_.host_rows_.resize(ids.size() * dim);
  for (size_t t = 0; t < ids.size(); ++t) kernels::get_row(w, ids[t], b_.host_rows_.data() + t * dim);
  check(cudaMemcpyAsync(x, b_.host_rows_.data(), b_.host_rows_.size() * sizeof(float), cudaMemcpyHostToDevice,
                        b_.stream_),
        "embedding upload");
  check(cudaStreamSynchronize(b_.stream_), "embedding upload");
}

void CudaPass::rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) {
  const float* wv = b_.dvectors_[size_t(w)];
  cudaStream_t st = b_.stream_;
  uint32_t eb;
  std::memcpy(&eb, &eps, sizeof eb);
  record({1, uint64_t(uintptr_t(x)), uint64_t(uintptr_t(wv)), uint64_t(uintptr_t(y)), uint64_t(rows), uint64_t(dim), eb},
         [=] { cuda::rmsnorm(x, wv, y, rows, dim, eps, st); });
}

void CudaPass::matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy, bool exact) {
  const DeviceWeight& w = b_.weights_[size_t(weight)];
  if (exact || n_tok <= b_.gemv_max_ || w.cols % 32 != 0) {
    if (w.cols % 32 != 0 && !is_float_type(w.type))
      throw Error("CUDA matmul: " + std::string(type_name(w.type)) + " rows of " + std::to_string(w.cols) +
                  " elements (not whole blocks)");
    cudaStream_t st = b_.stream_;
    DeviceBuffer* staging = &b_.staging_;
    record({2, uint64_t(weight), uint64_t(uintptr_t(x)), uint64_t(ldx), uint64_t(n_tok), uint64_t(uintptr_t(y)),
            uint64_t(ldy)},
           [=, &w] { gemv(w, x, ldx, n_tok, y, ldy, st, staging); });
    return;
  }
  // cuBLAS: the recorded launches run first, this pass stays out of graphs.
  flush();
  graphable_ = false;
  // Prefill and wide batches: the weight in fp16 (its cached copy, else dequantized into a workspace
  // sized for the largest matrix), the activations to fp16, then one cuBLAS GEMM with float32
  // accumulation.
  const size_t ws = b_.max_weight_elems_ * sizeof(__half);
  if (!b_.has_cached_f16(weight) && b_.f16_ws_.bytes < ws) {
    check(cudaStreamSynchronize(b_.stream_), "workspace");
    b_.f16_ws_.reserve(ws, "the fp16 weight workspace");
  }
  const size_t act = size_t(n_tok) * size_t(w.cols) * sizeof(__half);
  if (b_.act_ws_.bytes < act) {
    check(cudaStreamSynchronize(b_.stream_), "workspace");
    b_.act_ws_.reserve(act + act / 4, "the fp16 activation workspace");
  }
  __half* xh = static_cast<__half*>(b_.act_ws_.ptr);
  const __half* wh = b_.cached_f16(weight);
  if (!wh) {
    dequantize_f16(w, static_cast<__half*>(b_.f16_ws_.ptr), b_.stream_);
    wh = static_cast<const __half*>(b_.f16_ws_.ptr);
  }
  to_f16_kernel<<<blocks_for(int64_t(n_tok) * w.cols), 256, 0, b_.stream_>>>(x, ldx, w.cols, n_tok, xh);
  check_launch("to_f16");
  const float alpha = 1.0f, beta = 0.0f;
  check_blas(cublasGemmEx(b_.blas_, CUBLAS_OP_T, CUBLAS_OP_N, w.rows, n_tok, w.cols, &alpha, wh, CUDA_R_16F,
                          w.cols, xh, CUDA_R_16F, w.cols, &beta, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

void CudaPass::add_bias(float* y, int64_t ldy, int rows, int b) {
  const float* bv = b_.dvectors_[size_t(b)];
  const int n = int(b_.vectors_[size_t(b)].size());
  cudaStream_t st = b_.stream_;
  record({3, uint64_t(uintptr_t(y)), uint64_t(ldy), uint64_t(rows), uint64_t(uintptr_t(bv)), uint64_t(n)},
         [=] { cuda::add_bias(y, ldy, rows, bv, n, st); });
}

void CudaPass::rope_and_store_kv(int layer, float* qkv) {
  const float* inv = static_cast<const float*>(b_.rope_.ptr);
  const int half = b_.cfg_.rope.n_rot / 2;
  const SlotMeta* meta = static_cast<const SlotMeta*>(b_.meta_.ptr);
  const int n = n_slots_;
  const ModelConfig* cfg = &b_.cfg_;
  const float mscale = b_.mscale_;
  cudaStream_t st = b_.stream_;
  record({4, uint64_t(uintptr_t(qkv)), uint64_t(uintptr_t(meta)), uint64_t(n), uint64_t(layer), uint64_t(uintptr_t(inv))},
         [=] { rope_store(qkv, meta, n, layer, *cfg, inv, inv + half, mscale, st); });
}

void CudaPass::attention(int layer, const float* qkv, float* out) {
  const size_t meta_bytes = size_t(n_slots_) * sizeof(SlotMeta);
  const size_t table_off = (meta_bytes + 255) & ~size_t(255);
  if (b_.cfg_.head_dim > kMaxHeadDim)
    throw Error("CUDA attention: head_dim " + std::to_string(b_.cfg_.head_dim) + " > " + std::to_string(kMaxHeadDim));
  const SlotMeta* meta = static_cast<const SlotMeta*>(b_.meta_.ptr);
  const int32_t* tables = reinterpret_cast<const int32_t*>(static_cast<uint8_t*>(b_.meta_.ptr) + table_off);
  const int n = n_slots_;
  const ModelConfig* cfg = &b_.cfg_;
  cudaStream_t st = b_.stream_;
  record({5, uint64_t(uintptr_t(qkv)), uint64_t(uintptr_t(meta)), uint64_t(uintptr_t(tables)), uint64_t(n),
          uint64_t(layer), uint64_t(uintptr_t(out))},
         [=] { cuda::attention(qkv, meta, tables, n, layer, *cfg, out, st); });
}

void CudaPass::add(float* x, const float* y, size_t n) {
  cudaStream_t st = b_.stream_;
  record({6, uint64_t(uintptr_t(x)), uint64_t(uintptr_t(y)), uint64_t(n)}, [=] { cuda::add(x, y, n, st); });
}
void CudaPass::silu_mul(float* g, int rows, int ff) {
  cudaStream_t st = b_.stream_;
  record({7, uint64_t(uintptr_t(g)), uint64_t(rows), uint64_t(ff)}, [=] { cuda::silu_mul(g, rows, ff, st); });
}

void CudaPass::record(std::initializer_list<uint64_t> sig, std::function<void()> f) {
  sig_.push_back(uint64_t(sig.size()));
  sig_.insert(sig_.end(), sig.begin(), sig.end());
  ops_.push_back(std::move(f));
}

void CudaPass::flush() {
  if (ops_.empty()) return;
  std::vector<std::function<void()>> ops = std::move(ops_);
  std::vector<uint64_t> sig = std::move(sig_);
  ops_.clear();
  sig_.clear();
  auto run_all = [&] {
    for (auto& f : ops) f();
  };
  if (!b_.graphs_on_ || !graphable_) {
    run_all();
    return;
  }
  auto it = b_.graphs_.find(sig);
  if (it == b_.graphs_.end()) {
    // First sight: plain launches (they also size every workspace); capture on the second.
    if (b_.graphs_.size() >= 32) {
      for (auto& [k, g] : b_.graphs_)
        if (g.exec) cudaGraphExecDestroy(g.exec);
      b_.graphs_.clear();
    }
    b_.graphs_.emplace(std::move(sig), CudaBackend::GraphEntry{});
    run_all();
    return;
  }
  CudaBackend::GraphEntry& g = it->second;
  if (!g.exec && !g.failed) {
    cudaGraph_t graph = nullptr;
    check(cudaStreamBeginCapture(b_.stream_, cudaStreamCaptureModeRelaxed), "graph capture");
    try {
      run_all();
    } catch (...) {
      cudaStreamEndCapture(b_.stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      g.failed = true;
      run_all();  // as plain launches
      return;
    }
    const cudaError_t e = cudaStreamEndCapture(b_.stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess && graph && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess) {
      g.exec = exec;
    } else {
      cudaGetLastError();
      g.failed = true;
    }
    if (graph) cudaGraphDestroy(graph);
    if (g.failed) {
      run_all();
      return;
    }
  }
  if (g.exec) {
    check(cudaGraphLaunch(g.exec, b_.stream_), "graph launch");
  } else {
    run_all();
  }
}

CudaPass::~CudaPass() {
  try {
    flush();
  } catch (...) {
  }
}

void CudaPass::read(const float* src, float* host, size_t n) {
  flush();
  check(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, b_.stream_), "logits copy");
  check(cudaStreamSynchronize(b_.stream_), "forward pass");
}

void CudaPass::write(float* dst, const float* host, size_t n) {
  flush();
  check(cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, b_.stream_), "upload");
  check(cudaStreamSynchronize(b_.stream_), "upload");
}

}  // namespace

double copy_bandwidth(int device, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  DeviceBuffer a, b;
  a.reserve(bytes, "the bandwidth test");
  b.reserve(bytes, "the bandwidth test");
  check(cudaMemset(a.ptr, 1, bytes), "memset");
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  check(cudaMemcpy(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice), "copy");  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(i % 2 ? a.ptr : b.ptr, i % 2 ? b.ptr : a.ptr, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    check(cudaEventSynchronize(e1), "copy");
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return 2.0 * double(bytes) / (double(ms[ms.size() / 2]) * 1e-3);  // read + write
}

}  // namespace cuda

bool cuda_compiled() { return true; }
double cuda_copy_bandwidth(int index, size_t bytes) { return cuda::copy_bandwidth(index, bytes); }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

bool cuda_device_memory(int index, size_t* free_bytes, size_t* total_bytes, std::string* name) {
  if (cudaSetDevice(index) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess || cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  *name = prop.name;
  return true;
}

std::shared_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    throw Error("cuda:" + std::to_string(index) + ": " + std::to_string(n) + " CUDA device(s) visible");
  return std::make_shared<cuda::CudaBackend>(cfg, index);
}

}  // namespace pensieve
