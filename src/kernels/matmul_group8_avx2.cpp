// The group-of-8 kernels (matmul_group8.inl) with AVX2 integer dot products: vpmaddubsw into
// 16-bit pair sums, then vpmaddwd by ones into 32-bit lanes.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/matmul_avx2.h"
#include "kernels/simd_avx2.h"

namespace pensieve::kernels::avx2 {

namespace {

struct Dot {
  static constexpr int kRows = 1;
  static __m256i pair(__m256i lo, __m256i xlo, __m256i hi, __m256i xhi) {
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi)),
                             _mm256_set1_epi16(1));
  }
  static __m256i s8(__m256i w, __m256i x) { return dot_s8s8(w, x); }
};

#include "kernels/matmul_group8.inl"

}  // namespace

bool matmul_group8(const MatmulArgs& a, int64_t r0, int64_t r1) { return group8(a, r0, r1); }

}  // namespace pensieve::kernels::avx2
