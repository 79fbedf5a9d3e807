// What `pensieve list` and `pensieve show` say about a model file or folder, read from its
// metadata (GGUF keys, or config.json and safetensors headers) without loading the weights.
#pragma once
#include <cstdint>
#include <string>

namespace pensieve::cli {

struct ModelFacts {
  std::string architecture;  // "" when unknown
  uint64_t parameters = 0;
  int context = 0;
  std::string template_family;  // chatml, llama3, phi3, other, none
  std::string license;
};

// Error naming the file when the metadata cannot be read.
ModelFacts read_model_facts(const std::string& path);

}  // namespace pensieve::cli
