// MLX affine-quantized folders (mlx-community checkpoints). Each quantized linear X is stored as
// X.weight (uint32 words of packed B-bit values), X.scales and X.biases (one pair per group of G
// inputs), w = scale * q + bias. We repack at load, exactly, into block types the kernels know:
// 4-bit with groups of a multiple of 64 into Q4_A (one f16 scale and bias per 64 weights, 4.5 bits
// a weight like the file and Q4_0), other 4-bit groups into Q4_1 (d and m per 32), 8-bit into Q8_A.
// Each tensor's file pages are released once it is repacked, so the weights are held once.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "formats/safetensors.h"
#include "formats/weight_store.h"

namespace pensieve {

struct MlxQuant {
  int group_size = 64;
  int bits = 4;
};

// The folder-wide setting from config.json "quantization"; Error naming the field when malformed.
MlxQuant parse_mlx_quantization(const nlohmann::json& q, const std::string& source);

// Adds every tensor the engine uses, under canonical names: quantized ones repacked (now, or with
// `defer` when first needed: WeightStore::add_deferred), the rest (norms, unquantized linears) as
// float views.
void load_mlx_weights(const std::vector<SafetensorsFile>& files, const nlohmann::json& quantization,
                      const std::string& source, WeightStore& w, bool defer);

// The block type an MLX tensor of this quantization is repacked into.
GgmlType mlx_block_type(const MlxQuant& q);

// Repacks one row of `cols` MLX values (packed words, per-group f16 scales and biases) into
// row_size(mlx_block_type(q), cols) bytes at dst.
void mlx_repack_row(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                    int64_t cols, const MlxQuant& q, void* dst);

}  // namespace pensieve
