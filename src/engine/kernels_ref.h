// The scalar reference kernels: the definition of the right answer. Plain loops, no intrinsics;
// the AVX2 kernels are tested against these on random data. The forward pass calls the dispatching
// entry points in engine/kernels.h, never these directly.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/ggml_type.h"
#include "engine/quant.h"

namespace pensieve::kernels::ref {

// Weight blocks <-> float32 (throw Error for an unsupported type or a partial block).
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);
size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

// Per-type block codecs (n a multiple of the block size).
void dequantize_q4_0(const block_q4_0* x, float* y, int64_t n);
void dequantize_q4_1(const block_q4_1* x, float* y, int64_t n);
void dequantize_q5_0(const block_q5_0* x, float* y, int64_t n);
void dequantize_q5_1(const block_q5_1* x, float* y, int64_t n);
void dequantize_q8_0(const block_q8_0* x, float* y, int64_t n);
void dequantize_q8_a(const block_q8_a* x, float* y, int64_t n);
void dequantize_q2_K(const block_q2_K* x, float* y, int64_t n);
void dequantize_q3_K(const block_q3_K* x, float* y, int64_t n);
void dequantize_q4_K(const block_q4_K* x, float* y, int64_t n);
void dequantize_q5_K(const block_q5_K* x, float* y, int64_t n);
void dequantize_q6_K(const block_q6_K* x, float* y, int64_t n);
void dequantize_q8_K(const block_q8_K* x, float* y, int64_t n);

void quantize_q4_0(const float* x, block_q4_0* y, int64_t n);
void quantize_q4_1(const float* x, block_q4_1* y, int64_t n);
void quantize_q5_0(const float* x, block_q5_0* y, int64_t n);
void quantize_q5_1(const float* x, block_q5_1* y, int64_t n);
void quantize_q8_0(const float* x, block_q8_0* y, int64_t n);
void quantize_q8_a(const float* x, block_q8_a* y, int64_t n);
void quantize_q2_K(const float* x, block_q2_K* y, int64_t n);
void quantize_q3_K(const float* x, block_q3_K* y, int64_t n);
void quantize_q4_K(const float* x, block_q4_K* y, int64_t n);
void quantize_q5_K(const float* x, block_q5_K* y, int64_t n);
void quantize_q6_K(const float* x, block_q6_K* y, int64_t n);
void quantize_q8_K(const float* x, block_q8_K* y, int64_t n);

}  // namespace pensieve::kernels::ref
