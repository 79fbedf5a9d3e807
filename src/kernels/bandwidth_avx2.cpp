#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace pensieve::avx2 {

uint64_t read_sum(const uint8_t* p, size_t bytes) {
  const size_t q = bytes / 4 / 64 * 64;  // four streams of q bytes, then the rest
  const uint8_t* s[4] = {p, p + q, p + 2 * q, p + 3 * q};
  __m256i a0 = _mm256_setzero_si256(), a1 = a0;
  for (size_t i = 0; i < q; i += 64) {
    for (int k = 0; k < 4; ++k) {
      const auto* v = reinterpret_cast<const __m256i*>(s[k] + i);
      a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(v));
      a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(v + 1));
    }
  }
  const __m256i t = _mm256_add_epi64(a0, a1);
  // Wrapping sums: add as unsigned (the lanes are signed 64-bit to the intrinsics).
  uint64_t sum = uint64_t(_mm256_extract_epi64(t, 0)) + uint64_t(_mm256_extract_epi64(t, 1)) +
                 uint64_t(_mm256_extract_epi64(t, 2)) + uint64_t(_mm256_extract_epi64(t, 3));
  for (size_t i = 4 * q; i < bytes; ++i) sum += p[i];
  return sum;
}

}  // namespace pensieve::avx2
