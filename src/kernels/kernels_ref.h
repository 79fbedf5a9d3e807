// The scalar reference kernels: the definition of the right answer. Plain loops, no intrinsics;
// the AVX2 kernels are tested against these on random data. The forward pass calls the dispatching
// entry points in kernels/kernels.h, never these directly.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/ggml_type.h"
#include "kernels/quant.h"

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
void dequantize_q4_a(const block_q4_a* x, float* y, int64_t n);
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
void quantize_q4_a(const float* x, block_q4_a* y, int64_t n);
void quantize_q2_K(const float* x, block_q2_K* y, int64_t n);
void quantize_q3_K(const float* x, block_q3_K* y, int64_t n);
void quantize_q4_K(const float* x, block_q4_K* y, int64_t n);
void quantize_q5_K(const float* x, block_q5_K* y, int64_t n);
void quantize_q6_K(const float* x, block_q6_K* y, int64_t n);
void quantize_q8_K(const float* x, block_q8_K* y, int64_t n);

// Vector operations (see kernels/kernels.h for what each computes).
void rmsnorm(const float* x, const float* weight, float* y, int n, float eps);
float dot(const float* a, const float* b, int n);
float dot_f16(const uint16_t* a, const float* b, int n);
float dot_i8(const int8_t* a, const float* b, int n);
void axpy(float a, const float* x, float* y, int n);
void axpy_f16(float a, const uint16_t* x, float* y, int n);
void axpy_i8(float a, const int8_t* x, float* y, int n);
void softmax(float* x, int n);
void silu_mul(float* gate, const float* up, int n);
void f32_to_f16_row(const float* x, uint16_t* y, int n);

// Activations of one token prepared for a product with a weight row of type `wtype` (see
// ActFormat in kernels/quant.h); `out` holds act_row_bytes(wtype, n) bytes.
void quantize_act(GgmlType wtype, const float* x, int64_t n, void* out);
// The dot product of one weight row with one prepared activation row, in the integer arithmetic
// the SIMD kernels use (exact integer sums per block, then float scales).
float vec_dot(GgmlType wtype, int64_t n, const void* w, const void* act);
// Rows [r0, r1) of y = W x over prepared activations (act rows `act_stride` bytes apart).
void matmul_rows(const MatmulArgs& a, int64_t r0, int64_t r1);

}  // namespace pensieve::kernels::ref
