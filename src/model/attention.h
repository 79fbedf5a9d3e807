// Causal attention of a few queries of one sequence and one head over that sequence's cached keys
// and values. The queries of a prefill chunk share each key and value row: it is read and widened
// to float once and used by up to kAttnGroup queries, the outputs staying in registers. Each query's
// arithmetic (its dot products, softmax, and the position-ordered sum of values) is the same
// whatever else shares its group, so a token's result never depends on the batch.
#pragma once
#include <cstdint>
#include <vector>

#include "model/kv_cache.h"

namespace pensieve::kernels {

constexpr int kAttnGroup = 4;

struct AttnQuery {
  const float* q;  // head_dim floats
  float* out;      // head_dim floats
  int lo, hi;      // positions [lo, hi] it attends to (hi - lo + 1 >= 1)
};

// The cache rows of positions first, first + 1, ...: keys at key_rows[p - first], values at
// value_rows[p - first], each row holding every KV head; `off` is this head's first element.
struct AttnRows {
  const void* const* key_rows;
  const void* const* value_rows;
  int first;
  KvType type;
  int64_t off;       // elements
  int64_t scale_at;  // Q8: bytes from a row's start to this head's scale
};

// `scores` is scratch. True where attend_group runs (AVX-512 and head_dim a multiple of 16); elsewhere the caller keeps
// its one-query path. A model uses one or the other for every token.
bool attend_group_available(int head_dim);
void attend_group(const AttnQuery* qs, int n, const AttnRows& rows, int head_dim, float scale,
                  std::vector<float>& scores);

namespace vnni {
void attend_group(const AttnQuery* qs, int n, const AttnRows& rows, int head_dim, float scale,
                  std::vector<float>& scores);
}

}  // namespace pensieve::kernels
