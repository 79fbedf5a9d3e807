// The AVX2/FMA/F16C kernels. Same contracts as their twins in kernels/kernels_ref.h; only reached
// through the run-time dispatch in kernels.cpp, after cpu_features() said the CPU has them.
#pragma once
#include <cstdint>

#include "kernels/ggml_type.h"
#include "kernels/quant.h"

namespace pensieve::kernels::avx2 {

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

void quantize_act(GgmlType wtype, const float* x, int64_t n, void* out);
void matmul_rows(const MatmulArgs& a, int64_t r0, int64_t r1);

}  // namespace pensieve::kernels::avx2
