#include "model/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "util/error.h"

namespace pensieve {

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::F32: return "f32";
    case KvType::Q8: return "q8";
    default: return "f16";
  }
}

KvType parse_kv_type(const std::string& s) {
  if (s == "f16") return KvType::F16;
  if (s == "f32") return KvType::F32;
  if (s == "q8") return KvType::Q8;
  throw Error("KV cache type '" + s + "': expected f16, f32 or q8");
}

void kv_store_q8(const float* x, int n_heads, int head_dim, void* row) {
  auto* q = static_cast<int8_t*>(row);
  for (int h = 0; h < n_heads; ++h) {
    const float* v = x + size_t(h) * size_t(head_dim);
    float amax = 0.0f;
    for (int i = 0; i < head_dim; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < head_dim; ++i) q[size_t(h) * size_t(head_dim) + size_t(i)] = int8_t(std::nearbyint(v[i] * id));
    const float scale = amax / 127.0f;
    std::memcpy(static_cast<uint8_t*>(row) + kv_q8_scale_at(n_heads * head_dim, h), &scale, sizeof scale);
  }
}

// Bytes of one cache row (a position's keys, or its values, of one layer).
static size_t kv_row_bytes(const ModelConfig& cfg, KvType type) {
  const size_t kv_dim = size_t(cfg.n_kv_heads) * size_t(cfg.head_dim);
  switch (type) {
    case KvType::F32: return kv_dim * 4;
    case KvType::Q8: return kv_dim + size_t(cfg.n_kv_heads) * sizeof(float);
    default: return kv_dim * 2;
  }
}

KvPool::KvPool(const ModelConfig& cfg, int n_blocks, int block_size, KvType type)
    : n_blocks_(n_blocks),
      block_size_(block_size),
      kv_dim_(cfg.n_kv_heads * cfg.head_dim),
      type_(type),
      row_bytes_(kv_row_bytes(cfg, type)),
      block_bytes_(block_bytes(cfg, block_size, type)) {
  if (n_blocks <= 0 || block_size <= 0)
    throw Error("KV cache: " + std::to_string(n_blocks) + " blocks of " + std::to_string(block_size) +
                " positions is not a cache");
  // new[] without () leaves the bytes uninitialised: the kernel commits pages on first write.
  data_.reset(new uint8_t[bytes()]);
}

size_t KvPool::block_bytes(const ModelConfig& cfg, int block_size, KvType type) {
  return size_t(cfg.n_layers) * 2 * size_t(block_size) * kv_row_bytes(cfg, type);
}

uint64_t kv_block_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // splitmix64 steps over the parent hash and each token: cheap, and every bit of the input
  // reaches every bit of the output.
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix(parent + 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = mix(h ^ (uint64_t(uint32_t(t)) + 0x9e3779b97f4a7c15ull + (h << 6)));
  return h;
}

BlockManager::BlockManager(int n_blocks) : ref_(size_t(n_blocks), 0), meta_(size_t(n_blocks)) {
  free_.reserve(size_t(n_blocks));
  for (int b = n_blocks - 1; b >= 0; --b) free_.push_back(b);  // hand out low numbers first
}

int BlockManager::allocate() {
  int b = -1;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    meta_[size_t(b)].in_lru = false;
    forget(b);
  } else {
    return -1;
  }
  ref_[size_t(b)] = 1;
  ++in_use_;
  return b;
}

void BlockManager::retain(int b) {
  Entry& e = meta_[size_t(b)];
  if (ref_[size_t(b)]++ == 0) {
    ++in_use_;
    if (e.in_lru) {
      lru_.erase(e.lru_pos);
      e.in_lru = false;
    }
  }
}

void BlockManager::release(int b) {
  if (ref_[size_t(b)] <= 0) throw Error("KV cache: block " + std::to_string(b) + " released twice");
  if (--ref_[size_t(b)] > 0) return;
  --in_use_;
  Entry& e = meta_[size_t(b)];
  if (e.named) {
    e.lru_pos = lru_.insert(lru_.end(), b);
    e.in_lru = true;
  } else {
    free_.push_back(b);
  }
}

int BlockManager::lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const Entry& e = meta_[size_t(it->second)];
  if (e.parent != parent || !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end()))
    return -1;
  retain(it->second);
  return it->second;
}

void BlockManager::publish(int b, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  Entry& e = meta_[size_t(b)];
  if (e.named || by_hash_.count(hash)) return;
  e.named = true;
  e.hash = hash;
  e.parent = parent;
  e.tokens.assign(tokens.begin(), tokens.end());
  by_hash_[hash] = b;
}

void BlockManager::forget(int b) {
  Entry& e = meta_[size_t(b)];
  if (!e.named) return;
  by_hash_.erase(e.hash);
  e.named = false;
  e.tokens.clear();
}

}  // namespace pensieve
