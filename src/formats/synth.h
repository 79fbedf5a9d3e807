// Synthetic models for benchmarks and tests: a GGUF with a real architecture and shape, a real
// tokenizer and chat template copied from a vocabulary GGUF, and random weights at the scales of
// trained models, so a forward pass costs and reads exactly what the real model would.
#pragma once
#include <string>
#include <vector>

#include "formats/model_config.h"

namespace pensieve {

struct SynthOptions {
  ModelConfig config;
  std::string type = "f16";  // a quant_recipe name
  std::string vocab_path;    // vocabulary GGUF (tokenizer.* keys); empty: no tokenizer written
  uint64_t seed = 1;
  int threads = 0;           // 0: hardware concurrency
};

// phi3-mini, phi3-mini-128k, llama3-8b, qwen2.5-0.5b, tiny; Error listing them otherwise.
ModelConfig synth_preset(const std::string& name);
std::vector<std::string> synth_preset_names();

// A config from explicit sizes (head_dim = dim / heads) with the architecture's usual defaults.
ModelConfig synth_custom(const std::string& arch, int layers, int dim, int ff, int heads,
                         int kv_heads, int ctx);

// MLX affine quantization for write_synthetic_mlx_folder: bits 4 or 8, group a multiple of 32.
struct SynthMlx {
  int bits = 4;
  int group_size = 64;
};

// Writes an MLX folder as mlx-community ships one: config.json (with "quantization"), and
// model.safetensors with every linear and the embeddings quantized (uint32-packed values, f16
// scales and biases per group; a matrix whose row is not a whole number of groups stays f16, as
// mlx.nn.quantize leaves it), from the same N(0, 0.02) draw as the GGUF synthesizer. o.vocab_path,
// when set, is a Hugging Face tokenizer (tokenizer.json or its folder), copied with its
// tokenizer_config.json; a GGUF vocabulary is an Error (the folder loader reads tokenizer.json).
ModelConfig write_synthetic_mlx_folder(const SynthOptions& o, const SynthMlx& q, const std::string& out_dir);

// Writes the model; when a vocabulary is given, its token count becomes n_vocab and its
// special-token ids become the model's. Returns the final config.
ModelConfig write_synthetic_model(const SynthOptions& o, const std::string& out_path);

}  // namespace pensieve
