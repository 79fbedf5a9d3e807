// Weight types, with the on-disk block layout of each quantized type declared exactly once. The
// layouts are the GGUF ones (so files from other tools load in place); every kernel, the converter
// and a future CUDA backend read these same structs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace pensieve {

// Values are the GGUF type ids. Q8_A and Q4_A are ours (never written to GGUF): affine blocks that
// hold MLX 8-bit weights and MLX 4-bit weights of group 64 exactly.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
  Q8_A = 1000,
  Q4_A = 1001,
};

constexpr int QK = 32;     // elements per block of the 32-wide types
constexpr int QK_K = 256;  // elements per super-block of the K-quants
constexpr int K_SCALE_SIZE = 12;
constexpr int QK_A = 64;   // elements per Q4_A block (an MLX group of 64)

using f16_t = uint16_t;  // raw IEEE half bits

struct block_q4_0 { f16_t d; uint8_t qs[QK / 2]; };
struct block_q4_1 { f16_t d; f16_t m; uint8_t qs[QK / 2]; };
struct block_q5_0 { f16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct block_q5_1 { f16_t d; f16_t m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct block_q8_0 { f16_t d; int8_t qs[QK]; };
struct block_q8_1 { f16_t d; f16_t s; int8_t qs[QK]; };  // s = d * sum(qs)
struct block_q8_a { float d; float m; int8_t qs[QK]; };   // w = d * qs + m
// w = d * q + m over 64 weights, 4.5 bits each like Q4_0: qs[0..15] hold elements 0..31 and
// qs[16..31] elements 32..63, each half as in Q4_1 (byte i: element i low, element i + 16 high),
// so one 32-byte load carries two 32-wide sub-blocks side by side.
struct block_q4_a { f16_t d; f16_t m; uint8_t qs[QK_A / 2]; };

struct block_q2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; f16_t d; f16_t dmin; };
struct block_q3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; f16_t d; };
struct block_q4_K { f16_t d; f16_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
struct block_q5_K {
  f16_t d; f16_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2];
};
struct block_q6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; f16_t d; };
struct block_q8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };

static_assert(sizeof(block_q4_0) == 18);
static_assert(sizeof(block_q4_1) == 20);
static_assert(sizeof(block_q5_0) == 22);
static_assert(sizeof(block_q5_1) == 24);
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q8_1) == 36);
static_assert(sizeof(block_q8_a) == 40);
static_assert(sizeof(block_q4_a) == 36);
static_assert(sizeof(block_q2_K) == 84);
static_assert(sizeof(block_q3_K) == 110);
static_assert(sizeof(block_q4_K) == 144);
static_assert(sizeof(block_q5_K) == 176);
static_assert(sizeof(block_q6_K) == 210);
static_assert(sizeof(block_q8_K) == 292);

struct TypeTraits {
  GgmlType type;
  std::string_view name;  // as GGUF tools print it: "Q4_K", "F16"...
  int block_elems;        // elements per block (1 for float types)
  size_t block_bytes;     // bytes per block
};

// nullopt for a type id we do not support; callers turn that into an Error naming the tensor.
std::optional<TypeTraits> type_traits(GgmlType t);
std::optional<GgmlType> type_from_name(std::string_view name);  // case-insensitive "q4_k" etc.
std::string_view type_name(GgmlType t);                          // "?" when unknown

// Bytes for `n` elements of type `t` (n must be a multiple of the block size).
size_t row_size(GgmlType t, int64_t n);

}  // namespace pensieve
