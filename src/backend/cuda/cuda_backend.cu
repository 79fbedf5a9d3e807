// The CUDA backend: weights copied once to the GPU in their file layout (Q4_0 and Q8_0 repacked:
// quants contiguous and 16-byte aligned, scales apart; Q6_K, Q4_K and Q5_K kept and, where there is
// room, also repacked into a second, aligned copy for the int8 GEMV), every op of the forward pass
// run there on one stream, keys and values in a device copy of each KV pool (in a layout of its
// own within a block), and only the logits copied back (the per-pass metadata
// and token ids go up from pinned memory without a wait; the embedding rows are dequantized there).
// Decode matmuls (and every float32-exact one) are fused dequantize-GEMVs, several tokens per read
// of the row: serving ones on Q4_0, Q8_0, Q4_K, Q5_K and Q6_K round the activations to int8 per 32
// values (in the kernel that produces them where it can) and use dp4a with 16-byte weight loads;
// exact ones and the other types stay float32 (Q4_K, Q6_K: two rows a warp, coalesced; others: one
// row a warp). Larger matmuls use an fp16 copy of the weight (cached on first use when the GPU has room,
// else dequantized into a workspace) and cuBLAS (fp16 in, fp32 accumulate and out), except batches
// of 17-64 tokens on Q4_0 (a batched decode step): a GEMM that dequantizes in registers for the
// tensor cores (wgmma with its k splits summed in a cluster on Hopper, mma.sync elsewhere). A pass's
// launches are recorded and replayed as a CUDA graph once the same pass recurs (a decode token's
// int8 qkv GEMV doing the RoPE and KV store in its store); the GEMVs and the
// kernels around them use programmatic dependent launch so that each starts its weight loads
// while the previous kernel finishes.
// One translation unit: the int8 GEMVs (cuda_gemv.cuh), the batched GEMMs (cuda_gemm.cuh) and the
// tiled and split attention (cuda_attention.cuh) are included where they build on this file's
// kernels and helpers.
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <unordered_map>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kernels.cuh"
#include "backend/cuda/cuda_ops.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/rope.h"
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

// Environment variable `name` as an int, or `unset` where it is not set.
static int env_int(const char* name, int unset) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : unset;
}
// env_int(name, unset) where that is a or b, else `other`.
static int env_pick(const char* name, int unset, int a, int b, int other) {
  const int v = env_int(name, unset);
  return v == a || v == b ? v : other;
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

// Asks L2 for the line holding p (no register waits for it).
__device__ __forceinline__ void prefetch_l2_line(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Asks L2 for `bytes` (a multiple of 16) at p (16-byte aligned), one instruction (sm_90).
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
  prefetch_l2_line(p);
#endif
}

// A warp's 32 values (v, one a lane) rounded to int8 as the int8 GEMVs take their activations:
// *q = round(v * 127 / max|v|) (ties to even), and lane 0 stores {max|v| / 127, sum of the q} at
// *ds. Every lane of the warp calls it.
__device__ __forceinline__ void warp_round_int8(float v, int8_t* q, float2* ds) {
  float amax = fabsf(v);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
  const int qi = __float2int_rn(v * id);
  *q = int8_t(qi);
  int sum = qi;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % 32 == 0) *ds = make_float2(d, float(sum));
}

// A warp's row r: each token's sum over the lanes into y[t * ldy + r].
template <int N>
__device__ __forceinline__ void store_row_sums(const float (&acc)[N], int nt, float* __restrict__ y, int64_t ldy, int r,
                                               int lane) {
#pragma unroll
  for (int t = 0; t < N; ++t) {
    if (t < nt) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[t * ldy + r] = s;
    }
  }
}

// Programmatic dependent launch (sm_90): a GEMV launched with launch_pdl() may start while the
// kernel before it still runs; it issues its weight loads, which depend on nothing, and then
// pdl_wait() blocks until the previous kernel has finished and its writes are visible. A kernel
// that feeds a GEMV calls pdl_trigger() first so that the GEMV's blocks may be scheduled early.
// Without the launch attribute both are no-ops. Such a kernel reads what the kernels before it
// write through plain pointers or __ldcg, never through a const __restrict__ one: those loads may
// take the read-only path (ld.global.nc), which assumes the data does not change while the kernel
// runs, and under PDL it does (a Q4_0 GEMM reading its activations that way gave wrong results).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// dst[i] = src[i] for n 16-byte words, after the kernel before has finished: a pass's logits into
// mapped host memory, written over the bus by the kernel instead of a copy after the pass's graph.
constexpr size_t kCopyOutMax = size_t(1) << 20;
__global__ void copy_out_kernel(const uint4* src, uint4* dst, int n) {
  pdl_wait();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = __ldcg(src + i);
}

// A kernel boundary and nothing else (PENSIEVE_CUDA_DEBUG_SKIP=8).
__global__ void debug_empty_kernel() {
  pdl_trigger();
  pdl_wait();
}

// PENSIEVE_CUDA_PDL=0 launches every kernel after the previous one has finished.
static bool pdl_on() {
  static const bool on = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9 && env_int("PENSIEVE_CUDA_PDL", 1) != 0;
  }();
  return on;
}

// The wgmma kernels run where this build has sm_90a code (CMake defines PENSIEVE_CUDA_SM90A when
// CMAKE_CUDA_ARCHITECTURES names 90a) and the device is compute capability 9.0;
// PENSIEVE_CUDA_WGMMA=0 keeps the mma.sync ones.
static bool wgmma_on() {
  static const bool on = [] {
#if defined(PENSIEVE_CUDA_SM90A)
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major == 9 && minor == 0 && env_int("PENSIEVE_CUDA_WGMMA", 1) != 0;
#else
    return false;
#endif
  }();
  return on;
}

template <typename... KArgs, typename... Args>
static void launch_pdl_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                               dim3 cluster, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_on() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (cluster.x * cluster.y * cluster.z > 1) {
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = cluster.x;
    attr[1].val.clusterDim.y = cluster.y;
    attr[1].val.clusterDim.z = cluster.z;
    cfg.numAttrs = 2;
  }
  check(cudaLaunchKernelEx(&cfg, kernel, KArgs(args)...), "kernel launch");
}

template <typename... KArgs, typename... Args>
static void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                       Args... args) {
  launch_pdl_cluster(kernel, grid, block, smem, st, dim3(1, 1, 1), args...);
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

// KS > 1: KS warps share each R rows, warp k taking the block steps k, k + KS, ... (more warps for
// matrices of few rows); their sums are added in warp order, whatever nt is.
template <GgmlType T, int R, int KS>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_vec_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int rows, int cols,
                                const float* x, int64_t ldx, float* __restrict__ y,
                                int64_t ldy, int nt) {
  using L = Lane<T>;
  static_assert(kGemvWarps % KS == 0);
  pdl_trigger();
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ks = warp % KS;
  const int r0 = (blockIdx.x * (kGemvWarps / KS) + warp / KS) * R;
  if (KS == 1 && r0 >= rows) return;
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
  for (int b = lane / L::kLanes + ks * kStep; b < nb; b += kStep * KS) {
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
  if constexpr (KS > 1) {
    __shared__ float part[kGemvWarps][R][kGemvTokens];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < kGemvTokens; ++t) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) part[warp][r][t] = s;
      }
    __syncthreads();
    if (ks != 0 || r0 >= rows) return;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r0 + r >= rows) break;
      for (int t = lane; t < nt; t += 32) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < KS; ++k) s += part[warp + k][r][t];
        y[t * ldy + r0 + r] = s;
      }
    }
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r0 + r >= rows) break;
      store_row_sums(acc[r], nt, y, ldy, r0 + r, lane);
    }
  }
}

static bool has_vec_kernel(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q6_K; }

// Rows per warp of the coalesced GEMV: 1, 2 or 4 (PENSIEVE_CUDA_GEMV_ROWS; default 2).
static int gemv_rows() {
  static const int r = env_pick("PENSIEVE_CUDA_GEMV_ROWS", 2, 1, 4, 2);
  return r;
}

// Warps sharing each row group of the Q4_K/Q6_K float GEMV: 1, 2 or 4 (PENSIEVE_CUDA_GEMV_KSPLIT;
// default 4).
static int gemv_ksplit() {
  static const int k = env_pick("PENSIEVE_CUDA_GEMV_KSPLIT", 4, 1, 2, 4);
  return k;
}

template <GgmlType T>
static void launch_vec(const DeviceWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, int nt,
                       cudaStream_t stream) {
  const int R = gemv_rows(), KS = gemv_ksplit();
  const dim3 block(32 * kGemvWarps);
  const int per_block = (kGemvWarps / KS) * R;
  const dim3 grid(unsigned((w.rows + per_block - 1) / per_block));
  if (KS == 4) {
    if (R == 1) launch_pdl(gemv_vec_kernel<T, 1, 4>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else if (R == 4) launch_pdl(gemv_vec_kernel<T, 4, 4>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else launch_pdl(gemv_vec_kernel<T, 2, 4>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
  } else if (KS == 2) {
    if (R == 1) launch_pdl(gemv_vec_kernel<T, 1, 2>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else if (R == 4) launch_pdl(gemv_vec_kernel<T, 4, 2>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else launch_pdl(gemv_vec_kernel<T, 2, 2>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
  } else {
    if (R == 1) launch_pdl(gemv_vec_kernel<T, 1, 1>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else if (R == 4) launch_pdl(gemv_vec_kernel<T, 4, 1>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
    else launch_pdl(gemv_vec_kernel<T, 2, 1>, grid, block, 0, stream, w.data, w.row_bytes, w.rows, w.cols, x, ldx, y, ldy, nt);
  }
}

}  // namespace cuda
}  // namespace pensieve

#include "backend/cuda/cuda_gemv.cuh"
#include "backend/cuda/cuda_gemm.cuh"

namespace pensieve {
namespace cuda {

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

// Embedding rows: row ids[t] of W (cols % 32 == 0) to float32 at x + t * cols, one thread a block
// of 32 values, from a packed Q4_0 / Q8_0 copy (Packed: quants Q, scales S) or the file layout,
// with the CPU's arithmetic ((q - 8) * d, q * d, dequant32).
template <GgmlType T, bool Packed>
__global__ void embed_kernel(const uint8_t* __restrict__ W, const __half* __restrict__ S, size_t row_bytes, int cols,
                             int n, const int32_t* __restrict__ ids, float* __restrict__ x) {
  const int nsub = cols / 32;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n) * nsub) return;
  const int t = int(i / nsub), s = int(i % nsub);
  const int64_t r = ids[t];
  float v[32];
  if constexpr (Packed) {
    const int64_t b = r * nsub + s;
    dequant_packed32<T>(W + b * Pack<T>::kQBytes, __half2float(S[b]), v);
  } else {
    dequant32<T>(W + r * row_bytes, s, v);
  }
  float4* o = reinterpret_cast<float4*>(x + int64_t(t) * cols + s * 32);
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
}

// x (n rows of cols floats, ldx apart) to fp16, rows packed; four values a thread where the rows
// allow 16-byte loads. A plain launch: it starts once the kernel that wrote x has finished.
__global__ void to_f16_kernel(const float* __restrict__ x, int64_t ldx, int cols, int n, __half* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cols % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    const int c4 = cols / 4;
    if (i >= int64_t(n) * c4) return;
    const int t = int(i / c4), c = int(i % c4) * 4;
    const float4 v = *reinterpret_cast<const float4*>(x + t * ldx + c);
    __half2* o = reinterpret_cast<__half2*>(out + int64_t(t) * cols + c);
    o[0] = __floats2half2_rn(v.x, v.y);
    o[1] = __floats2half2_rn(v.z, v.w);
    return;
  }
  if (i >= int64_t(n) * cols) return;
  const int t = int(i / cols), c = int(i % cols);
  out[i] = __float2half_rn(x[t * ldx + c]);
}

static void to_f16(const float* x, int64_t ldx, int cols, int n, __half* out, cudaStream_t st) {
  const bool vec = cols % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t threads = vec ? int64_t(n) * (cols / 4) : int64_t(n) * cols;
  to_f16_kernel<<<unsigned((threads + 255) / 256), 256, 0, st>>>(x, ldx, cols, n, out);
  check_launch("to_f16");
}

constexpr int kNormThreads = 256, kNormVec = 8;  // the vector path holds dim <= 8192 in registers

// A thread's sum of squares of its float4s, in element order.
template <int N>
__device__ __forceinline__ float sum_squares(const float4 (&v)[N]) {
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    ss = fmaf(v[j].x, v[j].x, ss);
    ss = fmaf(v[j].y, v[j].y, ss);
    ss = fmaf(v[j].z, v[j].z, ss);
    ss = fmaf(v[j].w, v[j].w, ss);
  }
  return ss;
}

// The rmsnorm scale 1 / sqrt(mean(x^2) + eps) of a block's row from each thread's partial sum of
// squares ss: summed within each of the block's `warps` warps, then over the warps by the first
// one. Every thread of the block calls it and gets the scale.
__device__ __forceinline__ float block_rms_scale(float ss, int warps, int dim, float eps) {
  __shared__ float part[32];
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < warps ? part[threadIdx.x] : 0.0f;
    t = warp_sum(t);
    if (threadIdx.x == 0) part[0] = t;
  }
  __syncthreads();
  return float(1.0 / sqrt(double(part[0]) / dim + double(eps)));
}

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
    const float scale = block_rms_scale(sum_squares(v), kNormThreads / 32, dim, eps);
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
  const float scale = block_rms_scale(ss, blockDim.x / 32, dim, eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
}

// Fused producers of a GEMV's input, each also rounding its output to int8 per 32-value block
// exactly as quantize_x_kernel does (when xq is set) for the int8 GEMV that reads it, or writing it
// in fp16 as to_f16_kernel does (when xh is set: rows of dim, for a tensor-core GEMM).
// Kind 1: x += a, then y = rmsnorm(x) * w; kind 2: y = rmsnorm(x) * w. One block of kNormThreads
// per row; dim % 32 == 0, dim <= 4 * kNormThreads * kNormVec, every pointer 16-byte aligned. The
// sums run in rmsnorm_kernel's order, so the float results equal the unfused ops' bit for bit.
template <int Kind>
__global__ void __launch_bounds__(kNormThreads)
    norm_fused_kernel(float* __restrict__ x, const float* a, const float* __restrict__ w,
                      float* __restrict__ y, int dim, float eps, int8_t* __restrict__ xq,
                      float2* __restrict__ xds, __half* __restrict__ xh) {
  pdl_trigger();
  const size_t row = blockIdx.x;
  float4* xr = reinterpret_cast<float4*>(x + row * dim);
  float4* yr = reinterpret_cast<float4*>(y + row * dim);
  const int n4 = dim / 4;
  float4 v[kNormVec], g[kNormVec];
#pragma unroll
  for (int j = 0; j < kNormVec; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    g[j] = i < n4 ? reinterpret_cast<const float4*>(w)[i] : make_float4(0.f, 0.f, 0.f, 0.f);  // loaded early
  }
  pdl_wait();  // x and a come from the kernels before
#pragma unroll
  for (int j = 0; j < kNormVec; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    v[j] = i < n4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    if constexpr (Kind == 1) {
      if (i < n4) {
        const float4 b = reinterpret_cast<const float4*>(a + row * dim)[i];
        v[j].x += b.x; v[j].y += b.y; v[j].z += b.z; v[j].w += b.w;
        xr[i] = v[j];
      }
    }
  }
  const float scale = block_rms_scale(sum_squares(v), kNormThreads / 32, dim, eps);
  const int nb = dim / 32;
#pragma unroll
  for (int j = 0; j < kNormVec; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    if (j * kNormThreads >= n4) break;  // uniform over the block
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i < n4) {
      o.x = v[j].x * scale * g[j].x;
      o.y = v[j].y * scale * g[j].y;
      o.z = v[j].z * scale * g[j].z;
      o.w = v[j].w * scale * g[j].w;
      yr[i] = o;
      if (xh) {
        __half2* oh = reinterpret_cast<__half2*>(xh + row * dim) + 2 * i;
        oh[0] = __floats2half2_rn(o.x, o.y);
        oh[1] = __floats2half2_rn(o.z, o.w);
      }
    }
    if (xq) {
      // Eight neighbouring threads hold one 32-value block (n4 % 8 == 0: a group is all in or out).
      float amax = fmaxf(fmaxf(fabsf(o.x), fabsf(o.y)), fmaxf(fabsf(o.z), fabsf(o.w)));
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
      const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
      const int q0 = __float2int_rn(o.x * id), q1 = __float2int_rn(o.y * id), q2 = __float2int_rn(o.z * id),
                q3 = __float2int_rn(o.w * id);
      int sum = q0 + q1 + q2 + q3;
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
      if (i < n4) {
        reinterpret_cast<uint32_t*>(xq + row * dim)[i] =
            uint32_t(q0 & 0xFF) | (uint32_t(q1 & 0xFF) << 8) | (uint32_t(q2 & 0xFF) << 16) | (uint32_t(q3) << 24);
        if (i % 8 == 0) xds[row * nb + i / 8] = make_float2(d, float(sum));
      }
    }
  }
}

// silu_mul_kernel's g = silu(g) * u over rows of 2 ff (ff % 32 == 0), one warp per 32 values,
// also rounding the result to int8 as quantize_x_kernel does, or (xh) writing it in fp16 (rows of
// ff) as to_f16_kernel does. With ks > 0, g and u are read as the ks partial sums of the Q4_0 GEMM
// that made them (part, rows of 2 ff) and the ops after read only g.
__global__ void silu_quant_kernel(float* __restrict__ g, int rows, int ff, int8_t* __restrict__ xq,
                                  float2* __restrict__ xds, __half* __restrict__ xh, const float* part, int ks) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32, nb = ff / 32;
  if (gw >= int64_t(rows) * nb) return;
  const int t = int(gw / nb), b = int(gw % nb);
  float* row = g + int64_t(t) * 2 * ff;
  const int c = b * 32 + lane;
  float a = 0.0f, u = 0.0f;
  if (ks > 0) {  // gate and up as the GEMM's partial sums, added in sum_parts_kernel's order
    for (int k = 0; k < ks; ++k) {
      const float* pr = part + (int64_t(k) * rows + t) * 2 * ff;
      a += __ldcg(pr + c);
      u += __ldcg(pr + ff + c);
    }
  } else {
    a = row[c];
    u = row[ff + c];
  }
  const float v = a / (1.0f + expf(-a)) * u;
  row[c] = v;
  if (xh) {
    xh[int64_t(t) * ff + c] = __float2half_rn(v);
    return;
  }
  if (xq) warp_round_int8(v, xq + int64_t(t) * ff + c, xds + int64_t(t) * nb + b);
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

// RoPE's factors for position `pos` and one frequency, and the rotation of one pair of a head; the
// products and sums are rounded one by one (no contraction into fma) so that both RoPE kernels give
// the same bits.
__device__ __forceinline__ void rope_cos_sin(int pos, float inv, float mscale, float* c, float* sn) {
  const float angle = __fmul_rn(float(pos), inv);
  *c = __fmul_rn(cosf(angle), mscale);
  *sn = __fmul_rn(sinf(angle), mscale);
}
__device__ __forceinline__ void rope_rotate(float* v, int k, int half, int style_half, float c, float sn) {
  const int ia = style_half ? k : 2 * k, ib = style_half ? k + half : 2 * k + 1;
  const float a = v[ia], b = v[ib];
  v[ia] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
  v[ib] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn));
}

// Rotates heads blockIdx.y * hg .. + hg - 1 (q heads, then k heads) of token blockIdx.x, the
// token's cos / sin computed once per block; the k heads among them are then written with their v
// heads into the token's KV rows.
__global__ void rope_store_token_kernel(float* __restrict__ qkv, const SlotMeta* __restrict__ slots, int layer,
                                        int n_heads, int n_kv_heads, int head_dim, int n_rot, int style_half,
                                        const float* __restrict__ inv_short, const float* __restrict__ inv_long,
                                        float mscale, int hg) {
  pdl_trigger();
  pdl_wait();
  __shared__ float cs[128], sns[128];
  const int t = blockIdx.x;
  const SlotMeta s = slots[t];
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  float* row = qkv + size_t(t) * (q_dim + 2 * kv_dim);
  const float* inv = s.long_rope ? inv_long : inv_short;
  const int half = n_rot / 2;
  const int h0 = blockIdx.y * hg, h1 = min(h0 + hg, n_heads + n_kv_heads);
  for (int k = threadIdx.x; k < half; k += blockDim.x) rope_cos_sin(s.pos, inv[k], mscale, &cs[k], &sns[k]);
  __syncthreads();
  const int pairs = (h1 - h0) * half;
  for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
    const int h = h0 + i / half, k = i % half;
    rope_rotate(row + size_t(h) * head_dim, k, half, style_half, cs[k], sns[k]);
  }
  __syncthreads();
  const float* k = row + q_dim;
  const float* vv = row + q_dim + kv_dim;
  // The k heads of this block, and their v heads.
  kv_put_heads(s, layer, k, vv, max(h0 - n_heads, 0), max(h1 - n_heads, 0), head_dim, n_kv_heads);
}

// Rotates head blockIdx.y (q heads, then k heads) of token blockIdx.x; a k head's block then writes
// that head's k and v into the token's KV rows.
__global__ void rope_store_kernel(float* __restrict__ qkv, const SlotMeta* __restrict__ slots, int layer,
                                  int n_heads, int n_kv_heads, int head_dim, int n_rot, int style_half,
                                  const float* __restrict__ inv_short, const float* __restrict__ inv_long,
                                  float mscale) {
  pdl_trigger();
  pdl_wait();
  const int t = blockIdx.x, h = blockIdx.y;
  const SlotMeta s = slots[t];
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  float* row = qkv + size_t(t) * (q_dim + 2 * kv_dim);
  const float* inv = s.long_rope ? inv_long : inv_short;
  const int half = n_rot / 2;
  float* v = row + size_t(h) * head_dim;  // k heads follow q heads
  for (int k = threadIdx.x; k < half; k += blockDim.x) {
    float c, sn;
    rope_cos_sin(s.pos, inv[k], mscale, &c, &sn);
    rope_rotate(v, k, half, style_half, c, sn);
  }
  if (h < n_heads) return;
  __syncthreads();
  const int kh = h - n_heads;
  kv_put_heads(s, layer, row + q_dim, row + q_dim + kv_dim, kh, kh + 1, head_dim, n_kv_heads);
}

constexpr int kAttnWarps = 4;
// Passes of at least this many tokens rotate one token a block (rope_store_token_kernel).
constexpr int kRopeTokenMin = 32;
// Decode steps of at most this many lone tokens may have their RoPE and KV store done by the
// attention kernel (AttnPlan::rope).
constexpr int kRopeAttnMax = 16;
// Passes whose cuBLAS GEMMs have at most this many tokens may be captured as graphs.
constexpr int kBlasGraphMaxTokens = 128;
constexpr int kMaxHeadDim = 256;

// The end of an attention over warps that each ran an online softmax over some of the positions:
// warp w's maximum sm[w], sum sl[w] and hd accumulated values at sacc + w * ld merge into the hd
// values o[d] (the block's threads taking d = threadIdx.x, + blockDim.x, ...). With xq, the output
// is also rounded to int8 for the next matmul as quantize_x_kernel does: element c0 + d goes to
// xq, its 32-value block's {d, sum(q)} to xds (hd % 32 == 0: a warp holds whole blocks).
// Output element d of an attention (val) into o[d], and for the matmul that reads it: xh in fp16,
// xq rounded to int8 per 32-value block as quantize_x_kernel does (every lane of the warp calls it,
// for 32 consecutive d).
__device__ __forceinline__ void store_attn_out(float val, int d, float* __restrict__ o,
                                               int8_t* __restrict__ xq, float2* __restrict__ xds, size_t c0,
                                               __half* __restrict__ xh) {
  o[d] = val;
  if (xh) xh[c0 + d] = __float2half_rn(val);
  if (xq) warp_round_int8(val, xq + c0 + d, xds + (c0 + d) / 32);
}

template <int NW>
__device__ __forceinline__ void merge_warp_parts(const float (&sm)[NW], const float (&sl)[NW], const float* sacc, int ld,
                                                 int hd, float* __restrict__ o, int8_t* __restrict__ xq,
                                                 float2* __restrict__ xds, size_t c0, __half* __restrict__ xh = nullptr) {
  float M = -INFINITY;
  for (int w = 0; w < NW; ++w) M = fmaxf(M, sm[w]);
  float L = 0.0f;
  for (int w = 0; w < NW; ++w)
    if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < NW; ++w)
      if (sl[w] > 0.0f) sum += sacc[w * ld + d] * expf(sm[w] - M);
    store_attn_out(sum / L, d, o, xq, xds, c0, xh);
  }
}

// Attention of token blockIdx.x, head blockIdx.y over its sequence's positions: each warp takes
// every kAttnWarps-th position with an online softmax, then the warps' partial results merge.
__global__ void attention_kernel(const float* qkv, const SlotMeta* __restrict__ slots,
                                 const int32_t* __restrict__ tables, int layer, int n_heads, int n_kv_heads,
                                 int head_dim, int window, float scale, float* __restrict__ out,
                                 int8_t* __restrict__ xq, float2* __restrict__ xds) {
  pdl_trigger();
  pdl_wait();
  constexpr int D = kMaxHeadDim / 32;
  const int t = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SlotMeta s = slots[t];
  const int group = n_heads / n_kv_heads;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const float* q = qkv + size_t(t) * (q_dim + 2 * kv_dim) + size_t(h) * head_dim;
  const int kvh = h / group, hdb = head_dim * (s.q8 ? 1 : s.f32 ? 4 : 2);
  float qr[D], acc[D];
#pragma unroll
  for (int i = 0; i < D; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < head_dim ? q[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int start = window > 0 ? max(0, s.pos - window + 1) : 0;
  for (int p = start + warp; p <= s.pos; p += kAttnWarps) {
    const int block = tables[s.table + p / s.block_size], off = p % s.block_size;
    const uint8_t* krow = kv_key(s, block, layer, off, kvh, hdb);
    const uint8_t* vrow = krow + size_t(s.block_size) * s.row_bytes;
    // A Q8 row's values times its scale (1 for the others).
    float dk = 1.0f, dv = 1.0f;
    if (s.q8) {
      const float* sk = kv_q8_scale(s, block, layer, off, kvh, head_dim, n_kv_heads);
      dk = sk[0];
      dv = sk[s.block_size * s.row_bytes / 4];
    }
    auto elem = [&](const uint8_t* row, int d) {
      return s.q8 ? float(reinterpret_cast<const int8_t*>(row)[d])
             : s.f32 ? reinterpret_cast<const float*>(row)[d]
                     : __half2float(reinterpret_cast<const __half*>(row)[d]);
    };
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) part = fmaf(qr[i], elem(krow, d), part);
    }
    const float score = warp_sum(part) * dk * scale;
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), e = expf(score - m_new);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) acc[i] = acc[i] * corr + e * dv * elem(vrow, d);
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
  merge_warp_parts(sm, sl, &sacc[0][0], kMaxHeadDim, head_dim, out + size_t(t) * q_dim + size_t(h) * head_dim, xq, xds,
                   size_t(t) * q_dim + size_t(h) * head_dim);
}

}  // namespace cuda
}  // namespace pensieve

#include "backend/cuda/cuda_attention.cuh"

namespace pensieve {
namespace cuda {

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

void add_bias(float* y, int64_t ldy, int rows, const float* b, int n, cudaStream_t st);  // (with the vector ops)

// RoPE + KV store of a one-token qkv GEMV whose launch could not take it: as its own kernel.
static void rope_store_apart(const RopeArgs& a, float* qkv, cudaStream_t st) {
  const int q_dim = a.n_heads * a.head_dim, kv_dim = a.n_kv_heads * a.head_dim;
  const int at[3] = {0, q_dim, q_dim + kv_dim}, len[3] = {q_dim, kv_dim, kv_dim};
  for (int i = 0; i < 3; ++i)  // the biases the GEMV's store would have added
    if (a.bias[i]) add_bias(qkv + at[i], 0, 1, a.bias[i], len[i], st);
  launch_pdl(rope_store_kernel, dim3(1, a.n_heads + a.n_kv_heads), dim3(128), 0, st, qkv, a.slot, a.layer, a.n_heads,
             a.n_kv_heads, a.head_dim, a.n_rot, a.style_half, a.inv_short, a.inv_long, a.mscale);
  check_launch("rope_store");
}

void gemv(const DeviceWeight& w, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
          cudaStream_t stream, DeviceBuffer* staging, void* xq, bool xq_ready, const RopeArgs* rope,
          const NormEpi* epi, const NormIn* nin) {
  bool rope_done = false;
  if ((epi && epi->on()) || (nin && nin->ss)) {  // decided on the host where norm_fits(w) holds
    const bool ro = rope && rope->on;
    const int8_t* q = static_cast<const int8_t*>(xq);
    const float2* ds = reinterpret_cast<const float2*>(q + quantized_x_scales_offset(1, w.cols));
    auto run = [&](const RopeArgs* ra) {
      return w.repack                   ? launch_repack_i8(w, q, ds, y, ldy, 1, stream, ra, epi, nin)
             : w.type == GgmlType::Q4_0 ? launch_i8_smem<GgmlType::Q4_0>(w, q, ds, y, ldy, 1, stream, ra, epi, nin)
                                        : launch_i8_smem<GgmlType::Q8_0>(w, q, ds, y, ldy, 1, stream, ra, epi, nin);
    };
    if (n_tok == 1 && xq_ready && ro && run(rope)) {
      rope_done = true;
    } else if (n_tok != 1 || !xq_ready || !run(nullptr)) {
      throw Error("CUDA matmul: a " + std::string(type_name(w.type)) + " GEMV could not take the fused norm");
    }
    check_launch("gemv");
    if (ro && !rope_done) rope_store_apart(*rope, y, stream);
    return;
  }
  if (xq && takes_int8_x(w)) {
    // int8 activations: every token quantized by one launch (unless a fused op did), then the
    // dp4a GEMV.
    const int nb = w.cols / 32;
    int8_t* q = static_cast<int8_t*>(xq);
    float2* ds = reinterpret_cast<float2*>(q + quantized_x_scales_offset(n_tok, w.cols));
    if (!xq_ready) {
      const int64_t threads = int64_t(n_tok) * nb * 32;
      launch_pdl(quantize_x_kernel, dim3(unsigned((threads + 255) / 256)), dim3(256), 0, stream, x, ldx, w.cols, n_tok, q, ds);
      check_launch("quantize_x");
    }
    // Q4_K/Q5_K stage every token of a launch in shared memory: as many as fit.
    const size_t per_tok = size_t(w.cols) + size_t(nb) * sizeof(float2);
    const bool k_quant = w.type == GgmlType::Q4_K || w.type == GgmlType::Q5_K || w.type == GgmlType::Q6_K;
    const int step = k_quant ? std::max(1, std::min(kGemvTokens, int(kSmemXMax / per_tok))) : kGemvTokens;
    for (int t0 = 0; t0 < n_tok; t0 += step) {
      const int nt = std::min(step, n_tok - t0);
      const int8_t* qt = q + size_t(t0) * size_t(w.cols);
      const float2* dt = ds + size_t(t0) * size_t(nb);
      if (w.repack) {
        if (rope && rope->on && launch_repack_i8(w, qt, dt, y + t0 * ldy, ldy, nt, stream, rope)) {
          rope_done = true;
        } else if (!launch_repack_i8(w, qt, dt, y + t0 * ldy, ldy, nt, stream)) {
          throw Error("CUDA matmul: " + std::string(type_name(w.type)) + " int8 GEMV of " + std::to_string(nt) +
                      " tokens x " + std::to_string(w.cols));
        }
      } else if (w.type == GgmlType::Q4_K || w.type == GgmlType::Q5_K) {
        if (rope && rope->on && launch_k_i8(w, qt, dt, y + t0 * ldy, ldy, nt, stream, rope)) {
          rope_done = true;
        } else if (!launch_k_i8(w, qt, dt, y + t0 * ldy, ldy, nt, stream)) {
          throw Error("CUDA matmul: K-quant int8 GEMV of " + std::to_string(nt) + " tokens x " + std::to_string(w.cols));
        }
      } else if (w.type == GgmlType::Q4_0) {
        if (rope && rope->on && launch_i8_smem<GgmlType::Q4_0>(w, qt, dt, y + t0 * ldy, ldy, nt, stream, rope)) {
          rope_done = true;
        } else if (!launch_i8_smem<GgmlType::Q4_0>(w, qt, dt, y + t0 * ldy, ldy, nt, stream)) {
          launch_packed<GgmlType::Q4_0, true>(w, nullptr, 0, qt, dt, y + t0 * ldy, ldy, nt, stream);
        }
      } else {
        if (rope && rope->on && launch_i8_smem<GgmlType::Q8_0>(w, qt, dt, y + t0 * ldy, ldy, nt, stream, rope)) {
          rope_done = true;
        } else if (!launch_i8_smem<GgmlType::Q8_0>(w, qt, dt, y + t0 * ldy, ldy, nt, stream)) {
          launch_packed<GgmlType::Q8_0, true>(w, nullptr, 0, qt, dt, y + t0 * ldy, ldy, nt, stream);
        }
      }
      check_launch("gemv");
    }
    if (rope && rope->on && !rope_done) rope_store_apart(*rope, y, stream);
    return;
  }
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
    } else if (w.scales) {
      if (w.type == GgmlType::Q4_0)
        launch_packed<GgmlType::Q4_0, false>(w, xt, ldx, nullptr, nullptr, yt, ldy, nt, stream);
      else
        launch_packed<GgmlType::Q8_0, false>(w, xt, ldx, nullptr, nullptr, yt, ldy, nt, stream);
    } else if (has_vec_kernel(w.type)) {
      switch (w.type) {
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
  if (rope && rope->on) rope_store_apart(*rope, y, stream);
}

size_t quantized_x_scales_offset(int n_tok, int cols) { return (size_t(n_tok) * size_t(cols) + 255) & ~size_t(255); }
size_t quantized_x_bytes(int n_tok, int cols) {
  return quantized_x_scales_offset(n_tok, cols) + size_t(n_tok) * size_t(cols / 32) * sizeof(float2);
}

bool norm_fusable(const float* x, const float* a, const float* w, const float* y, int dim) {
  return dim % 32 == 0 && dim <= 4 * kNormThreads * kNormVec &&
         (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w) |
          reinterpret_cast<uintptr_t>(y)) % 16 == 0;
}
void norm_fused(float* x, const float* a, const float* w, float* y, int rows, int dim, float eps, void* xq,
                cudaStream_t st, __half* xh) {
  if (rows <= 0) return;
  int8_t* q = static_cast<int8_t*>(xq);
  float2* ds = q ? reinterpret_cast<float2*>(q + quantized_x_scales_offset(rows, dim)) : nullptr;
  if (a) launch_pdl(norm_fused_kernel<1>, dim3(rows), dim3(kNormThreads), 0, st, x, a, w, y, dim, eps, q, ds, xh);
  else launch_pdl(norm_fused_kernel<2>, dim3(rows), dim3(kNormThreads), 0, st, x, static_cast<const float*>(nullptr), w, y, dim, eps, q, ds, xh);
  check_launch("rmsnorm (fused)");
}
void silu_quant(float* g, int rows, int ff, void* xq, cudaStream_t st, __half* xh, const float* part, int ks) {
  int8_t* q = static_cast<int8_t*>(xq);
  float2* ds = q ? reinterpret_cast<float2*>(q + quantized_x_scales_offset(rows, ff)) : nullptr;
  const int64_t threads = int64_t(rows) * (ff / 32) * 32;
  launch_pdl(silu_quant_kernel, dim3(unsigned((threads + 255) / 256)), dim3(256), 0, st, g, rows, ff, q, ds, xh,
             part, ks);
  check_launch("silu_mul (fused)");
}
// PENSIEVE_CUDA_Q4K_I8=0: Q4_K and Q5_K GEMVs take float32 activations.
static bool q4k_i8_on() {
  static const bool on = env_int("PENSIEVE_CUDA_Q4K_I8", 1) != 0;
  return on;
}
bool takes_int8_x(const DeviceWeight& w) {
  // Q4_K: one token's int8 activations must fit the shared-memory staging.
  if (w.repack) return size_t(w.cols) + size_t(w.cols / 32) * sizeof(float2) <= kSmemXMax;
  return w.scales != nullptr || ((w.type == GgmlType::Q4_K || w.type == GgmlType::Q5_K) && w.cols % QK_K == 0 && q4k_i8_on() &&
                                 size_t(w.cols) + size_t(w.cols / 32) * sizeof(float2) <= kSmemXMax);
}

void dequantize_f16(const DeviceWeight& w, __half* out, cudaStream_t stream) {
  const int64_t n = int64_t(w.rows) * (w.cols / 32);
  const unsigned grid = unsigned((n + 255) / 256);
  if (w.scales) {
    const __half* S = reinterpret_cast<const __half*>(w.scales);
    if (w.type == GgmlType::Q4_0)
      dequant_packed_f16_kernel<GgmlType::Q4_0><<<grid, 256, 0, stream>>>(w.data, S, n, out);
    else
      dequant_packed_f16_kernel<GgmlType::Q8_0><<<grid, 256, 0, stream>>>(w.data, S, n, out);
    check_launch("dequantize_f16");
    return;
  }
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

static void embed_rows(const DeviceWeight& w, const int32_t* ids, int n, float* x, cudaStream_t st) {
  const unsigned grid = unsigned((int64_t(n) * (w.cols / 32) + 127) / 128);
  const __half* S = reinterpret_cast<const __half*>(w.scales);
  if (w.scales && w.type == GgmlType::Q4_0) {
    embed_kernel<GgmlType::Q4_0, true><<<grid, 128, 0, st>>>(w.data, S, 0, w.cols, n, ids, x);
  } else if (w.scales) {
    embed_kernel<GgmlType::Q8_0, true><<<grid, 128, 0, st>>>(w.data, S, 0, w.cols, n, ids, x);
  } else {
    switch (w.type) {
#define X(name)                                                                                                  \
  case GgmlType::name:                                                                                           \
    embed_kernel<GgmlType::name, false><<<grid, 128, 0, st>>>(w.data, nullptr, w.row_bytes, w.cols, n, ids, x); \
    break;
      PENSIEVE_CUDA_TYPES(X)
#undef X
      default: throw Error("CUDA embedding: no kernel for " + std::string(type_name(w.type)));
    }
  }
  check_launch("embedding rows");
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
  if (n_slots >= kRopeTokenMin && cfg.rope.n_rot <= 256) {
    // Heads in groups of 8 a block, so that a batch of tokens fills the GPU.
    constexpr int hg = 8;
    const int heads = cfg.n_heads + cfg.n_kv_heads;
    launch_pdl(rope_store_token_kernel, dim3(n_slots, (heads + hg - 1) / hg), dim3(256), 0, st, qkv, slots, layer,
               cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope.n_rot, int(cfg.rope.style == RopeStyle::RotateHalf),
               inv_short, inv_long, mscale, hg);
    check_launch("rope_store");
    return;
  }
  launch_pdl(rope_store_kernel, dim3(n_slots, cfg.n_heads + cfg.n_kv_heads), dim3(128), 0, st, qkv, slots, layer,
             cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope.n_rot, int(cfg.rope.style == RopeStyle::RotateHalf),
             inv_short, inv_long, mscale);
  check_launch("rope_store");
}
// Where a pass's attention runs (CudaPass fills it from the pass's tokens): prefill runs as tiles,
// lone tokens (decode) one block each; with neither (tiles == null), every token as a lone one in
// attention_kernel.
struct AttnPlan {
  const AttnTile* tiles = nullptr;
  int n_tiles = 0;
  bool mma = false;  // the tiles on tensor cores (no float32 KV rows)
  int kv = 1;         // the caches of the pass: 1 fp16, 2 float32, 4 Q8, or several of them
  const int32_t* lone = nullptr;
  int n_lone = 0;
  bool q8_store = false;  // the lone tokens' Q8 rows are the attention's to store (their qkv GEMV did the RoPE)
  // Flash decoding (split_blocks): 32-key chunks a block, the most blocks a lone token takes, and the
  // workspace of the split tokens' counters and partial results.
  int split_chunks = 0, split = 1;
  int* split_counters = nullptr;
  float* split_parts = nullptr;
  // The lone tokens' RoPE and KV store done by the decode attention kernel (rope_and_store_kv
  // deferred to it: every token a lone one, each its sequence's only one); RoPE's inverse
  // frequencies and scale, which every RoPE of the pass takes (set with the pass).
  bool rope = false;
  const float* inv_short = nullptr;
  const float* inv_long = nullptr;
  float mscale = 1.0f;
};

// Whether the tiled and split kernels serve this model (else attention_kernel does).
bool tiled_attention(const ModelConfig& cfg) { return cfg.head_dim % 16 == 0 && cfg.head_dim <= 128; }

template <int DJ>
static void launch_tile(dim3 grid, cudaStream_t st, const float* qkv, const SlotMeta* slots, const int32_t* tables,
                        const AttnTile* tiles, int layer, const ModelConfig& cfg, float scale, float* out, int8_t* q,
                        float2* ds) {
  const size_t smem = tile_smem_bytes(16 * DJ);
  static const bool raised = [&] {
    check(cudaFuncSetAttribute(attention_tile_kernel<DJ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "attention smem limit");
    return true;
  }();
  (void)raised;
  launch_pdl(attention_tile_kernel<DJ>, grid, dim3(kTileThreads), smem, st, qkv, slots, tables, tiles, layer,
             cfg.n_heads, cfg.n_kv_heads, cfg.sliding_window, scale, out, q, ds);
}

// One launch for the tiles of each kind of cache in the pass (kv: 1 fp16, 4 Q8).
template <int HD>
static void launch_mma(dim3 grid, cudaStream_t st, const float* qkv, const SlotMeta* slots, const int32_t* tables,
                       const AttnTile* tiles, int layer, const ModelConfig& cfg, float scale, float* out, int8_t* q,
                       float2* ds, int kv) {
  const size_t smem = mma_smem_bytes(HD);
  static const bool raised = [&] {
    for (auto kernel : {attention_mma_kernel<HD, false>, attention_mma_kernel<HD, true>})
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), "attention smem limit");
    return true;
  }();
  (void)raised;
  if (kv & 1)
    launch_pdl(attention_mma_kernel<HD, false>, grid, dim3(kTileThreads), smem, st, qkv, slots, tables, tiles, layer,
               cfg.n_heads, cfg.n_kv_heads, cfg.sliding_window, scale, out, q, ds);
  if (kv & 4)
    launch_pdl(attention_mma_kernel<HD, true>, grid, dim3(kTileThreads), smem, st, qkv, slots, tables, tiles, layer,
               cfg.n_heads, cfg.n_kv_heads, cfg.sliding_window, scale, out, q, ds);
}

// The fp16 decode kernel compiled for 4 blocks an SM (at most 128 registers a thread; 64 streams
// 8.4k -> 8.8k tok/s); PENSIEVE_CUDA_SPLIT_MINB=1: as many registers as it wants (146, 3 blocks).
// (Blocks of 8 warps, one 32-key chunk a warp up to 256 positions, were slower: 62.5 against 56.5
// us a layer at 64 streams of ~190 positions on an H100.)
static int split_minb() {
  static const int v = env_int("PENSIEVE_CUDA_SPLIT_MINB", 4);
  return v;
}

// PENSIEVE_CUDA_SPLIT_EARLY=0: no prefetch of the keys and values before the wait.
static bool split_early() {
  static const bool on = env_int("PENSIEVE_CUDA_SPLIT_EARLY", 1) != 0;
  return on;
}

// Decode steps of more than kSplitEarly tokens on a Q8 cache: each warp asks L2 for all of its
// chunks' keys, values and scales before the wait (PENSIEVE_CUDA_SPLIT_BULK=0: not). (On an fp16
// cache it cost 3% at 64 streams.)
static bool split_bulk() {
  static const bool on = env_int("PENSIEVE_CUDA_SPLIT_BULK", 1) != 0;
  return on;
}

// PENSIEVE_CUDA_SPLIT_EAGER=0: decode steps of at most kSplitEarly tokens on an fp16 cache ask for
// q, then the keys, then the values, as longer ones do (not all three at once).
static bool split_eager() {
  static const bool on = env_int("PENSIEVE_CUDA_SPLIT_EAGER", 1) != 0;
  return on;
}

template <int HD>
static void launch_split(dim3 grid, cudaStream_t st, const float* qkv, const SlotMeta* slots, const int32_t* tables,
                         const int32_t* lone, int layer, const ModelConfig& cfg, float scale, float* out, int8_t* q,
                         float2* ds, __half* xh, const AttnPlan& plan) {
  // 1: the first chunk's rows prefetched before the wait; 2 (Q8 caches): all of them, in bulk.
  const int early = int(grid.x) <= kSplitEarly ? int(split_early()) : 0;
  const int early_q8 = int(grid.x) <= kSplitEarly ? early : 2 * int(split_bulk());
  const int kv = plan.kv;
  const bool q8_store = plan.q8_store || plan.rope;
  const int n_rot = plan.rope ? cfg.rope.n_rot : 0;
  const int style_half = int(cfg.rope.style == RopeStyle::RotateHalf);
  auto go = [&](auto kernel, int e) {
    launch_pdl(kernel, grid, dim3(32 * kSplitWarps), 0, st, qkv, slots, tables, lone, layer, cfg.n_heads, cfg.n_kv_heads,
               cfg.sliding_window, scale, out, q, ds, xh, e, plan.split_chunks, plan.split_counters, plan.split_parts,
               plan.inv_short, plan.inv_long, plan.mscale, n_rot, style_half);
  };
  if ((kv & 1) && plan.rope && early == 1 && split_eager()) go(attention_split_kernel<HD, 0, 1, true, true>, early);
  else if ((kv & 1) && plan.rope) go(attention_split_kernel<HD, 0, 4, true>, early);
  else if ((kv & 1) && early == 1 && split_eager()) go(attention_split_kernel<HD, 0, 1, false, true>, early);
  else if ((kv & 1) && split_minb() == 4) go(attention_split_kernel<HD, 0, 4>, early);
  else if (kv & 1) go(attention_split_kernel<HD, 0, 1>, early);
  if (kv & 2) go(attention_split_kernel<HD, 1, 1>, early);
  if ((kv & 4) && split_minb() == 4)
    go(q8_store ? attention_split_kernel<HD, 2, 4, true> : attention_split_kernel<HD, 2, 4>, early_q8);
  else if (kv & 4)
    go(q8_store ? attention_split_kernel<HD, 2, 1, true> : attention_split_kernel<HD, 2, 1>, early_q8);
}

// With xq (head_dim % 32 == 0), the output is also rounded to int8 for the GEMV that reads it; with
// xh (every token a lone one: plan.n_tiles == 0), also written in fp16 for the GEMM that reads it.
void attention(const float* qkv, const SlotMeta* slots, const int32_t* tables, int n_slots, int layer,
               const ModelConfig& cfg, float* out, cudaStream_t st, void* xq, const AttnPlan& plan, __half* xh) {
  if (cfg.head_dim > kMaxHeadDim)
    throw Error("CUDA attention: head_dim " + std::to_string(cfg.head_dim) + " > " + std::to_string(kMaxHeadDim));
  const int q_dim = cfg.n_heads * cfg.head_dim;
  int8_t* q = static_cast<int8_t*>(xq);
  float2* ds = q ? reinterpret_cast<float2*>(q + quantized_x_scales_offset(n_slots, q_dim)) : nullptr;
  const float scale = 1.0f / std::sqrt(float(cfg.head_dim));
  if (!plan.tiles) {
    launch_pdl(attention_kernel, dim3(n_slots, cfg.n_heads), dim3(32 * kAttnWarps), 0, st, qkv, slots, tables, layer,
               cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.sliding_window, scale, out, q, ds);
    check_launch("attention");
    return;
  }
  if (plan.n_tiles > 0 && plan.mma) {
    const dim3 grid(plan.n_tiles, cfg.n_heads);
    switch (cfg.head_dim / 16) {
      case 1: launch_mma<16>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 2: launch_mma<32>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 3: launch_mma<48>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 4: launch_mma<64>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 5: launch_mma<80>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 6: launch_mma<96>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      case 7: launch_mma<112>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
      default: launch_mma<128>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds, plan.kv); break;
    }
    check_launch("attention (tiles, mma)");
  } else if (plan.n_tiles > 0) {
    const dim3 grid(2 * plan.n_tiles, cfg.n_heads);
    switch (cfg.head_dim / 16) {
      case 1: launch_tile<1>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 2: launch_tile<2>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 3: launch_tile<3>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 4: launch_tile<4>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 5: launch_tile<5>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 6: launch_tile<6>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      case 7: launch_tile<7>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
      default: launch_tile<8>(grid, st, qkv, slots, tables, plan.tiles, layer, cfg, scale, out, q, ds); break;
    }
    check_launch("attention (tiles)");
  }
  if (plan.n_lone > 0) {
    const dim3 grid(plan.n_lone, cfg.n_heads, plan.split);
    switch (cfg.head_dim / 16) {
      case 1: launch_split<16>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 2: launch_split<32>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 3: launch_split<48>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 4: launch_split<64>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 5: launch_split<80>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 6: launch_split<96>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      case 7: launch_split<112>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
      default: launch_split<128>(grid, st, qkv, slots, tables, plan.lone, layer, cfg, scale, out, q, ds, xh, plan); break;
    }
    check_launch("attention (split)");
  }
}

// ---------------------------------------------------------------------------------------------
// Device memory

// Device buffers (and pinned host blocks a pass names) freed so far: a graph recorded before the last
// free may hold a freed pointer.
static std::atomic<uint64_t> g_device_frees{0};
DeviceBuffer::~DeviceBuffer() {
  if (ptr) {
    cudaFree(ptr);
    ++g_device_frees;
  }
}
void DeviceBuffer::reserve(size_t n, const char* what) {
  if (n <= bytes) return;
  if (ptr) {
    cudaFree(ptr);
    ++g_device_frees;
  }
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

// Page-locked host memory for the small uploads of every pass (slot metadata, embedding rows), so
// that they are queued without waiting for the copy: `get` waits only for the previous copy out
// of the buffer (long done by the next pass), `copied` marks the one just queued.
struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  cudaEvent_t done = nullptr;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (done) cudaEventSynchronize(done);
    if (ptr) cudaFreeHost(ptr);
    if (done) cudaEventDestroy(done);
  }
  uint8_t* get(size_t n) {
    if (done) check(cudaEventSynchronize(done), "pinned staging");
    else check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "pinned staging event");
    if (bytes < n) {
      if (ptr) {
        cudaFreeHost(ptr);
        ++g_device_frees;  // a recorded upload may name it
      }
      ptr = nullptr;
      bytes = 0;
      check(cudaHostAlloc(&ptr, n + n / 4 + 256, cudaHostAllocDefault), "pinned staging");
      bytes = n + n / 4 + 256;
    }
    return static_cast<uint8_t*>(ptr);
  }
  void copied(cudaStream_t st) { check(cudaEventRecord(done, st), "pinned staging event"); }
};

// A KV pool's device copy; its size counts in the backend's report while the pool lives.
struct KvDeviceStorage final : KvPool::DeviceStorage {
  DeviceBuffer buf;
  std::shared_ptr<std::atomic<size_t>> counter;
  ~KvDeviceStorage() override {
    if (counter) *counter -= buf.bytes;
  }
};

class CudaBackend;

// A recorded launch: the callable stored in place, so that recording a pass's ~300 launches
// allocates nothing per launch (their captures are a few pointers and sizes).
class InlineOp {
 public:
  template <typename F>
  explicit InlineOp(F&& f) {
    using D = std::decay_t<F>;
    static_assert(sizeof(D) <= kBytes && alignof(D) <= alignof(std::max_align_t), "capture too large for InlineOp");
    new (buf_) D(std::forward<F>(f));
    call_ = [](void* p) { (*static_cast<D*>(p))(); };
    move_ = [](void* to, void* from) {
      new (to) D(std::move(*static_cast<D*>(from)));
      static_cast<D*>(from)->~D();
    };
    destroy_ = [](void* p) { static_cast<D*>(p)->~D(); };
  }
  InlineOp(InlineOp&& o) noexcept : call_(o.call_), move_(o.move_), destroy_(o.destroy_) {
    move_(buf_, o.buf_);
    o.destroy_ = nullptr;
  }
  InlineOp(const InlineOp&) = delete;
  InlineOp& operator=(const InlineOp&) = delete;
  InlineOp& operator=(InlineOp&&) = delete;
  ~InlineOp() {
    if (destroy_) destroy_(buf_);
  }
  void operator()() { call_(buf_); }

 private:
  static constexpr size_t kBytes = 192;
  alignas(std::max_align_t) unsigned char buf_[kBytes];
  void (*call_)(void*);
  void (*move_)(void*, void*);
  void (*destroy_)(void*);
};

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
  // Passes whose cuBLAS GEMMs take more than kBlasGraphMaxTokens tokens run as plain launches.
  // PENSIEVE_CUDA_GRAPHS=0 turns graphs off.
  template <typename F>
  void record(std::initializer_list<uint64_t> sig, F&& f) {
    sig_.push_back(uint64_t(sig.size()));
    sig_.insert(sig_.end(), sig.begin(), sig.end());
    ops_.emplace_back(std::forward<F>(f));
  }
  void flush();
  // Makes d at least `need` bytes (reserving `size`), after the launches recorded so far have run.
  void grow(DeviceBuffer& d, size_t need, size_t size, const char* what);
  // The last add, rmsnorm or silu_mul waits here, unrecorded, so that it can merge with what comes
  // next: add + rmsnorm of the same rows become one kernel, and an rmsnorm or silu_mul whose output
  // an int8 GEMV reads also writes that GEMV's int8 activations. Every other op records it first.
  enum class Pend { None, Add, Norm, AddNorm, Silu, Attn, Rope };
  struct Pending {
    Pend kind = Pend::None;
    float* x = nullptr;  // add: the sum; norm: the input (written by AddNorm); silu: g
    const float* a = nullptr;  // add: the addend; attention: qkv
    const float* w = nullptr;  // norm: the gain
    float* y = nullptr;        // norm, attention: the output
    int rows = 0, dim = 0;     // norm: rows x dim; silu: rows x ff; attention, RoPE: dim = the layer
    float eps = 0.0f;
    size_t n = 0;  // add: values
    const float* part = nullptr;  // silu: g and u as a Q4_0 GEMM's ks partial sums (PartsSlot)
    int ks = 0;
  };
  void emit_pending(void* xq = nullptr, __half* xh = nullptr);
  // add_bias on one token's row of the qkv GEMV just recorded, kept for rope_and_store_kv (which
  // hands the biases to that GEMV's store) and recorded by emit_pending otherwise.
  struct BiasSlot {
    float* y;
    const float* b;
    int n;
  };
  BiasSlot bias_pend_[3];
  int n_bias_ = 0;
  void record_bias(float* y, int64_t ldy, int rows, const float* bv, int n);
  // emit_pending() for a GEMM on fp16 activations x (n_tok rows of `cols`, ldx apart): where the
  // pending rmsnorm or silu_mul produces x and the fp16 workspace holds them already, it also
  // writes them there in fp16 (true: no to_f16 needed).
  bool emit_pending_f16(const float* x, int64_t ldx, int n_tok, int cols);
  void record_attention(int layer, const float* qkv, float* out, void* xq, __half* xh = nullptr);
  void record_rope(int layer, float* qkv);
  // Which activations the int8 workspace holds now (so that matmuls of the same input, e.g.
  // separate q, k and v, quantize it once); cleared by every op that may change them.
  struct QuantSrc {
    const float* x = nullptr;
    int64_t ldx = 0;
    int n_tok = 0, cols = 0;
    void* xq = nullptr;
    NormIn nin{};  // activations a fused norm left unscaled (NormEpi): the factor to apply
  };
  QuantSrc qsrc_;
  // The last recorded op while it is a one-token int8 GEMV that may still take more work into its
  // store (args, read when it runs): its output and rows.
  template <class A>
  struct GemvSlot {
    size_t op = SIZE_MAX;
    const float* y = nullptr;
    int rows = 0;
    A* args = nullptr;  // in the backend's pass_rope_ / pass_epi_, valid until the next pass starts
  };
  using RopeSlot = GemvSlot<RopeArgs>;  // the RoPE + KV store of rope_and_store_kv (Q4_0, Q8_0, K-quants)
  // The add + rmsnorm or silu_mul that follows (NormEpi), where the GEMV's kernel can take it.
  struct EpiSlot : GemvSlot<NormEpi> {
    const void* in = nullptr;  // the int8 activations it reads (the store writes the other workspace)
    bool add_norm = false, silu = false;
  };
  RopeSlot rope_slot_;
  EpiSlot epi_slot_;
  // The last recorded op while it is the sum of a Q4_0 GEMM's partial sums into y (rows of `rows`
  // floats, ldy apart): a silu_mul of y that follows drops it and adds the parts itself.
  struct PartsSlot {
    size_t op = SIZE_MAX, sig_at = 0;
    const float* y = nullptr;
    int64_t ldy = 0;
    const float* part = nullptr;
    int ks = 0, nt = 0, rows = 0;
  };
  PartsSlot parts_slot_;
  Pending pend_;
  AttnPlan plan_;
  bool profiling_ = false;
  bool timed_ = false;  // a graph launch of this pass is being timed (PENSIEVE_CUDA_STEP_TIMING)
  // The pass's shape (its slots' count and kinds, the attention plan): a pass of the shape of the
  // one before may launch that pass's graph early (at its set-up), which flush() then checks.
  uint64_t shape_ = 0;
  const void* early_ = nullptr;  // the graph launched early (a GraphEntry), until flush() checks it
  void spoil_early();
  // The pass's token ids as staged for the upload, whether every slot named one, and where the ids,
  // the slots' metadata and the block tables are on the device.
  const int32_t* staged_ids_ = nullptr;
  bool ids_known_ = false;
  const int32_t* dids_ = nullptr;
  const SlotMeta* dmeta_ = nullptr;
  const int32_t* dtables_ = nullptr;
  const void* ran_ = nullptr;    // the graph the last flush that ran ops launched (null: none)
  bool decode_only_ = true;      // every slot another sequence's (a decode step)
  bool lone_unique_ = false;     // two or more lone tokens, each its sequence's only one
  int flushes_ = 0;              // flushes that ran ops
  void launch_graph(cudaGraphExec_t exec);
  std::chrono::steady_clock::time_point t_ctor_{}, t_begin_{}, t_flush_{}, t_launch_{}, t_launched_{};
  CudaBackend& b_;
  std::unique_lock<std::mutex> lock_;
  int n_slots_;
  // The backend's (its passes run one at a time): reused, so that a pass allocates nothing.
  std::vector<uint64_t>& sig_;
  std::vector<InlineOp>& ops_;
  bool graphable_ = true;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& cfg, int device) : cfg_(cfg), device_(device) {
    gemv_max_ = std::max(-1, env_int("PENSIEVE_CUDA_GEMV_MAX", gemv_max_));
    f16_cache_on_ = env_int("PENSIEVE_CUDA_F16_CACHE", f16_cache_on_) != 0;
    graphs_on_ = env_int("PENSIEVE_CUDA_GRAPHS", graphs_on_) != 0;
    pack_on_ = env_int("PENSIEVE_CUDA_PACK", pack_on_) != 0;
    int8_on_ = env_int("PENSIEVE_CUDA_INT8", int8_on_) != 0;
    q4_gemm_ = env_int("PENSIEVE_CUDA_Q4_GEMM", q4_gemm_);
    q6_on_ = env_int("PENSIEVE_CUDA_Q6_I8", q6_on_) != 0;
    kpack_on_ = env_int("PENSIEVE_CUDA_KPACK", kpack_on_) != 0;
    parts_fuse_on_ = env_int("PENSIEVE_CUDA_PARTS_FUSE", parts_fuse_on_) != 0;
    fuse_on_ = env_int("PENSIEVE_CUDA_FUSE", fuse_on_) != 0;
    rope_fuse_on_ = env_int("PENSIEVE_CUDA_ROPE_FUSE", rope_fuse_on_) != 0;
    rope_attn_on_ = env_int("PENSIEVE_CUDA_ROPE_ATTN", 1) != 0;
    norm_epi_on_ = env_int("PENSIEVE_CUDA_NORM_EPI", norm_epi_on_) != 0;
    silu_epi_on_ = env_int("PENSIEVE_CUDA_SILU_EPI", silu_epi_on_) != 0;
    silu_prefetch_on_ = env_int("PENSIEVE_CUDA_SILU_PREFETCH", silu_prefetch_on_) != 0;
    debug_skip_ = env_int("PENSIEVE_CUDA_DEBUG_SKIP", 0);
    copy_out_on_ = env_int("PENSIEVE_CUDA_COPY_OUT", 1) != 0;
    stack_on_ = env_int("PENSIEVE_CUDA_STACKED", stack_on_) != 0;
    early_on_ = env_int("PENSIEVE_CUDA_EARLY_LAUNCH", early_on_) != 0;
    bias_fuse_on_ = env_int("PENSIEVE_CUDA_BIAS_FUSE", bias_fuse_on_) != 0;
    attn_mode_ = env_int("PENSIEVE_CUDA_ATTN", attn_mode_);
    split_chunks_ = std::max(0, env_int("PENSIEVE_CUDA_SPLIT_CHUNKS", split_chunks_));
    blas_graphs_on_ = env_int("PENSIEVE_CUDA_BLAS_GRAPHS", blas_graphs_on_) != 0;
    timing_.on = env_int("PENSIEVE_CUDA_STEP_TIMING", timing_.on) != 0;
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    device_name_ = prop.name;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_blas(cublasCreate(&blas_), "cublasCreate");
    check_blas(cublasSetStream(blas_, stream_), "cublasSetStream");
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    // cuBLAS's own workspace, set once so that GEMMs captured into graphs allocate nothing.
    blas_ws_.reserve(size_t(32) << 20, "the cuBLAS workspace");
    check_blas(cublasSetWorkspace(blas_, blas_ws_.ptr, blas_ws_.bytes), "cublasSetWorkspace");
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
    for (const auto& [tokens, t] : timing_.by_tokens)
      std::fprintf(stderr,
                   "cuda step timing: %d passes of %d tokens: host to graph launch %.1f us, graph on the GPU %.1f us, "
                   "logits copy %.1f us, whole pass %.1f us, between passes %.1f us (host: pass setup %.1f us, "
                   "ops recorded %.1f us, cudaGraphLaunch %.1f us)\n",
                   t.n, tokens, 1e3 * t.host_ms / t.n, 1e3 * t.gpu_ms / t.n, 1e3 * t.copy_ms / t.n,
                   1e3 * t.pass_ms / t.n, 1e3 * t.gap_ms / std::max(1, t.n_gaps), 1e3 * t.ctor_ms / t.n,
                   1e3 * t.record_ms / t.n, 1e3 * t.launch_ms / t.n);
    for (cudaEvent_t e : {timing_.e0, timing_.e1, timing_.e2})
      if (e) cudaEventDestroy(e);
    for (auto& [h, g] : graphs_)
      if (g.exec) cudaGraphExecDestroy(g.exec);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }

  int add_weight(const Tensor& t, WeightUse use) override {
    host_.push_back({{&t}, t.rows(), t.nbytes});
    matmul_use_.push_back(use != WeightUse::Rows);
    return int(host_.size()) - 1;
  }
  // The parts go up one after the other into one matrix (rows are contiguous in every layout).
  int add_stacked(std::span<const Tensor* const> parts, WeightUse use) override {
    if (!stack_on_ || parts.empty() || use == WeightUse::Rows) return -1;
    HostWeight h;
    for (const Tensor* t : parts) {
      if (!t || t->type != parts[0]->type || t->cols() != parts[0]->cols() ||
          t->nbytes != size_t(t->rows()) * t->row_bytes())
        return -1;
      h.parts.push_back(t);
      h.rows += t->rows();
      h.nbytes += t->nbytes;
    }
    host_.push_back(std::move(h));
    matmul_use_.push_back(true);
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
    // Q4_0 and Q8_0 are packed (cuda_ops.h): uploaded to a staging buffer, then rearranged there.
    auto packed = [&](const Tensor* t) { return pack_on_ && packs(t->type) && t->cols() % 32 == 0; };
    auto n_blocks = [&](size_t i) { return host_[i].rows * (host_[i].t()->cols() / 32); };
    // The weight's bytes (its parts in order) from host memory to dst on the device.
    auto upload = [&](size_t i, void* dst) {
      size_t off = 0;
      for (const Tensor* part : host_[i].parts) {
        check(cudaMemcpy(static_cast<uint8_t*>(dst) + off, ready(*part).data, part->nbytes, cudaMemcpyHostToDevice),
              "weight upload");
        off += part->nbytes;
      }
    };
    auto qbytes = [](const Tensor* t, int64_t nb) { return size_t(nb) * (t->type == GgmlType::Q4_0 ? 16 : 32); };
    // Q6_K, Q4_K and Q5_K matrices keep their file layout and gain a repacked copy for the int8
    // GEMV, where the GPU keeps max(2 GiB, 10%) free after all of them (else none: the GEMVs read
    // the file layout, slower); embedding tables read as rows only need none.
    bool repack_on = true;
    auto repack_bytes = [&](size_t i) -> size_t {
      const Tensor* t = host_[i].t();
      if (!repack_on || !int8_on_ || !matmul_use_[i] || t->cols() % QK_K != 0) return 0;
      if (t->type == GgmlType::Q6_K && q6_on_) return align(q6_pack_bytes(n_blocks(i)));
      if ((t->type == GgmlType::Q4_K || t->type == GgmlType::Q5_K) && kpack_on_ && q4k_i8_on())
        return align(kpack_bytes(n_blocks(i), t->type == GgmlType::Q5_K));
      return 0;
    };
    size_t total = 0, staging = 0, extra = 0;
    for (size_t i = 0; i < host_.size(); ++i) {
      const Tensor* t = host_[i].t();
      if (packed(t)) {
        total += align(qbytes(t, n_blocks(i))) + align(size_t(n_blocks(i)) * 2);
        staging = std::max(staging, host_[i].nbytes);
      } else {
        total += align(host_[i].nbytes);
        extra += repack_bytes(i);
      }
    }
    for (const auto& v : vectors_) total += align(v.size() * sizeof(float));
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
    if (free_b < total + extra + std::max<size_t>(size_t(2) << 30, total_b / 10)) {
      repack_on = false;
      extra = 0;
    }
    repack_bytes_ = extra;
    total += extra;
    weights_arena_.reserve(std::max<size_t>(total, 256), "the model's weights");
    DeviceBuffer raw;
    if (staging) raw.reserve(staging, "the weight upload staging");
    uint8_t* p = static_cast<uint8_t*>(weights_arena_.ptr);
    for (size_t i = 0; i < host_.size(); ++i) {
      const Tensor* t = host_[i].t();
      const int rows = int(host_[i].rows);
      if (!has_kernel(t->type))
        throw Error(t->name + ": weight type " + std::string(type_name(t->type)) + " has no CUDA kernel");
      max_weight_elems_ = std::max(max_weight_elems_, size_t(rows) * size_t(t->cols()));
      if (packed(t)) {
        const int64_t nb = n_blocks(i);
        uint8_t* q = p;
        uint8_t* sc = p + align(qbytes(t, nb));
        upload(i, raw.ptr);
        const unsigned grid = unsigned((nb + 255) / 256);
        const uint8_t* src = static_cast<const uint8_t*>(raw.ptr);
        if (t->type == GgmlType::Q4_0)
          pack_kernel<GgmlType::Q4_0><<<grid, 256>>>(src, nb, q, reinterpret_cast<__half*>(sc));
        else
          pack_kernel<GgmlType::Q8_0><<<grid, 256>>>(src, nb, q, reinterpret_cast<__half*>(sc));
        check_launch("weight packing");
        check(cudaDeviceSynchronize(), "weight packing");
        DeviceWeight w{t->type, rows, int(t->cols()), t->row_bytes(), q};
        w.scales = sc;
        weights_.push_back(w);
        p = sc + align(size_t(nb) * 2);
        continue;
      }
      upload(i, p);
      weights_.push_back({t->type, rows, int(t->cols()), t->row_bytes(), p});
      p += align(host_[i].nbytes);
      if (const size_t rb = repack_bytes(i)) {
        if (t->type == GgmlType::Q6_K) pack_q6(weights_.back(), p, nullptr);
        else pack_k(weights_.back(), p);
        check(cudaDeviceSynchronize(), "weight repacking");
        weights_.back().repack = p;
        p += rb;
      }
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

  // Page-locked and mapped into the device's address space, so that a pass's small reads are
  // written into it by a kernel (CudaPass::read) and larger ones copied with no staging (pageable
  // memory where that fails; free_host tells the two apart by asking CUDA whether it allocated it).
  void* alloc_host(size_t bytes) const override {
    void* p = nullptr;
    void* d = nullptr;
    if (cudaSetDevice(device_) == cudaSuccess && cudaHostAlloc(&p, bytes, cudaHostAllocMapped) == cudaSuccess) {
      if (cudaHostGetDevicePointer(&d, p, 0) == cudaSuccess) {
        std::lock_guard<std::mutex> g(host_mu_);
        mapped_.push_back({static_cast<uint8_t*>(p), bytes, static_cast<uint8_t*>(d)});
      }
      cudaGetLastError();
      return p;
    }
    cudaGetLastError();
    return Backend::alloc_host(bytes);
  }
  // The device address of host bytes [p, p + n) where they lie in one alloc_host block (else null).
  void* mapped(const void* p, size_t n) const {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    std::lock_guard<std::mutex> g(host_mu_);
    for (const MappedHost& m : mapped_)
      if (b >= m.host && b + n <= m.host + m.bytes) return m.dev + (b - m.host);
    return nullptr;
  }
  void free_host(void* p) const override {
    {
      std::lock_guard<std::mutex> g(host_mu_);
      std::erase_if(mapped_, [&](const MappedHost& m) { return m.host == p; });
    }
    ++g_device_frees;  // a recorded read may name it
    unsigned flags = 0;
    if (cudaHostGetFlags(&flags, p) == cudaSuccess) {
      cudaFreeHost(p);
      return;
    }
    cudaGetLastError();
    Backend::free_host(p);
  }

  size_t device_bytes() const override {
    std::lock_guard<std::mutex> g(mu_);
    size_t n = weights_arena_.bytes + f16_cache_bytes_ + f16_ws_.bytes + act_ws_.bytes + rope_.bytes + meta_.bytes +
               staging_.bytes + xq_ws_.bytes + xq2_ws_.bytes + ss_ws_.bytes + blas_ws_.bytes + gemm_ws_.bytes +
               ids_.bytes;
    for (const auto& b : bufs_) n += b.bytes;
    return n + kv_bytes_->load();
  }
  LaunchStats launch_stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return stats_;
  }

  std::string memory_report() const override {
    std::lock_guard<std::mutex> g(mu_);
    size_t acts = act_ws_.bytes + meta_.bytes + staging_.bytes + xq_ws_.bytes + xq2_ws_.bytes + ss_ws_.bytes +
                  blas_ws_.bytes + gemm_ws_.bytes + ids_.bytes;
    for (const auto& b : bufs_) acts += b.bytes;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return device_name_ + ": weights " + gib(weight_bytes_) +
           (repack_bytes_ ? " (" + gib(repack_bytes_) + " of them repacked K-quant copies)" : std::string()) +
           ", fp16 weight cache " + gib(f16_cache_bytes_) +
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
  // A weight as added: the tensors whose rows it stacks (one, unless add_stacked), and its size.
  struct HostWeight {
    std::vector<const Tensor*> parts;
    int64_t rows = 0;
    size_t nbytes = 0;
    const Tensor* t() const { return parts[0]; }  // its type, width and name
  };
  std::vector<HostWeight> host_;
  std::vector<bool> matmul_use_;  // of host_: read by matmuls (not only as embedding rows)
  std::vector<std::vector<float>> vectors_;
  std::vector<DeviceWeight> weights_;
  std::vector<float*> dvectors_;
  DeviceBuffer weights_arena_, rope_;
  float mscale_ = 1.0f;
  size_t weight_bytes_ = 0, max_weight_elems_ = 0;
  size_t repack_bytes_ = 0;  // of weight_bytes_: the K-quants' copies for the int8 GEMVs
  mutable std::mutex mu_;
  struct MappedHost {
    uint8_t* host;
    size_t bytes;
    uint8_t* dev;
  };
  mutable std::mutex host_mu_;
  mutable std::vector<MappedHost> mapped_;  // alloc_host's blocks
  // PENSIEVE_CUDA_COPY_OUT=0: reads go through cudaMemcpyAsync after the pass's kernels.
  bool copy_out_on_ = true;
  mutable DeviceBuffer bufs_[size_t(Act::Logits) + 1];
  mutable DeviceBuffer f16_ws_, act_ws_, meta_, staging_, xq_ws_, blas_ws_, gemm_ws_, ids_;
  // A fused norm's int8 output (NormEpi: the GEMV that writes it reads xq_ws_) and its groups' sums
  // of squares.
  mutable DeviceBuffer xq2_ws_, ss_ws_;
  // Matmuls of at most gemv_max(w) tokens (and every exact one) run as fused GEMVs; larger ones
  // take a tensor-core GEMM (the Q4_0 one, or cuBLAS on the fp16 copy). PENSIEVE_CUDA_GEMV_MAX
  // sets it for every weight (-1: per weight). On the H100 a Q4_0 Phi-3-mini step took with the
  // GEMV / GEMM 1,867 / 2,493 us at 2 tokens, 2,385 / 2,613 at 4, 3,242 / 2,609 at 6, 3,898 / 2,666
  // at 8, 7,158 / 2,967 at 16; Q4_K_M (cuBLAS) 2,764 / 3,617 at 4 and 4,251 / 3,772 at 8.
  int gemv_max_ = -1;
  int gemv_max(const DeviceWeight& w) const {
    if (gemv_max_ >= 0) return gemv_max_;
    return w.type == GgmlType::Q4_0 && w.scales && q4_gemm_ != 0 ? 4 : 6;
  }
  bool f16_cache_on_ = true;
  bool graphs_on_ = true;
  // Q4_0/Q8_0 packed at load (PENSIEVE_CUDA_PACK=0: file layout); serving GEMVs on packed weights
  // take int8 activations (PENSIEVE_CUDA_INT8=0: float32).
  bool pack_on_ = true, int8_on_ = true;
  // Batches of 17..64 tokens on packed Q4_0, and of 65..128 where the weight has no fp16 copy, go
  // through gemm_q4_wgmma_kernel on Hopper, else gemm_q4_f16_kernel (PENSIEVE_CUDA_Q4_GEMM=0:
  // never, cuBLAS on the fp16 copy; 2: every batch of 17..128). At 64 tokens the mma.sync one takes
  // 82 us a Phi-3 layer against cuBLAS's 108 on an H100.
  int q4_gemm_ = 1;
  // Q6_K matrices also repacked for the int8 GEMV (PENSIEVE_CUDA_Q6_I8=0: float32 GEMV only).
  bool q6_on_ = true;
  bool kpack_on_ = true;  // PENSIEVE_CUDA_KPACK=0: Q4_K / Q5_K GEMVs read the file layout
  bool parts_fuse_on_ = true;  // PENSIEVE_CUDA_PARTS_FUSE=0: silu_mul never adds GEMM partial sums
  // add + rmsnorm, rmsnorm + int8 rounding and silu_mul + int8 rounding as single kernels
  // (PENSIEVE_CUDA_FUSE=0: separate).
  bool fuse_on_ = true;
  // A one-token int8 qkv GEMV (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) also does the RoPE + KV store
  // (PENSIEVE_CUDA_ROPE_FUSE=0: its own kernel after it).
  bool rope_fuse_on_ = true;
  // A decode step of 2-16 lone tokens (each its sequence's only one) on fp16 / Q8 caches: their
  // RoPE and KV store done by the decode attention kernel (PENSIEVE_CUDA_ROPE_ATTN=0: the RoPE
  // kernel).
  bool rope_attn_on_ = true;
  // A one-token int8 o / down GEMV does the add + rmsnorm after it in its store, and the GEMV that
  // reads the norm applies its factor (NormEpi, NormIn; PENSIEVE_CUDA_NORM_EPI=0: the norm kernel).
  bool norm_epi_on_ = true;
  // A one-token int8 gate + up GEMV does the silu_mul + int8 rounding after it in its store
  // (NormEpi::ff; PENSIEVE_CUDA_SILU_EPI=0: silu_quant_kernel), asking L2 for its later rounds'
  // rows before its wait (PENSIEVE_CUDA_SILU_PREFETCH=0: not).
  bool silu_epi_on_ = true;
  bool silu_prefetch_on_ = true;
  // PENSIEVE_CUDA_DEBUG_SKIP, for measuring what the small kernels add to a pass (its results are
  // wrong): 1 records no rmsnorm, 2 no decode attention, 4 no silu_mul kernel; 8 an empty kernel
  // before each decode attention (what one more kernel boundary costs; results right).
  int debug_skip_ = 0;
  bool stack_on_ = true;  // PENSIEVE_CUDA_STACKED=0: add_stacked refuses (separate q, k, v and gate, up)
  // The q, k, v biases of a one-token qkv GEMV with the RoPE store added in that store
  // (PENSIEVE_CUDA_BIAS_FUSE=0: add_bias kernels, and the RoPE kernel after them).
  bool bias_fuse_on_ = true;
  // Prefill attention in tiles (on tensor cores where the KV cache is fp16), decode tokens split
  // over warps; PENSIEVE_CUDA_ATTN=0: one block a token for both (attention_kernel), 2: the tiles
  // in float32 also for an fp16 cache.
  int attn_mode_ = 1;
  // Flash decoding: a lone token's attention takes a block a head for every this many 32-key chunks
  // of its window (PENSIEVE_CUDA_SPLIT_CHUNKS; 0: one block a head). On the H100, a Phi-3-mini Q4_0
  // token after 3,968 tokens of context: 2,987 us of graph with one block a head, 1,921-1,931 with
  // 8 chunks a block, 1,953 with 4, 2,023 with 16.
  int split_chunks_ = 8;
  DeviceBuffer split_ws_;  // AttnPlan's split_counters and split_parts
  bool blas_graphs_on_ = true;
  struct GraphEntry {
    std::vector<uint64_t> sig;
    cudaGraphExec_t exec = nullptr;  // null: seen once, not captured yet (or capture failed)
    bool failed = false;
  };
  // By a hash of the signature (a pass's is ~3,000 words: comparing it once, not at every level
  // of a tree, keeps the lookup to a few microseconds).
  std::unordered_multimap<uint64_t, GraphEntry> graphs_;
  // The graph the last pass ran as its only launch, and that pass's shape (CudaPass::shape_): a
  // pass of the same shape launches it as soon as its token ids are up, so that the host records
  // the pass's ops while the GPU runs it, and only checks at the end that they were that graph's
  // (else it runs the pass again: the same writes, in order). PENSIEVE_CUDA_EARLY_LAUNCH=0: off.
  bool early_on_ = true;
  const GraphEntry* last_graph_ = nullptr;
  uint64_t last_shape_ = 0, last_frees_ = 0;  // and the device frees until then (none since: its pointers hold)
  LaunchStats stats_;
  // Scratch a pass reuses (a pass holds mu_): its recorded launches and their signature, and a
  // second pair that flush() runs from while the pass may go on recording; the RoPE arguments of
  // its qkv GEMVs (a deque: stable addresses); what its constructor uploads.
  std::vector<InlineOp> pass_ops_[2];
  std::vector<uint64_t> pass_sig_[2];
  std::deque<RopeArgs> pass_rope_;
  std::deque<NormEpi> pass_epi_;
  std::vector<SlotMeta> pass_meta_;
  std::vector<int32_t> pass_tables_, pass_lone_;
  std::vector<const SequenceState*> pass_seqs_;
  std::vector<AttnTile> pass_tiles_;
  std::vector<std::pair<const SequenceState*, int>> pass_table_of_;
  std::vector<std::unique_ptr<DeviceBuffer>> f16_cache_;
  size_t f16_cache_bytes_ = 0;
  mutable PinnedBuffer meta_host_, rows_host_;
  // PENSIEVE_CUDA_STEP_TIMING=1: for each pass that replays a graph, by its token count: the host
  // time from the pass's start to the graph launch, the graph's GPU time (events around it), the
  // logits copy's GPU time and the whole pass, averaged and printed to stderr when the backend goes.
  struct StepTiming {
    bool on = false;
    cudaEvent_t e0 = nullptr, e1 = nullptr, e2 = nullptr;
    struct Sum {
      int n = 0;
      int n_gaps = 0;  // passes that directly followed one of the same token count
      double host_ms = 0, gpu_ms = 0, copy_ms = 0, pass_ms = 0, gap_ms = 0;
      double ctor_ms = 0, record_ms = 0, launch_ms = 0;  // parts of the host's time
    };
    std::map<int, Sum> by_tokens;
    std::chrono::steady_clock::time_point last_end{};
    int last_tokens = -1;  // of the pass that ended last (-1: one not replayed from a graph)
  };
  StepTiming timing_;
  std::shared_ptr<std::atomic<size_t>> kv_bytes_ = std::make_shared<std::atomic<size_t>>(0);
};

CudaPass::CudaPass(const CudaBackend& b, std::span<const PassSlot> slots)
    : b_(const_cast<CudaBackend&>(b)),
      lock_(b.mu_),
      n_slots_(int(slots.size())),
      sig_(b_.pass_sig_[0]),
      ops_(b_.pass_ops_[0]) {
  if (b_.timing_.on) t_ctor_ = std::chrono::steady_clock::now();
  check(cudaSetDevice(b_.device_), "cudaSetDevice");
  ops_.clear();  // empty already, unless a pass before threw
  sig_.clear();
  ops_.reserve(size_t(b_.cfg_.n_layers) * 12 + 16);  // a layer records ~10 launches
  sig_.reserve(ops_.capacity() * 12);
  b_.pass_rope_.clear();
  b_.pass_epi_.clear();
  // Slot metadata and the block tables of the pass's sequences, in one upload.
  std::vector<SlotMeta>& meta = b_.pass_meta_;
  std::vector<int32_t>& tables = b_.pass_tables_;
  auto& table_of = b_.pass_table_of_;  // each sequence's table offset (a pass has few sequences)
  meta.assign(slots.size(), SlotMeta{});
  tables.clear();
  table_of.clear();
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
    auto it = std::find_if(table_of.rbegin(), table_of.rend(), [&](const auto& e) { return e.first == s.seq; });
    if (it == table_of.rend()) {
      table_of.emplace_back(s.seq, int(tables.size()));
      tables.insert(tables.end(), s.seq->blocks.begin(), s.seq->blocks.end());
      it = table_of.rbegin();
    }
    const int bs = pool.block_size();
    SlotMeta& m = meta[i];
    m.kv_base = static_cast<KvDeviceStorage*>(pool.device_storage())->buf.ptr;
    m.block_bytes = int64_t(pool.bytes_per_block());
    m.row_bytes = int64_t(pool.bytes_per_row());
    m.block_size = bs;
    m.f32 = pool.type() == KvType::F32;
    m.q8 = pool.type() == KvType::Q8;
    m.pos = s.pos;
    m.table = it->second;
    m.block = s.seq->blocks[size_t(s.pos / bs)];
    m.off = s.pos % bs;
    m.long_rope = s.long_rope;
  }
  if (tables.empty()) tables.push_back(0);
  // The attention plan: runs of 2 or more tokens of one sequence at consecutive positions go as
  // tiles of up to kTileQ, other tokens one block each.
  std::vector<AttnTile>& tiles = b_.pass_tiles_;
  std::vector<int32_t>& lone = b_.pass_lone_;
  tiles.clear();
  lone.clear();
  const bool tiled = b_.attn_mode_ != 0 && tiled_attention(b_.cfg_);
  if (tiled) {
    for (size_t i = 0; i < slots.size();) {
      size_t j = i + 1;
      while (j < slots.size() && slots[j].seq == slots[i].seq && slots[j].pos == slots[j - 1].pos + 1) ++j;
      if (j - i == 1) {
        lone.push_back(int32_t(i));
      } else {
        for (size_t t = i; t < j; t += kMmaQ) tiles.push_back({int(t), int(std::min<size_t>(kMmaQ, j - t))});
      }
      i = j;
    }
  }
  // One upload: the token ids (where the slots name them), the slots' metadata, the tiles, the lone
  // tokens and the block tables, in this order, so that every offset depends on the pass's shape
  // only (a sequence's table growing by a block moves no pointer a recorded launch holds).
  const size_t ids_bytes = slots.size() * sizeof(int32_t);
  const size_t meta_off = (ids_bytes + 255) & ~size_t(255);
  const size_t meta_bytes = meta.size() * sizeof(SlotMeta);
  const size_t tiles_off = (meta_off + meta_bytes + 15) & ~size_t(15);
  const size_t lone_off = tiles_off + tiles.size() * sizeof(AttnTile);
  const size_t table_off = (lone_off + lone.size() * sizeof(int32_t) + 255) & ~size_t(255);
  const size_t total = table_off + tables.size() * sizeof(int32_t);
  // The upload copies whole 4 KB pages, so that its size (a recorded argument) moves only when the
  // tables cross a page.
  const size_t upload = (total + 4095) & ~size_t(4095);
  if (b_.meta_.bytes < upload) b_.meta_.reserve(upload + upload / 2, "pass metadata");
  uint8_t* staging = b_.meta_host_.get(upload);
  int32_t* staged_ids = reinterpret_cast<int32_t*>(staging);
  staged_ids_ = staged_ids;
  ids_known_ = !slots.empty();
  for (size_t i = 0; i < slots.size(); ++i) {
    staged_ids[i] = slots[i].token;
    ids_known_ = ids_known_ && slots[i].token >= 0;
  }
  std::memcpy(staging + meta_off, meta.data(), meta_bytes);
  std::memcpy(staging + tiles_off, tiles.data(), tiles.size() * sizeof(AttnTile));
  std::memcpy(staging + lone_off, lone.data(), lone.size() * sizeof(int32_t));
  std::memcpy(staging + table_off, tables.data(), tables.size() * sizeof(int32_t));
  uint8_t* base = static_cast<uint8_t*>(b_.meta_.ptr);
  dids_ = reinterpret_cast<const int32_t*>(base);
  dmeta_ = reinterpret_cast<const SlotMeta*>(base + meta_off);
  dtables_ = reinterpret_cast<const int32_t*>(base + table_off);
  plan_.inv_short = static_cast<const float*>(b_.rope_.ptr);
  plan_.inv_long = plan_.inv_short + b_.cfg_.rope.n_rot / 2;
  plan_.mscale = b_.mscale_;
  if (tiled) {
    plan_.tiles = reinterpret_cast<const AttnTile*>(base + tiles_off);
    plan_.n_tiles = int(tiles.size());
    plan_.lone = reinterpret_cast<const int32_t*>(base + lone_off);
    plan_.n_lone = int(lone.size());
    int kinds = 0;
    for (const SlotMeta& m : meta) kinds |= m.f32 ? 2 : m.q8 ? 4 : 1;
    const bool any32 = (kinds & 2) != 0;
    plan_.kv = kinds;
    plan_.mma = b_.attn_mode_ == 1 && !any32;
    plan_.split_chunks = b_.split_chunks_;
    if (lone.size() >= 2) {
      std::vector<const SequenceState*>& seqs = b_.pass_seqs_;
      seqs.clear();
      for (const PassSlot& ps : slots) seqs.push_back(ps.seq);
      std::sort(seqs.begin(), seqs.end());
      lone_unique_ = std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end();
    }
    plan_.split = 1;
    for (int32_t i : lone)
      plan_.split = std::max(plan_.split, split_blocks(meta[size_t(i)].pos, b_.cfg_.sliding_window, b_.split_chunks_));
    if (plan_.split > 1) {
      const size_t pairs = lone.size() * size_t(b_.cfg_.n_heads);
      const size_t counters = (pairs * sizeof(int) + 255) & ~size_t(255);
      const size_t need = counters + pairs * kMaxSplit * split_part_floats(b_.cfg_.head_dim) * sizeof(float);
      const size_t had = b_.split_ws_.bytes;
      grow(b_.split_ws_, need, need, "the decode attention's partial results");
      if (b_.split_ws_.bytes != had)
        check(cudaMemsetAsync(b_.split_ws_.ptr, 0, b_.split_ws_.bytes, b_.stream_), "split counters");
      plan_.split_counters = static_cast<int*>(b_.split_ws_.ptr);
      plan_.split_parts = reinterpret_cast<float*>(static_cast<uint8_t*>(b_.split_ws_.ptr) + counters);
    }
  }
  // The upload is the pass's first op: a node of its graph, so that a replayed decode step makes no
  // copy call of its own (flush() marks the staging buffer's use once the op is queued).
  {
    cudaStream_t st = b_.stream_;
    record({17, uint64_t(uintptr_t(base)), uint64_t(uintptr_t(staging)), uint64_t(upload)}, [=] {
      check(cudaMemcpyAsync(base, staging, upload, cudaMemcpyHostToDevice, st), "metadata upload");
    });
  }
  // The shape: what decides the pass's launches beyond its ops (which flush() compares): the slots'
  // count and cache kinds and the attention plan (tiles, lone tokens, splits).
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; };
  mix(uint64_t(n_slots_));
  for (const SlotMeta& m : meta) mix(uint64_t(m.f32) | uint64_t(m.q8) << 1);
  mix(tiles.size());
  for (const AttnTile& t : tiles) mix(uint64_t(uint32_t(t.t0)) | uint64_t(uint32_t(t.n)) << 32);
  mix(lone.size());
  for (int32_t i : lone) mix(uint64_t(uint32_t(i)));
  mix(uint64_t(tiled) | uint64_t(plan_.mma) << 1);
  mix(uint64_t(uint32_t(plan_.split)) | uint64_t(uint32_t(plan_.kv)) << 32);
  mix(uint64_t(uint32_t(plan_.split_chunks)) | uint64_t(lone_unique_) << 32);
  // The upload's size: an early launch copies what its graph copied, which must cover these tables.
  mix(uint64_t(upload));
  shape_ = h;
  // Decode steps only (no sequence with two tokens): a prompt's passes of one shape may still
  // differ in the rows whose logits they want, which would waste the early launch.
  for (size_t i = 1; i < slots.size() && decode_only_; ++i) decode_only_ = slots[i].seq != slots[i - 1].seq;
  if (b_.timing_.on) t_begin_ = std::chrono::steady_clock::now();
  // PENSIEVE_CUDA_PROFILE_TOKENS=N: a profiler started with collection off (ncu
  // --profile-from-start off) records only the passes of N tokens.
  static const int profile_tokens = env_int("PENSIEVE_CUDA_PROFILE_TOKENS", 0);
  if (profile_tokens > 0 && n_slots_ == profile_tokens) {
    profiling_ = true;
    cudaProfilerStart();
  }
  // Everything the pass's kernels read is up (the ids with the metadata): a pass shaped as the one
  // before starts that one's graph now, and records its ops while it runs; flush() checks that they
  // are the graph's. (Rows of odd widths are gathered by the host in embed(): not then.)
  if (b_.early_on_ && b_.graphs_on_ && ids_known_ && decode_only_ && b_.cfg_.dim % 32 == 0 && b_.last_graph_ &&
      b_.last_shape_ == shape_ && b_.last_frees_ == g_device_frees && !profiling_) {
    early_ = b_.last_graph_;
    launch_graph(b_.last_graph_->exec);
    ++b_.stats_.early;
  }
  b_.last_graph_ = nullptr;  // until this pass's read() says which graph it ran
}

void CudaPass::spoil_early() {
  if (!early_) return;
  // The host changes what the early graph read after it started: flush() launches it again.
  early_ = nullptr;
  ++b_.stats_.early_wasted;
}

void CudaPass::grow(DeviceBuffer& d, size_t need, size_t size, const char* what) {
  if (d.bytes >= need) return;
  // Growing frees the old buffer, which recorded launches may still use: they run first.
  qsrc_ = {};
  flush();
  spoil_early();
  check(cudaStreamSynchronize(b_.stream_), "workspace");
  d.reserve(size, what);
}

float* CudaPass::buffer(Act role, size_t n) {
  DeviceBuffer& d = b_.bufs_[size_t(role)];
  grow(d, n * sizeof(float), n * sizeof(float) + (n * sizeof(float)) / 4, "activations");
  return static_cast<float*>(d.ptr);
}

void CudaPass::embed(int weight, std::span<const int32_t> ids, float* x) {
  qsrc_ = {};
  emit_pending();
  const Tensor& w = *b_.host_[size_t(weight)].t();  // (never stacked: added as rows)
  const size_t dim = size_t(w.cols());
  if (dim % 32 != 0) {
    // Rows of odd widths (tiny test models) are gathered on the host from the mapped file, uploaded
    // after the launches recorded so far.
    flush();
    const size_t bytes = ids.size() * dim * sizeof(float);
    spoil_early();
    float* rows = reinterpret_cast<float*>(b_.rows_host_.get(bytes));
    for (size_t t = 0; t < ids.size(); ++t) kernels::get_row(w, ids[t], rows + t * dim);
    check(cudaMemcpyAsync(x, rows, bytes, cudaMemcpyHostToDevice, b_.stream_), "embedding upload");
    b_.rows_host_.copied(b_.stream_);
    return;
  }
  // The token ids go up from pinned memory; the rows are dequantized on the GPU from its copy.
  for (int32_t id : ids)
    if (id < 0 || id >= w.rows())
      throw Error("embedding: token " + std::to_string(id) + " is outside tensor '" + w.name + "' " + w.shape_string());
  // The ids went up with the metadata where the slots named them (a model's pass), else now.
  const int32_t* dids = dids_;
  if (!ids_known_ || ids.size() != size_t(n_slots_) || !std::equal(ids.begin(), ids.end(), staged_ids_)) {
    const size_t bytes = ids.size() * sizeof(int32_t);
    b_.ids_.reserve(std::max<size_t>(bytes, 4096), "token ids");
    int32_t* staged = reinterpret_cast<int32_t*>(b_.rows_host_.get(bytes));
    std::copy(ids.begin(), ids.end(), staged);
    check(cudaMemcpyAsync(b_.ids_.ptr, staged, bytes, cudaMemcpyHostToDevice, b_.stream_), "token ids upload");
    b_.rows_host_.copied(b_.stream_);
    dids = static_cast<const int32_t*>(b_.ids_.ptr);
  }
  const DeviceWeight& dw = b_.weights_[size_t(weight)];
  const int n = int(ids.size());
  cudaStream_t st = b_.stream_;
  record({12, uint64_t(weight), uint64_t(n), uint64_t(uintptr_t(dids)), uint64_t(uintptr_t(x))},
         [=, &dw] { embed_rows(dw, dids, n, x, st); });
}

void CudaPass::rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) {
  const float* wv = b_.dvectors_[size_t(w)];
  qsrc_ = {};
  if (b_.fuse_on_) {
    if (pend_.kind == Pend::Add && pend_.x == x && pend_.n == size_t(rows) * size_t(dim) &&
        norm_fusable(x, pend_.a, wv, y, dim)) {
      pend_.kind = Pend::AddNorm;
      pend_.w = wv;
      pend_.y = y;
      pend_.rows = rows;
      pend_.dim = dim;
      pend_.eps = eps;
      return;
    }
    // The next rows of the same norm (a batch's logits rows, one launch for all).
    if (pend_.kind == Pend::Norm && pend_.w == wv && pend_.dim == dim && pend_.eps == eps &&
        x == pend_.x + size_t(pend_.rows) * dim && y == pend_.y + size_t(pend_.rows) * dim) {
      pend_.rows += rows;
      return;
    }
    emit_pending();
    if (norm_fusable(x, x, wv, y, dim)) {
      pend_ = Pending{Pend::Norm, const_cast<float*>(x), nullptr, wv, y, rows, dim, eps, 0};
      return;
    }
  }
  emit_pending();
  cudaStream_t st = b_.stream_;
  uint32_t eb;
  std::memcpy(&eb, &eps, sizeof eb);
  record({1, uint64_t(uintptr_t(x)), uint64_t(uintptr_t(wv)), uint64_t(uintptr_t(y)), uint64_t(rows), uint64_t(dim), eb},
         [=] { cuda::rmsnorm(x, wv, y, rows, dim, eps, st); });
}

void CudaPass::matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy, bool exact) {
  const DeviceWeight& w = b_.weights_[size_t(weight)];
  if (exact || n_tok <= b_.gemv_max(w) || w.cols % 32 != 0) {
    if (w.cols % 32 != 0 && !is_float_type(w.type))
      throw Error("CUDA matmul: " + std::string(type_name(w.type)) + " rows of " + std::to_string(w.cols) +
                  " elements (not whole blocks)");
    cudaStream_t st = b_.stream_;
    DeviceBuffer* staging = &b_.staging_;
    void* xq = nullptr;
    bool ready = false;
    NormIn nin;
    if (!exact && b_.int8_on_ && takes_int8_x(w)) {
      const size_t need = quantized_x_bytes(n_tok, w.cols);
      grow(b_.xq_ws_, need, std::max(need, quantized_x_bytes(kGemvMaxTokensDefault, 8192)),
           "the int8 activation workspace");
      xq = b_.xq_ws_.ptr;
      // One token: the workspaces of a fused norm, grown before anything is decided (a grow runs
      // what was recorded, which ends the slots).
      const bool norm_epi = n_tok == 1 && b_.fuse_on_ && (b_.norm_epi_on_ || b_.silu_epi_on_);
      if (norm_epi) {
        const size_t need2 = quantized_x_bytes(1, std::max(w.cols, w.rows));
        grow(b_.xq2_ws_, need2, std::max(need2, quantized_x_bytes(1, 16384)), "the fused norm's int8 workspace");
        const size_t ss = size_t(std::max(w.cols, w.rows) / 32) * sizeof(float);
        grow(b_.ss_ws_, ss, std::max(ss, size_t(16384 / 32) * sizeof(float)), "the fused norm's sums");
      }
      const Pending& p = pend_;
      const EpiSlot es = epi_slot_;
      const bool slot = norm_epi && es.args && es.op + 1 == ops_.size();
      // The workspace that the store of the GEMV just recorded writes: the one it does not read.
      int8_t* q2 = static_cast<int8_t*>(es.in == b_.xq2_ws_.ptr ? b_.xq_ws_.ptr : b_.xq2_ws_.ptr);
      if (slot && es.add_norm && p.kind == Pend::AddNorm && p.y == x && ldx == p.dim && p.rows == 1 &&
          w.cols == p.dim && es.y == p.a && es.rows == p.dim && norm_fits(w, false)) {
        // The add + rmsnorm go into the store of the GEMV just recorded (NormEpi); this one applies
        // the norm's factor.
        NormEpi& e = *es.args;
        e = NormEpi{p.x, p.w, q2, reinterpret_cast<float2*>(q2 + quantized_x_scales_offset(1, p.dim)),
                    static_cast<float*>(b_.ss_ws_.ptr)};
        nin = NormIn{e.ss, p.dim / 32, p.dim, p.eps};
        uint32_t eb;
        std::memcpy(&eb, &p.eps, sizeof eb);
        record({14, uint64_t(uintptr_t(p.x)), uint64_t(uintptr_t(p.w)), uint64_t(uintptr_t(q2)), eb}, [] {});
        pend_ = Pending{};
        xq = q2;
        ready = true;
      } else if (slot && es.silu && p.kind == Pend::Silu && p.x == x && ldx == 2 * int64_t(p.dim) && p.rows == 1 &&
                 w.cols == p.dim && p.ks == 0 && es.y == x && es.rows == 2 * p.dim) {
        // The silu_mul + int8 rounding go into the store of the gate + up GEMV just recorded.
        NormEpi& e = *es.args;
        e = NormEpi{};
        e.q = q2;
        e.ds = reinterpret_cast<float2*>(q2 + quantized_x_scales_offset(1, p.dim));
        e.ff = p.dim;
        e.prefetch = b_.silu_prefetch_on_;
        record({15, uint64_t(uintptr_t(x)), uint64_t(uintptr_t(q2)), uint64_t(p.dim)}, [] {});
        pend_ = Pending{};
        xq = q2;
        ready = true;
      } else if (p.kind == Pend::None && qsrc_.xq && (qsrc_.xq == xq || qsrc_.xq == b_.xq2_ws_.ptr) && qsrc_.x == x &&
                 qsrc_.ldx == ldx && qsrc_.n_tok == n_tok && qsrc_.cols == w.cols) {
        xq = qsrc_.xq;  // the same activations, quantized for the matmul before
        nin = qsrc_.nin;
        ready = true;
      } else if (((p.kind == Pend::Norm || p.kind == Pend::AddNorm) && p.y == x && ldx == p.dim &&
                  n_tok == p.rows && w.cols == p.dim) ||
                 (p.kind == Pend::Silu && p.x == x && ldx == 2 * int64_t(p.dim) && n_tok == p.rows &&
                  w.cols == p.dim) ||
                 (p.kind == Pend::Attn && p.y == x && ldx == int64_t(b_.cfg_.n_heads) * b_.cfg_.head_dim &&
                  n_tok == n_slots_ && w.cols == b_.cfg_.n_heads * b_.cfg_.head_dim)) {
        emit_pending(xq);
        ready = true;
      } else {
        emit_pending();
      }
    } else {
      emit_pending();
    }
    RopeArgs* rope = xq && n_tok == 1 && b_.fuse_on_ && b_.rope_fuse_on_ ? &b_.pass_rope_.emplace_back() : nullptr;
    // A GEMV that may take the add + rmsnorm (not with a fused norm's factor) or the silu_mul after
    // it into its store.
    EpiSlot es;
    if (xq && ready && n_tok == 1 && b_.fuse_on_ && ldy == w.rows && norm_fits(w, true)) {
      es.add_norm = b_.norm_epi_on_ && !nin.ss;
      es.silu = b_.silu_epi_on_ && w.rows % 64 == 0;
    }
    NormEpi* epi = es.add_norm || es.silu ? &b_.pass_epi_.emplace_back() : nullptr;
    record({2, uint64_t(weight), uint64_t(uintptr_t(x)), uint64_t(ldx), uint64_t(n_tok), uint64_t(uintptr_t(y)),
            uint64_t(ldy), uint64_t(uintptr_t(xq)), uint64_t(ready)},
           [=, &w] { gemv(w, x, ldx, n_tok, y, ldy, st, staging, xq, ready, rope, epi, nin.ss ? &nin : nullptr); });
    rope_slot_ = rope ? RopeSlot{ops_.size() - 1, y, w.rows, rope} : RopeSlot{};
    if (epi) {
      es.op = ops_.size() - 1;
      es.y = y;
      es.rows = w.rows;
      es.args = epi;
      es.in = xq;
    }
    epi_slot_ = epi ? es : EpiSlot{};
    // What the workspace holds now, unless this matmul's output overwrote its source.
    const float* y_end = y + (n_tok - 1) * ldy + w.rows;
    if (xq) qsrc_ = {x, ldx, n_tok, w.cols, xq, nin};
    if (qsrc_.x && y < qsrc_.x + (qsrc_.n_tok - 1) * qsrc_.ldx + qsrc_.cols && qsrc_.x < y_end) qsrc_ = {};
    return;
  }
  // Batches on packed Q4_0 of up to kGemmToks tokens, or up to kGemmMaxTokens where the weight has
  // no fp16 copy (the GPU lacks the room): the fp16 tensor-core GEMM that dequantizes in registers
  // (gemm_q4_wgmma_kernel on Hopper, else gemm_q4_f16_kernel; each reads the weights once a 64
  // tokens) instead of cuBLAS on the copy.
  if (!exact && b_.q4_gemm_ != 0 && w.type == GgmlType::Q4_0 && w.scales && n_tok > b_.gemv_max(w) &&
      n_tok <= kGemmMaxTokens && (b_.q4_gemm_ == 2 || n_tok <= kGemmToks || !b_.cached_f16(weight))) {
    qsrc_ = {};
    const bool f16 = emit_pending_f16(x, ldx, n_tok, w.cols);
    const size_t act = size_t(n_tok) * size_t(w.cols) * sizeof(__half);
    const size_t want = std::min(size_t(16) * size_t(n_tok) * size_t(w.rows) * sizeof(float), kGemmPartMax);
    grow(b_.act_ws_, act, act + act / 4, "the fp16 activation workspace");
    if (!wgmma_on()) grow(b_.gemm_ws_, want, want, "the GEMM partial sums");  // the wgmma kernel leaves none
    __half* xh = static_cast<__half*>(b_.act_ws_.ptr);
    float* part = static_cast<float*>(b_.gemm_ws_.ptr);
    const size_t part_bytes = b_.gemm_ws_.bytes;
    cudaStream_t st = b_.stream_;
    // The partial sums are added by an op of their own, which a silu_mul may take over.
    const int ks = q4_gemm_splits(w, n_tok, part_bytes);
    const bool apart = q4_gemm_partials(ks) && b_.fuse_on_ && b_.parts_fuse_on_;
    record({11, uint64_t(weight), uint64_t(uintptr_t(x)), uint64_t(ldx), uint64_t(n_tok), uint64_t(uintptr_t(y)),
            uint64_t(ldy), uint64_t(uintptr_t(xh)), uint64_t(uintptr_t(part)), uint64_t(part_bytes), uint64_t(f16),
            uint64_t(apart)},
           [=, &w] {
             if (!f16) to_f16(x, ldx, w.cols, n_tok, xh, st);
             launch_q4_gemm(w, xh, n_tok, y, ldy, part, part_bytes, st, !apart);
           });
    if (apart) {
      const size_t sig_at = sig_.size();
      const int rows = w.rows;
      record({13, uint64_t(uintptr_t(part)), uint64_t(ks), uint64_t(n_tok), uint64_t(rows), uint64_t(uintptr_t(y)),
              uint64_t(ldy)},
             [=] { sum_parts(part, ks, n_tok, rows, y, ldy, st); });
      parts_slot_ = {ops_.size() - 1, sig_at, y, ldy, part, ks, n_tok, rows};
    }
    return;
  }
  // Prefill and wide batches: the weight in fp16 (its cached copy, else dequantized into a workspace
  // sized for the largest matrix), the activations to fp16, then one cuBLAS GEMM with float32
  // accumulation; recorded like the other ops, so that a pass that recurs (a batched decode step)
  // replays as one graph, cuBLAS's kernels included (PENSIEVE_CUDA_BLAS_GRAPHS=0: such passes run
  // as plain launches).
  qsrc_ = {};
  const bool f16 = emit_pending_f16(x, ldx, n_tok, w.cols);
  // A prefill's GEMMs keep the GPU busy far longer than their launches take: no graph.
  if (!b_.blas_graphs_on_ || n_tok > kBlasGraphMaxTokens) graphable_ = false;
  const size_t ws = b_.max_weight_elems_ * sizeof(__half);
  const __half* cached = b_.cached_f16(weight);  // on first use: dequantized now, into a new buffer
  const size_t act = size_t(n_tok) * size_t(w.cols) * sizeof(__half);
  if (!cached) grow(b_.f16_ws_, ws, ws, "the fp16 weight workspace");
  grow(b_.act_ws_, act, act + act / 4, "the fp16 activation workspace");
  __half* xh = static_cast<__half*>(b_.act_ws_.ptr);
  __half* wtmp = cached ? nullptr : static_cast<__half*>(b_.f16_ws_.ptr);
  cudaStream_t st = b_.stream_;
  cublasHandle_t blas = b_.blas_;
  record({10, uint64_t(weight), uint64_t(uintptr_t(x)), uint64_t(ldx), uint64_t(n_tok), uint64_t(uintptr_t(y)),
          uint64_t(ldy), uint64_t(uintptr_t(cached)), uint64_t(uintptr_t(wtmp)), uint64_t(uintptr_t(xh)), uint64_t(f16)},
         [=, &w] {
           const __half* wh = cached;
           if (!wh) {
             dequantize_f16(w, wtmp, st);
             wh = wtmp;
           }
           if (!f16) to_f16(x, ldx, w.cols, n_tok, xh, st);
           const float alpha = 1.0f, beta = 0.0f;
           check_blas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, w.rows, n_tok, w.cols, &alpha, wh, CUDA_R_16F,
                                   w.cols, xh, CUDA_R_16F, w.cols, &beta, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
         });
}

void CudaPass::add_bias(float* y, int64_t ldy, int rows, int b) {
  qsrc_ = {};
  const float* bv = b_.dvectors_[size_t(b)];
  const int n = int(b_.vectors_[size_t(b)].size());
  // A bias on the output of the one-token qkv GEMV just recorded waits for rope_and_store_kv, which
  // may hand it to that GEMV's store; any other op records it first (emit_pending).
  const RopeSlot& rs = rope_slot_;
  if (rows == 1 && b_.fuse_on_ && b_.bias_fuse_on_ && pend_.kind == Pend::None && n_bias_ < 3 && rs.args &&
      rs.op + 1 == ops_.size() && y >= rs.y && y + n <= rs.y + rs.rows) {
    bias_pend_[n_bias_++] = {y, bv, n};
    return;
  }
  emit_pending();
  record_bias(y, ldy, rows, bv, n);
}
void CudaPass::record_bias(float* y, int64_t ldy, int rows, const float* bv, int n) {
  cudaStream_t st = b_.stream_;
  record({3, uint64_t(uintptr_t(y)), uint64_t(ldy), uint64_t(rows), uint64_t(uintptr_t(bv)), uint64_t(n)},
         [=] { cuda::add_bias(y, ldy, rows, bv, n, st); });
}

void CudaPass::rope_and_store_kv(int layer, float* qkv) {
  qsrc_ = {};
  const int n = n_slots_;
  const ModelConfig* cfg = &b_.cfg_;
  const RopeSlot rs = rope_slot_;
  rope_slot_ = RopeSlot{};
  const int qkv_rows = (cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
  // A Q8 cache's rows are rounded per head, which the GEMV's warps of one row each cannot: there the
  // decode attention kernel stores them (attention_split_kernel; not attention_kernel).
  const bool q8 = b_.pass_meta_[0].q8;
  plan_.q8_store = false;
  // The biases waiting since that GEMV, as its q, k and v parts (all of a part, or none fused).
  const int q_dim = cfg->n_heads * cfg->head_dim, kv_dim = cfg->n_kv_heads * cfg->head_dim;
  const float* bias[3] = {nullptr, nullptr, nullptr};
  bool biases_fit = true;
  for (int i = 0; i < n_bias_; ++i) {
    const BiasSlot& bs = bias_pend_[i];
    const int64_t at = bs.y - qkv;
    const int part = at == 0 && bs.n == q_dim                 ? 0
                     : at == q_dim && bs.n == kv_dim          ? 1
                     : at == q_dim + kv_dim && bs.n == kv_dim ? 2
                                                              : -1;
    if (part < 0 || bias[part]) biases_fit = false;
    else bias[part] = bs.b;
  }
  const bool fuse = n == 1 && rs.args && rs.op + 1 == ops_.size() && rs.y == qkv && rs.rows == qkv_rows &&
                    (!q8 || plan_.tiles) && biases_fit && pend_.kind == Pend::None;
  if (fuse) n_bias_ = 0;  // taken by the store
  emit_pending();         // (records the biases otherwise)
  if (fuse) {
    plan_.q8_store = q8;
    // Done by the qkv GEMV just recorded (RopeArgs), which reads these when it runs.
    RopeArgs& a = *rs.args;
    a.on = true;
    a.slot = dmeta_;
    a.layer = layer;
    a.n_heads = cfg->n_heads;
    a.n_kv_heads = cfg->n_kv_heads;
    a.head_dim = cfg->head_dim;
    a.n_rot = cfg->rope.n_rot;
    a.style_half = int(cfg->rope.style == RopeStyle::RotateHalf);
    a.inv_short = plan_.inv_short;
    a.inv_long = plan_.inv_long;
    a.mscale = plan_.mscale;
    std::copy_n(bias, 3, a.bias);
    record({11, uint64_t(uintptr_t(qkv)), uint64_t(uintptr_t(dmeta_)), uint64_t(layer),
            uint64_t(uintptr_t(a.inv_short)), uint64_t(uintptr_t(bias[0])), uint64_t(uintptr_t(bias[1])),
            uint64_t(uintptr_t(bias[2]))},
           [] {});
    return;
  }
  // A decode step of 2-16 lone tokens, each its sequence's only one, on fp16 / Q8 caches: the
  // attention kernel rotates and stores the tokens' rows (AttnPlan::rope) where it comes next; else
  // the RoPE kernel. (At 24 and 64 streams the work in the attention's blocks cost more than the
  // kernel.)
  if (b_.fuse_on_ && b_.rope_attn_on_ && n >= 2 && n <= kRopeAttnMax && lone_unique_ && plan_.tiles &&
      plan_.n_tiles == 0 && plan_.n_lone == n && (plan_.kv & 2) == 0 && cfg->rope.n_rot <= cfg->head_dim &&
      cfg->head_dim <= 128) {
    pend_ = Pending{Pend::Rope, qkv, nullptr, nullptr, nullptr, 0, layer, 0.0f, 0};
    return;
  }
  record_rope(layer, qkv);
}

void CudaPass::record_rope(int layer, float* qkv) {
  const float *inv = plan_.inv_short, *inv_long = plan_.inv_long;
  const SlotMeta* meta = dmeta_;
  const int n = n_slots_;
  const ModelConfig* cfg = &b_.cfg_;
  const float mscale = plan_.mscale;
  cudaStream_t st = b_.stream_;
  record({4, uint64_t(uintptr_t(qkv)), uint64_t(uintptr_t(meta)), uint64_t(n), uint64_t(layer), uint64_t(uintptr_t(inv))},
         [=] { rope_store(qkv, meta, n, layer, *cfg, inv, inv_long, mscale, st); });
}

void CudaPass::attention(int layer, const float* qkv, float* out) {
  qsrc_ = {};
  // The RoPE and KV store deferred by rope_and_store_kv, done by this attention's kernel.
  plan_.rope = pend_.kind == Pend::Rope && pend_.x == qkv && pend_.dim == layer;
  if (plan_.rope) pend_ = Pending{};
  emit_pending();
  if (b_.fuse_on_ && b_.cfg_.head_dim % 32 == 0) {
    pend_ = Pending{Pend::Attn, out, qkv, nullptr, out, 0, layer, 0.0f, 0};
    return;
  }
  record_attention(layer, qkv, out, nullptr);
}

void CudaPass::record_attention(int layer, const float* qkv, float* out, void* xq, __half* xh) {
  if (b_.cfg_.head_dim > kMaxHeadDim)
    throw Error("CUDA attention: head_dim " + std::to_string(b_.cfg_.head_dim) + " > " + std::to_string(kMaxHeadDim));
  const SlotMeta* meta = dmeta_;
  const int32_t* tables = dtables_;
  const int n = n_slots_;
  const ModelConfig* cfg = &b_.cfg_;
  cudaStream_t st = b_.stream_;
  const AttnPlan plan = plan_;
  record({5, uint64_t(uintptr_t(qkv)), uint64_t(uintptr_t(meta)), uint64_t(uintptr_t(tables)), uint64_t(n),
          uint64_t(layer), uint64_t(uintptr_t(out)), uint64_t(uintptr_t(xq)), uint64_t(uintptr_t(plan.tiles)),
          uint64_t(plan.n_tiles), uint64_t(plan.mma), uint64_t(plan.kv), uint64_t(uintptr_t(plan.lone)), uint64_t(plan.n_lone),
          uint64_t(uintptr_t(xh)), uint64_t(plan.q8_store), uint64_t(plan.split), uint64_t(plan.split_chunks),
          uint64_t(uintptr_t(plan.split_parts)), uint64_t(plan.rope)},
         [=] { cuda::attention(qkv, meta, tables, n, layer, *cfg, out, st, xq, plan, xh); });
}

void CudaPass::add(float* x, const float* y, size_t n) {
  qsrc_ = {};
  emit_pending();
  if (b_.fuse_on_) {
    pend_ = Pending{Pend::Add, x, y, nullptr, nullptr, 0, 0, 0.0f, n};
    return;
  }
  cudaStream_t st = b_.stream_;
  record({6, uint64_t(uintptr_t(x)), uint64_t(uintptr_t(y)), uint64_t(n)}, [=] { cuda::add(x, y, n, st); });
}
void CudaPass::silu_mul(float* g, int rows, int ff) {
  qsrc_ = {};
  emit_pending();
  if (b_.fuse_on_ && ff % 32 == 0) {
    pend_ = Pending{Pend::Silu, g, nullptr, nullptr, nullptr, rows, ff, 0.0f, 0};
    const PartsSlot ps = parts_slot_;
    if (ps.op + 1 == ops_.size() && ps.y == g && ps.ldy == 2 * int64_t(ff) && ps.nt == rows && ps.rows == 2 * ff) {
      ops_.pop_back();  // the parts are added here instead
      sig_.resize(ps.sig_at);
      pend_.part = ps.part;
      pend_.ks = ps.ks;
    }
    parts_slot_ = PartsSlot{};
    return;
  }
  cudaStream_t st = b_.stream_;
  record({7, uint64_t(uintptr_t(g)), uint64_t(rows), uint64_t(ff)}, [=] { cuda::silu_mul(g, rows, ff, st); });
}

bool CudaPass::emit_pending_f16(const float* x, int64_t ldx, int n_tok, int cols) {
  const Pending& p = pend_;
  const bool fits = b_.act_ws_.bytes >= size_t(n_tok) * size_t(cols) * sizeof(__half);
  const bool norm = (p.kind == Pend::Norm || p.kind == Pend::AddNorm) && p.y == x && ldx == p.dim &&
                    n_tok == p.rows && cols == p.dim;
  const bool silu = p.kind == Pend::Silu && p.x == x && ldx == 2 * int64_t(p.dim) && n_tok == p.rows && cols == p.dim;
  // Attention: where every token goes through the split kernel (a decode step).
  const int q_dim = b_.cfg_.n_heads * b_.cfg_.head_dim;
  const bool attn = p.kind == Pend::Attn && p.y == x && ldx == q_dim && n_tok == n_slots_ && cols == q_dim &&
                    plan_.tiles && plan_.n_tiles == 0 && plan_.n_lone == n_slots_;
  const bool take = fits && b_.fuse_on_ && (norm || silu || attn);
  emit_pending(nullptr, take ? static_cast<__half*>(b_.act_ws_.ptr) : nullptr);
  return take;
}

void CudaPass::emit_pending(void* xq, __half* xh) {
  for (int i = 0; i < n_bias_; ++i) record_bias(bias_pend_[i].y, 0, 1, bias_pend_[i].b, bias_pend_[i].n);
  n_bias_ = 0;
  const Pending p = pend_;
  pend_ = Pending{};
  cudaStream_t st = b_.stream_;
  const int skip = b_.debug_skip_;
  if (((skip & 1) && (p.kind == Pend::Norm || p.kind == Pend::AddNorm)) || ((skip & 2) && p.kind == Pend::Attn) ||
      ((skip & 4) && p.kind == Pend::Silu))
    return;
  switch (p.kind) {
    case Pend::None: return;
    case Pend::Add:
      record({6, uint64_t(uintptr_t(p.x)), uint64_t(uintptr_t(p.a)), uint64_t(p.n)},
             [=] { cuda::add(p.x, p.a, p.n, st); });
      return;
    case Pend::Norm:
    case Pend::AddNorm: {
      uint32_t eb;
      std::memcpy(&eb, &p.eps, sizeof eb);
      const float* a = p.kind == Pend::AddNorm ? p.a : nullptr;
      record({8, uint64_t(uintptr_t(p.x)), uint64_t(uintptr_t(a)), uint64_t(uintptr_t(p.w)), uint64_t(uintptr_t(p.y)),
              uint64_t(p.rows), uint64_t(p.dim), eb, uint64_t(uintptr_t(xq)), uint64_t(uintptr_t(xh))},
             [=] { norm_fused(p.x, a, p.w, p.y, p.rows, p.dim, p.eps, xq, st, xh); });
      return;
    }
    case Pend::Rope:
      record_rope(p.dim, p.x);
      return;
    case Pend::Attn:
      if (skip & 8) record({16}, [=] { launch_pdl(debug_empty_kernel, dim3(1), dim3(32), 0, st); });
      record_attention(p.dim, p.a, p.y, xq, xh);
      return;
    case Pend::Silu:
      if (xq || xh || p.ks) {
        record({9, uint64_t(uintptr_t(p.x)), uint64_t(p.rows), uint64_t(p.dim), uint64_t(uintptr_t(xq)),
                uint64_t(uintptr_t(xh)), uint64_t(uintptr_t(p.part)), uint64_t(p.ks)},
               [=] { silu_quant(p.x, p.rows, p.dim, xq, st, xh, p.part, p.ks); });
      } else {
        record({7, uint64_t(uintptr_t(p.x)), uint64_t(p.rows), uint64_t(p.dim)},
               [=] { cuda::silu_mul(p.x, p.rows, p.dim, st); });
      }
      return;
  }
}

void CudaPass::flush() {
  emit_pending();
  rope_slot_ = RopeSlot{};  // a GEMV launched from here on takes no RoPE any more
  epi_slot_ = EpiSlot{};
  parts_slot_ = PartsSlot{};
  if (ops_.empty()) return;
  ++flushes_;
  ran_ = nullptr;
  // The graph launched early (the pass's set-up): these ops must be its, else the pass runs again.
  const void* early = early_;
  early_ = nullptr;
  auto wasted = [&] {
    if (early) ++b_.stats_.early_wasted;
    early = nullptr;
  };
  // Run from the second pair, emptied at every way out (capacity kept); recording goes on in ops_.
  std::vector<InlineOp>& ops = b_.pass_ops_[1];
  std::vector<uint64_t>& sig = b_.pass_sig_[1];
  ops.swap(ops_);
  sig.swap(sig_);
  struct Done {
    std::vector<InlineOp>& ops;
    std::vector<uint64_t>& sig;
    CudaPass& pass;
    ~Done() {
      ops.clear();
      sig.clear();
      // The pass's first flush ran or launched its metadata upload: the staging's next user waits for it.
      if (pass.flushes_ == 1) pass.b_.meta_host_.copied(pass.b_.stream_);
    }
  } done{ops, sig, *this};
  auto run_all = [&] {
    for (auto& f : ops) f();
  };
  if (!b_.graphs_on_ || !graphable_) {
    wasted();
    run_all();
    return;
  }
  if (b_.timing_.on) t_flush_ = std::chrono::steady_clock::now();
  // FNV-1a over the words, four interleaved lanes (shorter dependency chains), then combined.
  uint64_t lane[4] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full};
  for (size_t i = 0; i < sig.size(); ++i) lane[i % 4] = (lane[i % 4] ^ sig[i]) * 0x100000001b3ull;
  const uint64_t hash = ((lane[0] * 31 + lane[1]) * 31 + lane[2]) * 31 + lane[3];
  auto it = b_.graphs_.end();
  for (auto [lo, hi] = b_.graphs_.equal_range(hash); lo != hi; ++lo)
    if (lo->second.sig == sig) it = lo;
  if (it == b_.graphs_.end()) {
    wasted();
    // First sight: plain launches (they also size every workspace); capture on the second.
    if (b_.graphs_.size() >= 32) {
      for (auto& [k, g] : b_.graphs_)
        if (g.exec) cudaGraphExecDestroy(g.exec);
      b_.graphs_.clear();
      b_.last_graph_ = nullptr;
    }
    b_.graphs_.emplace(hash, CudaBackend::GraphEntry{std::move(sig)});
    run_all();
    return;
  }
  CudaBackend::GraphEntry& g = it->second;
  if (early != &g) wasted();
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
    if (early != &g) launch_graph(g.exec);  // (else it runs already)
    ran_ = &g;
    ++b_.stats_.graph_passes;
  } else {
    run_all();
  }
}

void CudaPass::launch_graph(cudaGraphExec_t exec) {
  CudaBackend::StepTiming& tm = b_.timing_;
  const bool timed = tm.on;
  if (timed) {
    if (!tm.e0)
      for (cudaEvent_t* e : {&tm.e0, &tm.e1, &tm.e2}) check(cudaEventCreate(e), "timing event");
    t_launch_ = std::chrono::steady_clock::now();
    check(cudaEventRecord(tm.e0, b_.stream_), "timing event");
  }
  check(cudaGraphLaunch(exec, b_.stream_), "graph launch");
  if (timed) {
    t_launched_ = std::chrono::steady_clock::now();
    check(cudaEventRecord(tm.e1, b_.stream_), "timing event");
    timed_ = true;
  }
}

CudaPass::~CudaPass() {
  try {
    flush();
  } catch (...) {
  }
  if (profiling_) {
    cudaStreamSynchronize(b_.stream_);
    cudaProfilerStop();
  }
}

void CudaPass::read(const float* src, float* host, size_t n) {
  // Up to kCopyOutMax bytes into host memory from alloc_host: written by a kernel of the pass (a
  // decode step's logits: no copy after its graph).
  void* dhost = n * sizeof(float) <= kCopyOutMax && n % 4 == 0 && uintptr_t(src) % 16 == 0 && b_.copy_out_on_
                    ? b_.mapped(host, n * sizeof(float))
                    : nullptr;
  if (uintptr_t(dhost) % 16 != 0) dhost = nullptr;
  if (dhost) {
    cudaStream_t st = b_.stream_;
    const int words = int(n / 4);
    record({18, uint64_t(uintptr_t(src)), uint64_t(uintptr_t(dhost)), uint64_t(n)}, [=] {
      launch_pdl(copy_out_kernel, dim3(unsigned(std::min(64, (words + 255) / 256))), dim3(256), 0, st,
                 reinterpret_cast<const uint4*>(src), static_cast<uint4*>(dhost), words);
    });
  }
  flush();
  // A pass that ran as one graph: the next pass of its shape may launch it early.
  b_.last_graph_ = flushes_ == 1 ? static_cast<const CudaBackend::GraphEntry*>(ran_) : nullptr;
  b_.last_shape_ = shape_;
  b_.last_frees_ = g_device_frees;
  if (!dhost) check(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, b_.stream_), "logits copy");
  if (timed_) check(cudaEventRecord(b_.timing_.e2, b_.stream_), "timing event");
  check(cudaStreamSynchronize(b_.stream_), "forward pass");
  if (!timed_) {
    b_.timing_.last_tokens = -1;
  } else {
    timed_ = false;
    CudaBackend::StepTiming& tm = b_.timing_;
    CudaBackend::StepTiming::Sum& t = tm.by_tokens[n_slots_];
    const auto now = std::chrono::steady_clock::now();
    float gpu = 0.0f, copy = 0.0f;
    check(cudaEventElapsedTime(&gpu, tm.e0, tm.e1), "timing event");
    check(cudaEventElapsedTime(&copy, tm.e1, tm.e2), "timing event");
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    if (tm.last_tokens == n_slots_) {
      t.gap_ms += ms(tm.last_end, t_begin_);
      ++t.n_gaps;
    }
    t.host_ms += ms(t_begin_, t_launch_);
    t.ctor_ms += ms(t_ctor_, t_begin_);
    t.record_ms += ms(t_begin_, t_flush_);
    t.launch_ms += ms(t_launch_, t_launched_);
    t.gpu_ms += gpu;
    t.copy_ms += copy;
    t.pass_ms += ms(t_begin_, now);
    tm.last_end = now;
    tm.last_tokens = n_slots_;
    ++t.n;
  }
}

void CudaPass::write(float* dst, const float* host, size_t n) {
  qsrc_ = {};
  flush();
  spoil_early();
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
