// The paged KV cache: a pool of fixed-size blocks, each holding the keys and values of
// `block_size` consecutive positions for every layer, and the block manager that hands blocks to
// sequences, shares them between sequences with a common prompt prefix, and keeps finished
// sequences' full blocks cached (evicted least recently used) so that a later prompt with the same
// prefix skips their prefill.
//
// A sequence addresses its positions through a block table: position p lives in block
// table[p / block_size] at offset p % block_size. Nothing here is thread-safe: one scheduler thread
// owns a pool and its manager.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/model_config.h"

namespace pensieve {

// What a cache row holds: IEEE half (the default), float32, or int8 with a float scale per head
// row (Q8: a row is kv_dim int8 values, then n_kv_heads float scales; head h's values are
// round(x / d) with d = max|x| / 127 over its head_dim values, as the activations' int8 rounding).
enum class KvType { F16, F32, Q8 };
// "f16", "f32", "q8"; parse_kv_type throws on anything else, naming the accepted values.
const char* kv_type_name(KvType t);
KvType parse_kv_type(const std::string& s);

// A Q8 cache row from kv_dim = n_heads * head_dim floats: each head's int8 values, then the
// heads' scales.
void kv_store_q8(const float* x, int n_heads, int head_dim, void* row);
// Where head h's scale lies in a Q8 row of kv_dim values (bytes from its start), and the scale.
inline size_t kv_q8_scale_at(int kv_dim, int h) { return size_t(kv_dim) + size_t(h) * sizeof(float); }
inline float kv_q8_scale(const void* row, size_t at) {
  float d;
  std::memcpy(&d, static_cast<const uint8_t*>(row) + at, sizeof d);
  return d;
}

class KvPool {
 public:
  static constexpr int kDefaultBlockSize = 16;

  // Storage is reserved, not touched: pages are committed as blocks are first written.
  KvPool(const ModelConfig& cfg, int n_blocks, int block_size = kDefaultBlockSize, KvType type = KvType::F16);
  // Bytes one block takes for this model.
  static size_t block_bytes(const ModelConfig& cfg, int block_size, KvType type);

  int n_blocks() const { return n_blocks_; }
  int block_size() const { return block_size_; }
  KvType type() const { return type_; }
  bool is_f32() const { return type_ == KvType::F32; }
  int kv_dim() const { return kv_dim_; }
  size_t bytes() const { return size_t(n_blocks_) * block_bytes_; }
  size_t bytes_per_block() const { return block_bytes_; }
  size_t bytes_per_row() const { return row_bytes_; }

  // Where a GPU backend keeps this pool's keys and values (the same blocks and block numbers as the
  // host storage, which then stays untouched; the layout within a block is the backend's). Made by
  // that backend on first use, freed with the pool; the block manager and the scheduler never see
  // the difference.
  struct DeviceStorage {
    virtual ~DeviceStorage() = default;
  };
  DeviceStorage* device_storage() const { return device_.get(); }
  void set_device_storage(std::unique_ptr<DeviceStorage> s) const { device_ = std::move(s); }

  // Row of kv_dim elements (uint16_t half, float, or Q8's int8 values and scales) of `layer` at
  // offset `off` of `block`.
  void* key(int block, int layer, int off) const { return row(block, layer, off, 0); }
  void* value(int block, int layer, int off) const { return row(block, layer, off, 1); }

 private:
  void* row(int block, int layer, int off, int which) const {
    return data_.get() + size_t(block) * block_bytes_ +
           (size_t(layer * 2 + which) * size_t(block_size_) + size_t(off)) * row_bytes_;
  }
  int n_blocks_, block_size_, kv_dim_;
  KvType type_;
  size_t row_bytes_, block_bytes_;
  std::unique_ptr<uint8_t[]> data_;
  mutable std::unique_ptr<DeviceStorage> device_;
};

// The hash that names a full block in the prefix cache: it covers every token from the start of
// the sequence to the end of the block (through the parent block's hash) and the model.
uint64_t kv_block_hash(uint64_t parent, std::span<const int32_t> tokens);

class BlockManager {
 public:
  explicit BlockManager(int n_blocks);

  int total() const { return int(ref_.size()); }
  int in_use() const { return in_use_; }              // held by at least one sequence
  int cached() const { return int(lru_.size()); }     // unreferenced but kept for reuse
  int available() const { return total() - in_use_; }  // free + cached (evictable)

  // A block for one sequence (reference count 1): a never-cached free block first, else the least
  // recently used cached one (forgetting its hash). -1 when every block is in use.
  int allocate();
  void retain(int block);
  // Drops one reference; a block nobody holds stays cached if it has a hash, else becomes free.
  void release(int block);

  // The cached block for (parent, tokens) if there is one, retained for the caller; else -1. The
  // tokens are compared too, so a hash collision can never hand out the wrong keys.
  int lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // Names a full block so later prompts can find it. A block already named, or a hash that already
  // names another block, is left as it is.
  void publish(int block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);

 private:
  struct Entry {
    uint64_t parent = 0;
    std::vector<int32_t> tokens;
    bool named = false;
    uint64_t hash = 0;
    std::list<int>::iterator lru_pos;
    bool in_lru = false;
  };
  void forget(int block);

  std::vector<int> ref_;
  std::vector<Entry> meta_;
  std::vector<int> free_;  // never named, unreferenced
  std::list<int> lru_;     // named, unreferenced; front = least recently used
  std::unordered_map<uint64_t, int> by_hash_;
  int in_use_ = 0;
};

}  // namespace pensieve
