// Tables behind utf8::nfc (see unicode_nfc_data.cpp). Each array is sorted by its first field.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pensieve::utf8::nfc_data {

struct Decomposition { uint32_t cp, first, second; };  // second == 0: a singleton
struct Composition { uint32_t first, second, composed; };
struct CombiningClassRange { uint32_t lo, hi; uint8_t ccc; };

extern const Decomposition kDecompositions[];
extern const size_t kNumDecompositions;
extern const Composition kCompositions[];
extern const size_t kNumCompositions;
extern const CombiningClassRange kCombiningClasses[];
extern const size_t kNumCombiningClasses;

}  // namespace pensieve::utf8::nfc_data
