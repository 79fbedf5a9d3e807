// Rotary position embeddings: the per-frequency inverse wavelengths (with Linear, Llama-3 and
// LongRoPE scaling folded in) and the rotation itself in both pair layouts.
#pragma once
#include <vector>

#include "formats/model_config.h"

namespace pensieve {

class RopeTable {
 public:
  // `long_context`: LongRoPE only — use the long factors (the pass reaches past original_ctx).
  RopeTable(const RopeConfig& cfg, bool long_context);

  // Rotates the first n_rot dims of each of `n_heads` vectors of `head_dim` floats at `pos`.
  void apply(float* x, int n_heads, int head_dim, int pos) const;

  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  RopeStyle style_;
  int n_rot_;
  float mscale_;  // multiplies cos and sin (LongRoPE attention factor)
  std::vector<float> inv_freq_;
};

}  // namespace pensieve
