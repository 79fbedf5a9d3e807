// Architectures as data: the canonical (GGUF) tensor names and shapes that a ModelConfig implies.
// The loader checks a model against this table, and the synthetic-model writer generates exactly
// these tensors, so the two can never disagree about what a `phi3` or `qwen2` model contains.
#pragma once
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "formats/weight_store.h"

namespace pensieve {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order (ne[0] innermost)
  bool optional = false;    // checked only when present (e.g. llama attention biases)
  bool is_norm = false;     // a 1-D norm weight (initialised to 1 by the synthesizer)
};

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c);

// Every required tensor is present with its shape, optional ones have the right shape when present
// (Error naming the source, tensor, expected and actual shape otherwise). Also checks the config
// itself is coherent (positive sizes, heads dividing evenly), naming the field.
void check_model_tensors(const ModelConfig& c, const WeightStore& w);
void check_model_config(const ModelConfig& c, const std::string& source);

}  // namespace pensieve
