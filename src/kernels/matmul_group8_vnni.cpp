// The group-of-8 kernels (matmul_group8.inl) with AVX-512 VNNI integer dot products on 256-bit
// vectors: vpdpbusd multiplies unsigned by signed bytes and adds each group of four into a 32-bit
// lane in one instruction, where AVX2 needs vpmaddubsw, vpaddw and vpmaddwd. Built with
// AVX-512 VL/BW/VNNI enabled (this file only) and reached only when cpu_features() has them.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"

namespace pensieve::kernels::vnni {

namespace {

using namespace avx2;

struct Dot {
  static constexpr int kRows = 2;
  static __m256i pair(__m256i lo, __m256i xlo, __m256i hi, __m256i xhi) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, xlo), hi, xhi);
  }
  static __m256i s8(__m256i w, __m256i x) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  }
};

#include "kernels/matmul_group8.inl"

}  // namespace

bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1) { return group8(a, r0, r1); }

}  // namespace pensieve::kernels::vnni
