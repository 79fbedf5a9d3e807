// The numeric kernels of the CPU backend. Each public entry point dispatches at run time to the
// AVX2/FMA implementation (kernels_avx2.cpp) or to the scalar reference (namespace ref), which is
// the definition of the right answer and what the tests compare the SIMD code against.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/ggml_type.h"
#include "kernels/tensor.h"
#include "util/thread_pool.h"

namespace pensieve::kernels {

// y[t * ldy + r] = sum_c W[r, c] * x[t * ldx + c] for t < n_tok and r < W.rows().
// x is float32; for quantized W the activations are quantized to 8 bits per block first (the usual
// trade: int8 dot products, relative error ~1e-3); float W (F32/F16/BF16) is computed in float32.
void matmul(const Tensor& W, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
            ThreadPool& pool);

// matmul with float32 activations for every weight type: quantized rows are dequantized on the fly
// and dotted in float32. Several times slower than matmul for quantized W, and exact up to summation
// order; reference checks and `pensieve logits` use it (SequenceState::exact_activations).
void matmul_exact(const Tensor& W, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                  ThreadPool& pool);

// Row r of W (e.g. a token embedding) as float32.
void get_row(const Tensor& W, int64_t r, float* out);

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);
// Supported targets: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
// Q8_K, Q8_A, Q4_A. Returns bytes written. `n` must be a multiple of the block size.
size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

// Vector operations used by the forward pass.
void rmsnorm(const float* x, const float* weight, float* y, int n, float eps);
float dot(const float* a, const float* b, int n);
float dot_f16(const uint16_t* a, const float* b, int n);  // a in IEEE half
float dot_i8(const int8_t* a, const float* b, int n);    // a: int8 (a Q8 KV cache head row)
void axpy(float a, const float* x, float* y, int n);       // y += a * x
void axpy_f16(float a, const uint16_t* x, float* y, int n);
void axpy_i8(float a, const int8_t* x, float* y, int n);
void softmax(float* x, int n);                             // in place, numerically stable
void silu_mul(float* gate, const float* up, int n);        // gate = silu(gate) * up
void f32_to_f16_row(const float* x, uint16_t* y, int n);

}  // namespace pensieve::kernels
