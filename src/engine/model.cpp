#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels.h"
#include "engine/rope.h"
#include "util/error.h"
#include "util/fp16.h"

namespace pensieve {

namespace {

constexpr int kMaxChunk = 512;  // tokens per prefill pass; bounds the scratch memory

std::vector<float> to_floats(const Tensor& t) {
  std::vector<float> out(size_t(t.elements()));
  for (int64_t r = 0; r < t.rows(); ++r)
    kernels::dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
  return out;
}

std::string blk(int l, const char* name) { return "blk." + std::to_string(l) + "." + name; }

}  // namespace

// ---------------------------------------------------------------------------------------------
SequenceState::SequenceState(const ModelConfig& cfg, int capacity, bool kv_f32) {
  const int bs = KvPool::kDefaultBlockSize;
  const int n = std::max(1, (capacity + bs - 1) / bs);
  own_pool = std::make_unique<KvPool>(cfg, n, bs, kv_f32);
  pool = own_pool.get();
  for (int b = 0; b < n; ++b) blocks.push_back(b);
}

// ---------------------------------------------------------------------------------------------
Model::Model(LoadedModel loaded) : loaded_(std::move(loaded)), cfg_(loaded_.config) {
  bind_weights();
}

std::shared_ptr<const Model> Model::load(const std::string& path) {
  return std::make_shared<const Model>(load_model(path));
}

void Model::bind_weights() {
  const WeightStore& w = loaded_.weights;
  const int64_t dim = cfg_.dim, hd = cfg_.head_dim, ff = cfg_.ff_dim;
  const int64_t q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  if (dim <= 0 || hd <= 0 || cfg_.n_heads <= 0 || cfg_.n_kv_heads <= 0 || cfg_.n_layers <= 0 ||
      cfg_.n_vocab <= 0 || ff <= 0 || cfg_.n_heads % cfg_.n_kv_heads != 0)
    throw Error(w.source() + ": inconsistent model hyper-parameters");
  if (cfg_.rope.n_rot <= 0 || cfg_.rope.n_rot > hd || cfg_.rope.n_rot % 2 || cfg_.rope.n_rot > 1024)
    throw Error(w.source() + ": bad rotary dimension count " + std::to_string(cfg_.rope.n_rot));

  tok_embd_ = &w.require("token_embd.weight", {dim, cfg_.n_vocab});
  out_norm_ = to_floats(w.require("output_norm.weight", {dim}));
  output_ = w.find("output.weight") ? &w.require("output.weight", {dim, cfg_.n_vocab}) : tok_embd_;

  auto bias = [&](int l, const char* name, int64_t n) {
    const Tensor* t = w.find(blk(l, name));
    return t ? to_floats(w.require(blk(l, name), {n})) : std::vector<float>{};
  };
  layers_.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Layer& L = layers_[l];
    L.attn_norm = to_floats(w.require(blk(l, "attn_norm.weight"), {dim}));
    L.ffn_norm = to_floats(w.require(blk(l, "ffn_norm.weight"), {dim}));
    if (w.find(blk(l, "attn_qkv.weight"))) {
      L.wqkv = &w.require(blk(l, "attn_qkv.weight"), {dim, q_dim + 2 * kv_dim});
    } else {
      L.wq = &w.require(blk(l, "attn_q.weight"), {dim, q_dim});
      L.wk = &w.require(blk(l, "attn_k.weight"), {dim, kv_dim});
      L.wv = &w.require(blk(l, "attn_v.weight"), {dim, kv_dim});
    }
    L.bq = bias(l, "attn_q.bias", q_dim);
    L.bk = bias(l, "attn_k.bias", kv_dim);
    L.bv = bias(l, "attn_v.bias", kv_dim);
    L.wo = &w.require(blk(l, "attn_output.weight"), {q_dim, dim});
    if (w.find(blk(l, "ffn_gate.weight"))) {
      L.w_gate = &w.require(blk(l, "ffn_gate.weight"), {dim, ff});
      L.w_up = &w.require(blk(l, "ffn_up.weight"), {dim, ff});
    } else {
      L.w_up = &w.require(blk(l, "ffn_up.weight"), {dim, 2 * ff});  // fused gate and up
    }
    L.w_down = &w.require(blk(l, "ffn_down.weight"), {ff, dim});
  }
}

std::vector<std::span<const uint8_t>> Model::weights_read_per_token() const {
  std::vector<std::span<const uint8_t>> v;
  auto add = [&](const Tensor* t) {
    if (t) v.emplace_back(static_cast<const uint8_t*>(t->data), t->nbytes);
  };
  for (const Layer& L : layers_)
    for (const Tensor* t : {L.wqkv, L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down}) add(t);
  add(output_);
  return v;
}

size_t Model::weight_bytes_per_token() const {
  size_t n = 0;
  for (const auto& w : weights_read_per_token()) n += w.size();
  return n;
}

struct Model::TokenSlot {
  SequenceState* seq;
  int pos;
  const RopeTable* rope;
};

void Model::forward(SequenceState& st, std::span<const int32_t> tokens, bool all_logits,
                    std::vector<float>& logits, ThreadPool& pool) const {
  const size_t n = tokens.size();
  if (n == 0) throw Error("forward: no tokens");
  const size_t vocab = size_t(cfg_.n_vocab);
  logits.resize(all_logits ? n * vocab : vocab);
  const int horizon = st.rope_horizon;
  st.rope_horizon = std::max(horizon, st.n_past + int(n));  // the whole call is one pass for RoPE
  try {
    for (size_t begin = 0; begin < n; begin += kMaxChunk) {
      const size_t len = std::min<size_t>(kMaxChunk, n - begin);
      const bool last_chunk = begin + len == n;
      BatchItem item{&st, tokens.subspan(begin, len),
                     all_logits ? BatchItem::Logits::All
                                : (last_chunk ? BatchItem::Logits::Last : BatchItem::Logits::None)};
      forward_batch(std::span<const BatchItem>(&item, 1),
                    all_logits ? logits.data() + begin * vocab : logits.data(), pool);
    }
  } catch (...) {
    st.rope_horizon = horizon;
    throw;
  }
  st.rope_horizon = horizon;
}

void Model::forward_batch(std::span<const BatchItem> items, float* logits, ThreadPool& pool) const {
  if (items.empty()) throw Error("forward: empty batch");
  const bool exact = items[0].seq->exact_activations;
  int T = 0;
  for (const BatchItem& it : items) {
    const SequenceState& st = *it.seq;
    const size_t n = it.tokens.size();
    if (n == 0) throw Error("forward: no tokens");
    if (st.exact_activations != exact) throw Error("forward: a batch mixes exact and quantized activations");
    if (st.n_past + n > size_t(st.capacity()))
      throw Error("context full: " + std::to_string(st.n_past) + " + " + std::to_string(n) +
                  " tokens exceed the cache of " + std::to_string(st.capacity()));
    for (int32_t id : it.tokens)
      if (id < 0 || id >= cfg_.n_vocab)
        throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(cfg_.n_vocab));
    T += int(n);
  }
  const int dim = cfg_.dim, hd = cfg_.head_dim, ff = cfg_.ff_dim;
  const int q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  const int qkv_dim = q_dim + 2 * kv_dim;
  auto mm = exact ? kernels::matmul_exact : kernels::matmul;

  // LongRoPE picks its factor set per sequence, by how far its pass reaches.
  const RopeTable rope_short(cfg_.rope, false), rope_long(cfg_.rope, true);
  std::vector<TokenSlot> slots;
  slots.reserve(size_t(T));
  std::vector<int32_t> ids;
  ids.reserve(size_t(T));
  for (const BatchItem& it : items) {
    SequenceState& st = *it.seq;
    const int reach = std::max(st.n_past + int(it.tokens.size()), st.rope_horizon);
    const bool long_ctx = cfg_.rope.scaling == RopeScaling::LongRope && reach > cfg_.rope.original_ctx;
    for (size_t i = 0; i < it.tokens.size(); ++i) {
      slots.push_back({&st, st.n_past + int(i), long_ctx ? &rope_long : &rope_short});
      ids.push_back(it.tokens[i]);
    }
  }

  std::vector<float> x(size_t(T) * dim), xn(size_t(T) * dim), tmp(size_t(T) * dim);
  std::vector<float> qkv(size_t(T) * qkv_dim), att(size_t(T) * q_dim), ffb(size_t(T) * 2 * ff);
  for (int t = 0; t < T; ++t) kernels::get_row(*tok_embd_, ids[size_t(t)], x.data() + size_t(t) * dim);

  auto add_bias = [&](const std::vector<float>& b, int offset) {
    if (b.empty()) return;
    for (int t = 0; t < T; ++t)
      for (size_t i = 0; i < b.size(); ++i) qkv[size_t(t) * qkv_dim + offset + i] += b[i];
  };

  for (int l = 0; l < cfg_.n_layers; ++l) {
    const Layer& L = layers_[l];
    for (int t = 0; t < T; ++t)
      kernels::rmsnorm(x.data() + size_t(t) * dim, L.attn_norm.data(), xn.data() + size_t(t) * dim,
                       dim, cfg_.norm_eps);
    if (L.wqkv) {
      mm(*L.wqkv, xn.data(), dim, T, qkv.data(), qkv_dim, pool);
    } else {
      mm(*L.wq, xn.data(), dim, T, qkv.data(), qkv_dim, pool);
      mm(*L.wk, xn.data(), dim, T, qkv.data() + q_dim, qkv_dim, pool);
      mm(*L.wv, xn.data(), dim, T, qkv.data() + q_dim + kv_dim, qkv_dim, pool);
    }
    add_bias(L.bq, 0);
    add_bias(L.bk, q_dim);
    add_bias(L.bv, q_dim + kv_dim);
    for (int t = 0; t < T; ++t) {
      const TokenSlot& s = slots[size_t(t)];
      float* row = qkv.data() + size_t(t) * qkv_dim;
      s.rope->apply(row, cfg_.n_heads, hd, s.pos);
      s.rope->apply(row + q_dim, cfg_.n_kv_heads, hd, s.pos);
      const float* k = row + q_dim;
      const float* v = row + q_dim + kv_dim;
      const KvPool& kv = *s.seq->pool;
      const int bs = kv.block_size();
      const int block = s.seq->blocks[size_t(s.pos / bs)], off = s.pos % bs;
      if (kv.is_f32()) {
        std::memcpy(kv.key(block, l, off), k, sizeof(float) * kv_dim);
        std::memcpy(kv.value(block, l, off), v, sizeof(float) * kv_dim);
      } else {
        kernels::f32_to_f16_row(k, static_cast<uint16_t*>(kv.key(block, l, off)), kv_dim);
        kernels::f32_to_f16_row(v, static_cast<uint16_t*>(kv.value(block, l, off)), kv_dim);
      }
    }
    attention(slots, l, qkv.data(), att.data(), pool);
    mm(*L.wo, att.data(), q_dim, T, tmp.data(), dim, pool);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];

    for (int t = 0; t < T; ++t)
      kernels::rmsnorm(x.data() + size_t(t) * dim, L.ffn_norm.data(), xn.data() + size_t(t) * dim,
                       dim, cfg_.norm_eps);
    if (L.w_gate) {
      mm(*L.w_gate, xn.data(), dim, T, ffb.data(), 2 * ff, pool);
      mm(*L.w_up, xn.data(), dim, T, ffb.data() + ff, 2 * ff, pool);
    } else {
      mm(*L.w_up, xn.data(), dim, T, ffb.data(), 2 * ff, pool);
    }
    for (int t = 0; t < T; ++t) {
      float* row = ffb.data() + size_t(t) * 2 * ff;
      kernels::silu_mul(row, row + ff, ff);
    }
    mm(*L.w_down, ffb.data(), 2 * ff, T, tmp.data(), dim, pool);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }

  // The rows whose logits are wanted, normalised into consecutive rows of xn.
  int n_out = 0, t0 = 0;
  for (const BatchItem& it : items) {
    const int n = int(it.tokens.size());
    const int first = it.logits == BatchItem::Logits::All ? 0 : it.logits == BatchItem::Logits::Last ? n - 1 : n;
    for (int t = t0 + first; t < t0 + n; ++t, ++n_out)
      kernels::rmsnorm(x.data() + size_t(t) * dim, out_norm_.data(), xn.data() + size_t(n_out) * dim, dim,
                       cfg_.norm_eps);
    it.seq->n_past += n;
    t0 += n;
  }
  if (n_out > 0) mm(*output_, xn.data(), dim, n_out, logits, cfg_.n_vocab, pool);
}

// Causal attention of each token of the batch over its own sequence's cache; tasks are (token,
// head) pairs.
void Model::attention(std::span<const TokenSlot> slots, int layer, const float* qkv, float* out,
                      ThreadPool& pool) const {
  const int hd = cfg_.head_dim, nh = cfg_.n_heads;
  const int group = cfg_.n_heads / cfg_.n_kv_heads;
  const int q_dim = nh * hd, qkv_dim = q_dim + 2 * cfg_.n_kv_heads * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int window = cfg_.sliding_window;
  const int T = int(slots.size());
  pool.parallel_for(int64_t(T) * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int t = int(task / nh), h = int(task % nh);
      const TokenSlot& s = slots[size_t(t)];
      const KvPool& kv = *s.seq->pool;
      const std::vector<int32_t>& table = s.seq->blocks;
      const bool f32 = kv.is_f32();
      const int bs = kv.block_size();
      const int start = window > 0 ? std::max(0, s.pos - window + 1) : 0;
      const float* q = qkv + size_t(t) * qkv_dim + size_t(h) * hd;
      const size_t koff = size_t(h / group) * hd;
      const int n = s.pos - start + 1;
      scores.resize(size_t(n));
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        const void* k = kv.key(table[size_t(p / bs)], layer, p % bs);
        scores[size_t(j)] = scale * (f32 ? kernels::dot(static_cast<const float*>(k) + koff, q, hd)
                                         : kernels::dot_f16(static_cast<const uint16_t*>(k) + koff, q, hd));
      }
      kernels::softmax(scores.data(), n);
      float* o = out + size_t(t) * q_dim + size_t(h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        const void* v = kv.value(table[size_t(p / bs)], layer, p % bs);
        if (f32) kernels::axpy(scores[size_t(j)], static_cast<const float*>(v) + koff, o, hd);
        else kernels::axpy_f16(scores[size_t(j)], static_cast<const uint16_t*>(v) + koff, o, hd);
      }
    }
  });
}

}  // namespace pensieve
