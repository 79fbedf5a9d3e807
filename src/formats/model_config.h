// The hyper-parameters of a decoder-only transformer, read from GGUF metadata or a Hugging Face
// config.json. Architectures differ only in data held here and in the tensor-name tables.
#pragma once
#include <string>
#include <vector>

namespace pensieve {

enum class Arch { Llama, Phi3, Qwen2 };

const char* arch_name(Arch a);  // "llama", "phi3", "qwen2" (GGUF general.architecture)

enum class RopeStyle {
  Interleaved,  // pairs (2i, 2i+1): GGUF `llama` files (Q/K rows permuted by the converter)
  RotateHalf,   // pairs (i, i + n/2): Hugging Face layout; GGUF phi3 and qwen2
};

enum class RopeScaling { None, Linear, Llama3, LongRope };

struct RopeConfig {
  float theta = 10000.0f;
  RopeStyle style = RopeStyle::RotateHalf;
  int n_rot = 0;  // rotated dimensions per head (head_dim unless partial rotary)
  RopeScaling scaling = RopeScaling::None;
  float factor = 1.0f;          // Linear and Llama3
  float low_freq_factor = 1.0f;   // Llama3
  float high_freq_factor = 4.0f;  // Llama3
  int original_ctx = 0;          // Llama3 and LongRope: original_max_position_embeddings
  // LongRope: per-frequency divisors (n_rot/2 each); the long ones are used for a pass whose last
  // position + 1 exceeds original_ctx. attn_factor multiplies cos and sin.
  std::vector<float> short_factor, long_factor;
  float attn_factor = 1.0f;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string name;  // general.name or the folder name
  int n_vocab = 0;
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ff_dim = 0;
  int ctx_train = 0;       // max_position_embeddings / context_length
  int sliding_window = 0;  // 0 = none
  float norm_eps = 1e-5f;
  RopeConfig rope;
  bool tied_embeddings = false;  // output projection is token_embd
  // Token ids from the model files (-1 when unknown); stop_ids holds every end-of-turn/EOS id
  // (generation_config.json eos_token_id may be a list).
  int bos_id = -1;
  int eos_id = -1;
  std::vector<int> stop_ids;
};

}  // namespace pensieve
