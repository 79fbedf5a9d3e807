// The decoder-only transformer shared by Llama, Phi-3 and Qwen2: an immutable Model (config and
// weights bound per layer) and the per-sequence state (KV cache, position) that a forward pass
// advances. Any number of sequences may run on one Model; a Model is never modified after load.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/kv_cache.h"
#include "formats/model_config.h"
#include "formats/model_loader.h"
#include "util/thread_pool.h"

namespace pensieve {

// One sequence's place in a KV pool: its block table and how many positions are filled. Built
// with a capacity it owns a private pool of exactly that room (one-off runs, tests, benchmarks);
// built on a shared pool its blocks are managed by the caller (the scheduler), which must give it
// room for every position a forward pass writes.
struct SequenceState {
  SequenceState(const ModelConfig& cfg, int capacity, KvType kv_type);
  explicit SequenceState(KvPool& shared) : pool(&shared) {}

  int capacity() const { return int(blocks.size()) * pool->block_size(); }

  KvPool* pool;
  std::unique_ptr<KvPool> own_pool;
  std::vector<int32_t> blocks;  // block table
  int n_past = 0;               // positions already in the cache
  // LongRoPE picks its factor set per pass by how far the pass reaches; a prompt prefilled in
  // several chunks sets this to its full length so that every chunk picks as one pass would.
  int rope_horizon = 0;
  // Float32 activations into every matmul instead of 8-bit quantized ones: exact up to summation
  // order (reference checks), several times slower on quantized weights.
  bool exact_activations = false;
};

// One sequence's part of a batched forward pass.
struct BatchItem {
  enum class Logits { None, Last, All };
  SequenceState* seq;
  std::span<const int32_t> tokens;
  Logits logits = Logits::Last;
};

class Model {
 public:
  // `device`: "cpu" (the default), "cuda", "cuda:N" or "auto" (see make_backend).
  explicit Model(LoadedModel loaded, const std::string& device = "cpu");
  static std::shared_ptr<const Model> load(const std::string& path, const std::string& device = "cpu");

  const Backend& backend() const { return *backend_; }
  const ModelConfig& config() const { return cfg_; }
  const LoadedModel& files() const { return loaded_; }
  // The weight matrices a decoded token reads, each once, in the order the forward pass reads
  // them (the embedding row is negligible), and their total size.
  std::vector<std::span<const uint8_t>> weights_read_per_token() const;
  size_t weight_bytes_per_token() const;

  // Runs `tokens` at positions st.n_past.. and appends them to the cache, in passes of at most 512
  // tokens. Writes the logits of the last token (all_logits = false, logits sized n_vocab) or of
  // every token ([n, n_vocab]). Throws Error when the cache has no room.
  void forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
               std::vector<float>& logits, ThreadPool& pool) const;
  // The same into caller-sized memory (e.g. a HostFloats, which a GPU copies into fastest).
  void forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits, float* logits,
               ThreadPool& pool) const;

  // One pass over several sequences: every weight matrix is read once for all their tokens, and
  // each sequence attends over its own cache. Each token's result is bit-for-bit what it would be
  // in a pass of its own. Logit rows go to `logits` in item order (one per Last item, one per token
  // of an All item). Items must agree on exact_activations and name distinct sequences.
  void forward_batch(std::span<const BatchItem> items, float* logits, ThreadPool& pool) const;

 private:
  // Weights as the backend holds them (ids from Backend::add_weight/add_vector; -1 = absent),
  // with the host tensors they came from.
  struct Layer {
    int attn_norm = -1, ffn_norm = -1;
    int bq = -1, bk = -1, bv = -1;  // -1 when the architecture has no q/k/v bias
    // id_qkv: wqkv, or wq, wk and wv stacked by the backend (Backend::add_stacked; then id_q, id_k
    // and id_v are -1); id_up: w_up, or w_gate and w_up stacked (then id_gate is -1).
    int id_qkv = -1, id_q = -1, id_k = -1, id_v = -1, id_o = -1, id_gate = -1, id_up = -1, id_down = -1;
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

  LoadedModel loaded_;
  ModelConfig cfg_;
  std::shared_ptr<Backend> backend_;
  const Tensor* tok_embd_ = nullptr;
  const Tensor* output_ = nullptr;
  int id_tok_embd_ = -1, id_output_ = -1, id_out_norm_ = -1;
  std::vector<Layer> layers_;
};

}  // namespace pensieve
