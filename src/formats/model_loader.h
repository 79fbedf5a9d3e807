// From a path on disk to a ModelConfig and canonical weights: a .gguf file, a Hugging Face
// safetensors folder (single or sharded), or an MLX affine-quantized folder.
#pragma once
#include <optional>
#include <string>

#include "formats/gguf.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"

namespace pensieve {

struct LoadedModel {
  ModelConfig config;
  WeightStore weights;
  std::string format;               // "gguf", "safetensors" or "mlx"
  std::string path;                 // what the user passed
  std::optional<GgufFile> gguf;     // GGUF metadata (tokenizer, chat template) when format == gguf
  std::string dir;                  // the folder (tokenizer.json etc.) for the folder formats
};

// Throws Error naming the file (and tensor/key) on anything malformed or unsupported. With
// `defer_conversion`, weights that need converting (MLX groups) are converted when first needed
// (`ready(t)` before reading one's data; `weights.ready_all()`), not during the load.
LoadedModel load_model(const std::string& path, bool defer_conversion = false);

}  // namespace pensieve
