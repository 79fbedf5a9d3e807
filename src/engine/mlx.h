// MLX affine-quantized folders (mlx-community checkpoints). Each quantized linear X is stored as
// X.weight (uint32 words of packed B-bit values), X.scales and X.biases (one pair per group of G
// inputs), w = scale * q + bias. We repack at load into block types the kernels already know,
// exactly: 4-bit into Q4_1 (its d and m are the group's f16 scale and bias) and 8-bit into Q8_A.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/safetensors.h"
#include "engine/weight_store.h"

namespace pensieve {

struct MlxQuant {
  int group_size = 64;
  int bits = 4;
};

// The folder-wide setting from config.json "quantization"; Error naming the field when malformed.
MlxQuant parse_mlx_quantization(const nlohmann::json& q, const std::string& source);

// Adds every tensor the engine uses, under canonical names: quantized ones repacked, the rest
// (norms, unquantized linears) as float views.
void load_mlx_weights(const std::vector<SafetensorsFile>& files, const nlohmann::json& quantization,
                      const std::string& source, WeightStore& w);

// Repacks one row of `cols` MLX values (packed words, per-group f16 scales and biases) into
// cols/32 blocks of Q4_1 (bits 4) or Q8_A (bits 8) at dst.
void mlx_repack_row(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                    int64_t cols, const MlxQuant& q, void* dst);

}  // namespace pensieve
