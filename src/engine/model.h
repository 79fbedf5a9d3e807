// The decoder-only transformer shared by Llama, Phi-3 and Qwen2: an immutable Model (config and
// weights bound per layer) and the per-sequence state (KV cache, position) that a forward pass
// advances. Any number of sequences may run on one Model; a Model is never modified after load.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/model_loader.h"
#include "util/thread_pool.h"

namespace pensieve {

// Keys and values of every layer for up to `capacity` positions, float16 (default) or float32.
class KvCache {
 public:
  KvCache(const ModelConfig& cfg, int capacity, bool f32);
  int capacity() const { return capacity_; }
  bool is_f32() const { return f32_; }
  int kv_dim() const { return kv_dim_; }
  size_t bytes() const { return data_.size(); }
  // Row of kv_dim elements (uint16_t half or float) for `layer` at `pos`.
  void* key(int layer, int pos) { return row(layer, pos, 0); }
  void* value(int layer, int pos) { return row(layer, pos, 1); }
  const void* key(int layer, int pos) const { return const_cast<KvCache*>(this)->row(layer, pos, 0); }
  const void* value(int layer, int pos) const { return const_cast<KvCache*>(this)->row(layer, pos, 1); }

 private:
  void* row(int layer, int pos, int which);
  int capacity_, kv_dim_;
  bool f32_;
  size_t elem_;
  std::vector<uint8_t> data_;
};

struct SequenceState {
  SequenceState(const ModelConfig& cfg, int capacity, bool kv_f32) : kv(cfg, capacity, kv_f32) {}
  KvCache kv;
  int n_past = 0;  // positions already in the cache
  // Float32 activations into every matmul instead of 8-bit quantized ones: exact up to summation
  // order (reference checks), several times slower on quantized weights.
  bool exact_activations = false;
};

class Model {
 public:
  explicit Model(LoadedModel loaded);
  static std::shared_ptr<const Model> load(const std::string& path);

  const ModelConfig& config() const { return cfg_; }
  const LoadedModel& files() const { return loaded_; }
  // The weight matrices a decoded token reads, each once, in the order the forward pass reads
  // them (the embedding row is negligible), and their total size.
  std::vector<std::span<const uint8_t>> weights_read_per_token() const;
  size_t weight_bytes_per_token() const;

  // Runs `tokens` at positions st.n_past.. and appends them to the cache. Writes the logits of the
  // last token (all_logits = false, logits sized n_vocab) or of every token ([n, n_vocab]).
  // Throws Error when the cache has no room.
  void forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
               std::vector<float>& logits, ThreadPool& pool) const;

 private:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // float32 copies (tiny)
    std::vector<float> bq, bk, bv;           // empty when the architecture has no q/k/v bias
    const Tensor* wqkv = nullptr;  // fused (phi3) or null
    const Tensor* wq = nullptr;
    const Tensor* wk = nullptr;
    const Tensor* wv = nullptr;
    const Tensor* wo = nullptr;
    const Tensor* w_gate = nullptr;  // null when fused into w_up (phi3)
    const Tensor* w_up = nullptr;
    const Tensor* w_down = nullptr;
  };
  void bind_weights();
  void forward_chunk(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
                     float* logits, ThreadPool& pool) const;
  void attention(const SequenceState& st, int layer, int pos0, int n_tok, const float* q,
                 float* out, ThreadPool& pool) const;

  LoadedModel loaded_;
  ModelConfig cfg_;
  const Tensor* tok_embd_ = nullptr;
  std::vector<float> out_norm_;
  const Tensor* output_ = nullptr;
  std::vector<Layer> layers_;
};

}  // namespace pensieve
