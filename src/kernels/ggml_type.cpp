#include "kernels/ggml_type.h"

#include <array>
#include <cctype>

namespace pensieve {

namespace {
constexpr std::array<TypeTraits, 15> kTraits = {{
    {GgmlType::F32, "F32", 1, 4},
    {GgmlType::F16, "F16", 1, 2},
    {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", QK, sizeof(block_q4_0)},
    {GgmlType::Q4_1, "Q4_1", QK, sizeof(block_q4_1)},
    {GgmlType::Q5_0, "Q5_0", QK, sizeof(block_q5_0)},
    {GgmlType::Q5_1, "Q5_1", QK, sizeof(block_q5_1)},
    {GgmlType::Q8_0, "Q8_0", QK, sizeof(block_q8_0)},
    {GgmlType::Q8_1, "Q8_1", QK, sizeof(block_q8_1)},
    {GgmlType::Q2_K, "Q2_K", QK_K, sizeof(block_q2_K)},
    {GgmlType::Q3_K, "Q3_K", QK_K, sizeof(block_q3_K)},
    {GgmlType::Q4_K, "Q4_K", QK_K, sizeof(block_q4_K)},
    {GgmlType::Q5_K, "Q5_K", QK_K, sizeof(block_q5_K)},
    {GgmlType::Q6_K, "Q6_K", QK_K, sizeof(block_q6_K)},
    {GgmlType::Q8_K, "Q8_K", QK_K, sizeof(block_q8_K)},
}};
}  // namespace

std::optional<TypeTraits> type_traits(GgmlType t) {
  for (const auto& tr : kTraits)
    if (tr.type == t) return tr;
  if (t == GgmlType::Q8_A) return TypeTraits{GgmlType::Q8_A, "Q8_A", QK, sizeof(block_q8_a)};
  if (t == GgmlType::Q4_A) return TypeTraits{GgmlType::Q4_A, "Q4_A", QK_A, sizeof(block_q4_a)};
  return std::nullopt;
}

std::optional<GgmlType> type_from_name(std::string_view name) {
  for (const auto& tr : kTraits) {
    if (tr.name.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < name.size() && eq; ++i)
      eq = std::toupper(static_cast<unsigned char>(name[i])) == tr.name[i];
    if (eq) return tr.type;
  }
  return std::nullopt;
}

std::string_view type_name(GgmlType t) {
  auto tr = type_traits(t);
  return tr ? tr->name : std::string_view("?");
}

size_t row_size(GgmlType t, int64_t n) {
  auto tr = type_traits(t);
  if (!tr) return 0;
  return size_t(n / tr->block_elems) * tr->block_bytes;
}

}  // namespace pensieve
