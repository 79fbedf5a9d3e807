// The CPU backend: the kernels of kernels/kernels.h, run on the caller's thread pool. Weights stay
// where the loader put them (mapped file or owned buffer), except that on CPUs with AVX-512 VNNI the
// matrices of a packable type are repacked (kernels/packed.h), and the file pages they came from
// handed back: by a background thread started when the load finishes, in the order a pass uses
// them, or by the first matmul that needs one before that thread got to it. Activations are
// per-pass host vectors.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "backend/backend.h"
#include "model/attention.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "kernels/packed.h"
#include "model/rope.h"
#include "util/cpu.h"
#include "util/mapped_file.h"

#include <spdlog/spdlog.h>

namespace pensieve {
namespace {

class CpuBackend;

class CpuPass final : public BackendPass {
 public:
  CpuPass(const CpuBackend& b, std::span<const PassSlot> slots, ThreadPool& pool);
  float* buffer(Act role, size_t n) override {
    std::vector<float>& v = bufs_[size_t(role)];
    if (v.size() < n) v.resize(n);
    return v.data();
  }
  void embed(int weight, std::span<const int32_t> ids, float* x) override;
  void rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) override;
  void matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
              bool exact) override;
  void add_bias(float* y, int64_t ldy, int rows, int b) override;
  void rope_and_store_kv(int layer, float* qkv) override;
  void attention(int layer, const float* qkv, float* out) override;
  // The head geometry both attention paths use.
  struct AttnShape {
    explicit AttnShape(const ModelConfig& cfg)
        : hd(cfg.head_dim), nh(cfg.n_heads), group(cfg.n_heads / cfg.n_kv_heads), q_dim(nh * hd),
          qkv_dim(q_dim + 2 * cfg.n_kv_heads * hd), window(cfg.sliding_window),
          scale(1.0f / std::sqrt(float(hd))) {}
    // The first position a token at `pos` attends to.
    int first(int pos) const { return window > 0 ? std::max(0, pos - window + 1) : 0; }
    int hd, nh, group, q_dim, qkv_dim, window;
    float scale;
  };
  void attention_groups(int layer, const float* qkv, float* out, const AttnShape& a);
  void add(float* x, const float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
  }
  void silu_mul(float* rows_gate_up, int rows, int ff) override {
    for (int t = 0; t < rows; ++t) {
      float* row = rows_gate_up + size_t(t) * 2 * ff;
      kernels::silu_mul(row, row + ff, ff);
    }
  }
  void read(const float* src, float* host, size_t n) override {
    if (src != host) std::memcpy(host, src, n * sizeof(float));
  }
  void write(float* dst, const float* host, size_t n) override {
    if (dst != host) std::memcpy(dst, host, n * sizeof(float));
  }

 private:
  const CpuBackend& b_;
  std::span<const PassSlot> slots_;
  ThreadPool& pool_;
  std::vector<float> bufs_[size_t(Act::Logits) + 1];
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const ModelConfig& cfg)
      : cfg_(cfg), rope_short_(cfg.rope, false), rope_long_(cfg.rope, true) {}
  ~CpuBackend() override {
    stop_.store(true, std::memory_order_relaxed);
    if (prep_.joinable()) prep_.join();
  }
  std::string name() const override { return "cpu"; }
  int add_weight(const Tensor& t, WeightUse use) override {
    weights_.push_back(&t);
    matmul_.push_back(use != WeightUse::Rows);
    packed_.push_back(std::make_unique<Packed>());
    return int(weights_.size()) - 1;
  }
  std::span<const uint8_t> weight_region(int weight) const override {
    const Packed& p = *packed_[size_t(weight)];
    if (!p.ready.load(std::memory_order_acquire) || !p.matrix) return {};
    return {p.matrix->tile(0), p.matrix->bytes()};
  }
  int add_vector(std::vector<float> v) override {
    vectors_.push_back(std::move(v));
    return int(vectors_.size()) - 1;
  }
  std::unique_ptr<BackendPass> begin_pass(std::span<const PassSlot> slots, ThreadPool& pool) const override {
    return std::make_unique<CpuPass>(*this, slots, pool);
  }
  void finish_load() override;
  void wait_prepared() const override {
    for (size_t i = 0; i < weights_.size(); ++i) prepare(i);
  }

  // The packed copy of weight i, made now on `pool` (one thread when null) unless the background
  // thread or an earlier call made it (null when its type has no packed layout, the CPU lacks
  // AVX-512 VNNI, or PENSIEVE_NO_PACK is set).
  const kernels::PackedMatrix* packed(int weight, ThreadPool* pool) const;
  bool packs(const Tensor& w) const;
  // Weight i in the form passes use, on the calling thread: a table of rows converted if its
  // loader deferred that, a matrix packed (returned; null when not packed).
  const kernels::PackedMatrix* prepare(size_t i) const {
    if (matmul_[i]) return packed(int(i), nullptr);
    ready(*weights_[i]);
    return nullptr;
  }

  ModelConfig cfg_;
  RopeTable rope_short_, rope_long_;
  std::vector<const Tensor*> weights_;
  std::vector<bool> matmul_;  // used by matmuls (not only as a table of rows)
  struct Packed {
    std::once_flag once;
    std::atomic<bool> ready{false};
    std::unique_ptr<kernels::PackedMatrix> matrix;
    bool dropped = false;  // the source's memory is gone: every read goes to `matrix`
  };
  // The packed copy of a weight whose source was dropped, else null (packs nothing).
  const kernels::PackedMatrix* dropped_source(int weight) const {
    const Packed& p = *packed_[size_t(weight)];
    return p.ready.load(std::memory_order_acquire) && p.dropped ? p.matrix.get() : nullptr;
  }
  std::vector<std::unique_ptr<Packed>> packed_;
  std::vector<std::vector<float>> vectors_;
  std::thread prep_;  // prepares (converts, packs) every weight once the load is done
  std::atomic<bool> stop_{false};
};

// After a matrix is packed its source is no longer read by matmuls: this drops this process's pages
// under [p, p + n) (whole pages inside it). Pages of a mapped file are re-read from the page cache if
// ever touched again, so the tensor stays valid and true is not returned. Anonymous memory (weights
// converted at load, such as MLX groups) would read back as zeros: that is only done, returning true,
// when `may_drop_anonymous`, and the caller then serves every other read from the packed copy.
bool release_source_pages(const void* p, size_t n, bool may_drop_anonymous) {
  const auto lo = reinterpret_cast<uintptr_t>(p), hi = lo + n;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, path;
    unsigned long inode = 0;
    in >> range >> perms >> offset >> dev >> inode >> path;
    const size_t dash = range.find('-');
    if (dash == std::string::npos) continue;
    const uintptr_t a = std::stoul(range.substr(0, dash), nullptr, 16);
    const uintptr_t b = std::stoul(range.substr(dash + 1), nullptr, 16);
    if (lo < a || lo >= b) continue;
    const bool file = inode != 0 && !path.empty() && path[0] == '/';
    if (hi > b || (!file && !may_drop_anonymous)) return false;
    return release_pages(p, n) && !file;
  }
  return false;
}

bool CpuBackend::packs(const Tensor& w) const {
  static const bool off = [] {
    const char* v = std::getenv("PENSIEVE_NO_PACK");
    return v && *v && std::string(v) != "0";
  }();
  return !off && cpu_features().use_vnni() && kernels::packable(w.type) && w.cols() % QK == 0;
}

const kernels::PackedMatrix* CpuBackend::packed(int weight, ThreadPool* pool) const {
  Packed& p = *packed_[size_t(weight)];
  std::call_once(p.once, [&] {
    const Tensor& w = ready(*weights_[size_t(weight)]);
    if (packs(w)) {
      if (pool) {
        p.matrix = kernels::pack_matrix(w, *pool);
      } else {
        ThreadPool one(1);
        p.matrix = kernels::pack_matrix(w, one);
      }
      p.dropped = release_source_pages(w.data, w.nbytes, true);
    }
    p.ready.store(true, std::memory_order_release);
  });
  return p.matrix.get();
}

void CpuBackend::finish_load() {
  bool any = false;
  for (size_t i = 0; i < weights_.size(); ++i) any = any || weights_[i]->fill || (matmul_[i] && packs(*weights_[i]));
  if (!any) return;
  // One thread, so a request that comes meanwhile keeps the pool; weights in the order they were
  // added, which is the order a pass reaches them.
  prep_ = std::thread([this] {
    const auto t0 = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (const kernels::PackedMatrix* m = prepare(i)) bytes += m->bytes();
    }
    spdlog::info("cpu: weights prepared in {:.2f} s ({:.0f} MB repacked for AVX-512 VNNI)",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), double(bytes) / 1e6);
  });
}

CpuPass::CpuPass(const CpuBackend& b, std::span<const PassSlot> slots, ThreadPool& pool)
    : b_(b), slots_(slots), pool_(pool) {}

void CpuPass::embed(int weight, std::span<const int32_t> ids, float* x) {
  const Tensor& w = ready(*b_.weights_[size_t(weight)]);
  const int64_t dim = w.cols();
  // A table that is also a matrix (tied embeddings) may be being packed, and its source dropped:
  // have that done first.
  if (b_.matmul_[size_t(weight)]) b_.packed(weight, &pool_);
  const kernels::PackedMatrix* p = b_.dropped_source(weight);
  for (size_t t = 0; t < ids.size(); ++t) {
    if (p) kernels::packed_row(*p, ids[t], x + t * dim);
    else kernels::get_row(w, ids[t], x + t * dim);
  }
}

void CpuPass::rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) {
  const float* weight = b_.vectors_[size_t(w)].data();
  for (int t = 0; t < rows; ++t)
    kernels::rmsnorm(x + size_t(t) * dim, weight, y + size_t(t) * dim, dim, eps);
}

void CpuPass::matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                     bool exact) {
  const kernels::PackedMatrix* p = b_.packed(weight, &pool_);
  const Tensor& w = ready(*b_.weights_[size_t(weight)]);
  if (exact) {
    if (b_.dropped_source(weight)) return kernels::matmul_exact_packed(*p, x, ldx, n_tok, y, ldy, pool_);
    return kernels::matmul_exact(w, x, ldx, n_tok, y, ldy, pool_);
  }
  if (p) return kernels::matmul_packed(*p, x, ldx, n_tok, y, ldy, pool_);
  kernels::matmul(w, x, ldx, n_tok, y, ldy, pool_);
}

void CpuPass::add_bias(float* y, int64_t ldy, int rows, int b) {
  const std::vector<float>& v = b_.vectors_[size_t(b)];
  for (int t = 0; t < rows; ++t)
    for (size_t i = 0; i < v.size(); ++i) y[size_t(t) * ldy + i] += v[i];
}

void CpuPass::rope_and_store_kv(int layer, float* qkv) {
  const ModelConfig& cfg = b_.cfg_;
  const int hd = cfg.head_dim, q_dim = cfg.n_heads * hd, kv_dim = cfg.n_kv_heads * hd;
  const int qkv_dim = q_dim + 2 * kv_dim;
  for (size_t t = 0; t < slots_.size(); ++t) {
    const PassSlot& s = slots_[t];
    const RopeTable& rope = s.long_rope ? b_.rope_long_ : b_.rope_short_;
    float* row = qkv + t * qkv_dim;
    rope.apply(row, cfg.n_heads, hd, s.pos);
    rope.apply(row + q_dim, cfg.n_kv_heads, hd, s.pos);
    const float* k = row + q_dim;
    const float* v = row + q_dim + kv_dim;
    const KvPool& kv = *s.seq->pool;
    const int bs = kv.block_size();
    const int block = s.seq->blocks[size_t(s.pos / bs)], off = s.pos % bs;
    if (kv.type() == KvType::F32) {
      std::memcpy(kv.key(block, layer, off), k, sizeof(float) * kv_dim);
      std::memcpy(kv.value(block, layer, off), v, sizeof(float) * kv_dim);
    } else if (kv.type() == KvType::Q8) {
      kv_store_q8(k, cfg.n_kv_heads, hd, kv.key(block, layer, off));
      kv_store_q8(v, cfg.n_kv_heads, hd, kv.value(block, layer, off));
    } else {
      kernels::f32_to_f16_row(k, static_cast<uint16_t*>(kv.key(block, layer, off)), kv_dim);
      kernels::f32_to_f16_row(v, static_cast<uint16_t*>(kv.value(block, layer, off)), kv_dim);
    }
  }
}

// Tasks are (token, head) pairs; with attend_group, (up to kAttnGroup consecutive tokens of one
// sequence, head) so that a prefill chunk's queries share each key and value row.
void CpuPass::attention(int layer, const float* qkv, float* out) {
  const AttnShape a(b_.cfg_);
  const int hd = a.hd, nh = a.nh, group = a.group, q_dim = a.q_dim, qkv_dim = a.qkv_dim;
  const float scale = a.scale;
  const int T = int(slots_.size());
  if (kernels::attend_group_available(hd)) return attention_groups(layer, qkv, out, a);
  pool_.parallel_for(int64_t(T) * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int t = int(task / nh), h = int(task % nh);
      const PassSlot& s = slots_[size_t(t)];
      const KvPool& kv = *s.seq->pool;
      const std::vector<int32_t>& table = s.seq->blocks;
      const KvType type = kv.type();
      const int bs = kv.block_size();
      const int start = a.first(s.pos);
      const float* q = qkv + size_t(t) * qkv_dim + size_t(h) * hd;
      const size_t koff = size_t(h / group) * hd;
      const size_t scale_at = kv_q8_scale_at(kv.kv_dim(), h / group);
      const int n = s.pos - start + 1;
      scores.resize(size_t(n));
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        const void* k = kv.key(table[size_t(p / bs)], layer, p % bs);
        if (type == KvType::F32)
          scores[size_t(j)] = scale * kernels::dot(static_cast<const float*>(k) + koff, q, hd);
        else if (type == KvType::Q8)
          scores[size_t(j)] =
              scale * kv_q8_scale(k, scale_at) * kernels::dot_i8(static_cast<const int8_t*>(k) + koff, q, hd);
        else
          scores[size_t(j)] = scale * kernels::dot_f16(static_cast<const uint16_t*>(k) + koff, q, hd);
      }
      kernels::softmax(scores.data(), n);
      float* o = out + size_t(t) * q_dim + size_t(h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        const void* v = kv.value(table[size_t(p / bs)], layer, p % bs);
        if (type == KvType::F32) kernels::axpy(scores[size_t(j)], static_cast<const float*>(v) + koff, o, hd);
        else if (type == KvType::Q8)
          kernels::axpy_i8(scores[size_t(j)] * kv_q8_scale(v, scale_at), static_cast<const int8_t*>(v) + koff, o,
                           hd);
        else kernels::axpy_f16(scores[size_t(j)], static_cast<const uint16_t*>(v) + koff, o, hd);
      }
    }
  });
}

void CpuPass::attention_groups(int layer, const float* qkv, float* out, const AttnShape& a) {
  const int hd = a.hd, nh = a.nh, group = a.group, q_dim = a.q_dim, qkv_dim = a.qkv_dim;
  const float scale = a.scale;
  const int T = int(slots_.size());
  // Groups: up to kAttnGroup consecutive tokens of one sequence at consecutive positions, with the
  // cache rows of every position they reach.
  struct Group {
    int t0, n, first;
    std::vector<const void*> keys, values;
  };
  std::vector<Group> groups;
  for (int t = 0; t < T;) {
    const PassSlot& s = slots_[size_t(t)];
    int n = 1;
    while (n < kernels::kAttnGroup && t + n < T && slots_[size_t(t + n)].seq == s.seq &&
           slots_[size_t(t + n)].pos == s.pos + n)
      ++n;
    Group g{t, n, a.first(s.pos), {}, {}};
    const int last = s.pos + n - 1;
    const KvPool& kv = *s.seq->pool;
    const int bs = kv.block_size();
    for (int p = g.first; p <= last; ++p) {
      const int block = s.seq->blocks[size_t(p / bs)];
      g.keys.push_back(kv.key(block, layer, p % bs));
      g.values.push_back(kv.value(block, layer, p % bs));
    }
    groups.push_back(std::move(g));
    t += n;
  }
  // Later positions cost more: threads take (group, head) tasks one at a time, most costly first,
  // rather than fixed halves.
  const int64_t tasks = int64_t(groups.size()) * nh;
  std::atomic<int64_t> next{0};
  pool_.run([&](int, int) {
    std::vector<float> scores;
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
      const int64_t task = tasks - 1 - i;
      const Group& g = groups[size_t(task / nh)];
      const int h = int(task % nh);
      kernels::AttnQuery qs[kernels::kAttnGroup];
      for (int i = 0; i < g.n; ++i) {
        const int t = g.t0 + i, pos = slots_[size_t(t)].pos;
        qs[i] = {qkv + size_t(t) * qkv_dim + size_t(h) * hd, out + size_t(t) * q_dim + size_t(h) * hd,
                 a.first(pos), pos};
      }
      const KvPool& kv = *slots_[size_t(g.t0)].seq->pool;
      const kernels::AttnRows rows{g.keys.data(), g.values.data(), g.first, kv.type(), int64_t(h / group) * hd,
                                   int64_t(kv_q8_scale_at(kv.kv_dim(), h / group))};
      kernels::attend_group(qs, g.n, rows, hd, scale, scores);
    }
  });
}

}  // namespace

std::shared_ptr<Backend> make_cpu_backend(const ModelConfig& cfg) {
  return std::make_shared<CpuBackend>(cfg);
}

}  // namespace pensieve
