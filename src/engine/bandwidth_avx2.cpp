#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace pensieve::avx2 {

uint64_t read_sum(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    const auto* v = reinterpret_cast<const __m256i*>(p + i);
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(v));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(v + 1));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(v + 2));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(v + 3));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t sum = uint64_t(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) +
                          _mm256_extract_epi64(s, 2) + _mm256_extract_epi64(s, 3));
  for (; i < bytes; ++i) sum += p[i];
  return sum;
}

}  // namespace pensieve::avx2
