// Host-side declarations of the CUDA backend's device buffers and op launchers (cuda_backend.cu).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_type.h"
#include "formats/model_config.h"

namespace pensieve::cuda {

// The int8 GEMVs' workspace is sized for launches of up to this many tokens (more grow it).
constexpr int kGemvMaxTokensDefault = 16;

void check(cudaError_t e, const char* what);

// Owned device memory; reserve() throws Error naming `what` with the sizes when the GPU is full.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void reserve(size_t n, const char* what);
};

// A weight matrix in device memory: in its file layout, or packed (Q4_0, Q8_0; `scales` set): each
// row's quants contiguous and 16-byte aligned at `data` (Q4_0: 16 bytes a block, byte j holding
// element j in its low nibble and element j + 16 in its high one; Q8_0: the 32 int8 of a block),
// the blocks' fp16 scales at `scales`, row after row.
struct DeviceWeight {
  GgmlType type;
  int rows, cols;
  size_t row_bytes;
  const uint8_t* data;
  const uint8_t* scales = nullptr;
  // Q6_K, Q4_K, Q5_K (cols % 256 == 0): a second, repacked copy for the int8 GEMV (Q6Pack, KPack in
  // cuda_backend.cu), beside the file-layout one that the float32 and fp16 paths read.
  const uint8_t* repack = nullptr;
};

// Bytes of the int8 activation workspace gemv() needs for n_tok tokens of `cols` values.
size_t quantized_x_bytes(int n_tok, int cols);
// Whether gemv() with an int8 workspace quantizes the activations for this weight.
bool takes_int8_x(const DeviceWeight& w);

// One token of a pass as the device kernels see it: where its KV rows live and its position.
struct SlotMeta {
  void* kv_base;
  int64_t block_bytes, row_bytes;
  int block_size, f32, pos, table, block, off, long_rope, q8;  // f32 / q8: the cache's KvType
};

bool has_kernel(GgmlType t);
// y[t * ldy + r] = W[r] . x[t * ldx] in float32; a misaligned x is copied to `staging` first. With
// `xq` (quantized_x_bytes() of device memory) and a packed weight, x is first rounded to int8 per
// 32-value block (scale max|x| / 127) and the dot products run on int8 (dp4a), as the CPU's
// serving path does.
// With `rope` on (one token, the qkv matmul): RoPE and the KV store of rope_and_store_kv too, in
// the GEMV's store where its kernel allows (else as their own kernel after it).
// With epi or nin (one token, int8, a weight norm_fits takes): the add + rmsnorm after it done in
// its store, or its sums times that norm's factor (NormEpi, NormIn in cuda_gemv.cuh).
struct RopeArgs;
struct NormEpi;
struct NormIn;
void gemv(const DeviceWeight& w, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
          cudaStream_t stream, DeviceBuffer* staging, void* xq = nullptr, bool xq_ready = false,
          const RopeArgs* rope = nullptr, const NormEpi* epi = nullptr, const NormIn* nin = nullptr);
// Where the per-block scales start in an int8 activation workspace.
size_t quantized_x_scales_offset(int n_tok, int cols);
// Fused ops (bit-identical to the separate ones), each also filling an int8 activation workspace
// for the next GEMV when xq is set: [x += a;] y = rmsnorm(x) * w, and g = silu(g) * u.
bool norm_fusable(const float* x, const float* a, const float* w, const float* y, int dim);
// With xh (fp16, rows x dim or rows x ff), they also write their output there in fp16 (for a
// tensor-core GEMM; xq null).
void norm_fused(float* x, const float* a, const float* w, float* y, int rows, int dim, float eps, void* xq,
                cudaStream_t st, __half* xh = nullptr);
// silu_quant with ks > 0: g and u are the sums of a Q4_0 GEMM's ks partial sums at `part`.
void silu_quant(float* g, int rows, int ff, void* xq, cudaStream_t st, __half* xh = nullptr,
                const float* part = nullptr, int ks = 0);
// Median device-to-device copy rate of `bytes`, counting bytes read plus bytes written.
double copy_bandwidth(int device, size_t bytes);

}  // namespace pensieve::cuda
