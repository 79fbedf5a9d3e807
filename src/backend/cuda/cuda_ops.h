// Host-side declarations of the CUDA backend's device buffers and op launchers (cuda_backend.cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "engine/ggml_type.h"
#include "engine/model_config.h"

namespace pensieve::cuda {

// Matmuls of at most this many tokens (and every float32-exact one) run as fused GEMVs by default.
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

// A weight matrix in device memory, in its file layout.
struct DeviceWeight {
  GgmlType type;
  int rows, cols;
  size_t row_bytes;
  const uint8_t* data;
};

// One token of a pass as the device kernels see it: where its KV rows live and its position.
struct SlotMeta {
  void* kv_base;
  int64_t block_bytes, row_bytes;
  int block_size, f32, pos, table, block, off, long_rope, pad;
};

bool has_kernel(GgmlType t);
// y[t * ldy + r] = W[r] . x[t * ldx] in float32; a misaligned x is copied to `staging` first.
void gemv(const DeviceWeight& w, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
          cudaStream_t stream, DeviceBuffer* staging);
// Median device-to-device copy rate of `bytes`, counting bytes read plus bytes written.
double copy_bandwidth(int device, size_t bytes);

}  // namespace pensieve::cuda
