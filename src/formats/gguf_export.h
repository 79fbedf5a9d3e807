// Writing model GGUF files the way other GGUF tools expect them: the llama.cpp metadata keys for a
// ModelConfig, the usual quantization recipes (which type each tensor gets), and a streaming
// tensor writer that produces, quantizes and writes one slice of rows at a time on several threads.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"
#include "formats/model_config.h"

namespace pensieve {

// A file type as `llama-quantize` names it: the base weight type plus the per-tensor mix rules.
struct QuantRecipe {
  std::string name;     // "q4_k_m"
  GgmlType base;        // type of most 2-D weights
  int llama_ftype;      // general.file_type
  bool k_mix;           // Q4_K_M / Q5_K_M: some tensors kept at higher precision
};

// Accepts f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m,
// q5_k_m (case-insensitive); nullopt otherwise.
std::optional<QuantRecipe> quant_recipe(std::string_view name);
std::string quant_recipe_names();  // for help texts and errors

// The type `name` gets under `r`: 1-D tensors stay F32; output.weight goes to Q6_K for the
// quantized recipes (Q8_0 keeps Q8_0); the K mixes give attn_v/ffn_down of some layers Q6_K and
// phi3's fused attn_qkv one step up; rows that are not a whole K super-block fall back to a
// 32-block type of similar size, rows that are not a whole 32-block to F16.
GgmlType tensor_type_for(const QuantRecipe& r, const std::string& name,
                         const std::vector<int64_t>& ne, int n_layers);

// general.* and <arch>.* keys (not the tokenizer).
void set_model_metadata(GgufWriter& w, const ModelConfig& c, const QuantRecipe& r);

// Llama-3 rope scaling as the per-frequency divisors GGUF files carry in rope_freqs.weight.
std::vector<float> llama3_rope_freqs(const RopeConfig& rope);

// One tensor to write, from one of: `raw` bytes already in the target type; `fill`, which writes
// rows [r0, r1) as float32 (ne[0] floats per row) to be quantized; or `fill_raw`, which writes
// rows [r0, r1) directly in the target type. The callbacks may run on several threads at once.
struct ExportTensor {
  std::string name;
  std::vector<int64_t> ne;
  GgmlType type = GgmlType::F32;
  std::function<void(int64_t r0, int64_t r1, float* dst)> fill;
  std::function<void(int64_t r0, int64_t r1, uint8_t* dst)> fill_raw;
  const void* raw = nullptr;
};

// Declares every tensor, writes the header, then streams the data: each tensor is produced in
// slices of rows, each slice split across `threads` threads for fill + quantize, then written.
void write_tensors_streaming(GgufWriter& w, const std::vector<ExportTensor>& tensors, int threads);

}  // namespace pensieve
