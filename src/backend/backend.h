// The seam under the forward pass. Model::forward_batch is written once against these ops; a
// backend (the CPU kernels, or the CUDA one) decides where weights, activations and keys/values live
// and how each op runs. The model and the scheduler never learn which backend runs.
//
// A Backend is made for one model (its config) and holds that model's weights in its own memory:
// add_weight/add_vector are called once per tensor at load. A forward pass opens a BackendPass,
// which owns the pass's activation buffers; pointers a pass hands out (buffer()) point into the
// backend's memory (host for the CPU, device for CUDA) and are only passed back to the same pass.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "kernels/tensor.h"
#include "util/thread_pool.h"

namespace pensieve {

struct SequenceState;

// One token of a pass: its sequence (block table, KV pool), its position, and whether LongRoPE's
// long factors apply to it.
struct PassSlot {
  SequenceState* seq;
  int pos;
  bool long_rope;
  // The token at this position, when the pass's embed() will be given it (-1: not known): a GPU
  // backend uploads it with the pass's metadata, so that a decode step needs one upload.
  int32_t token = -1;
};

// The activation buffers of a pass, by role.
enum class Act { X, XN, Tmp, QKV, Att, FFB, Logits };

class BackendPass {
 public:
  virtual ~BackendPass() = default;
  // A buffer of at least n floats for `role`, valid until the pass ends (contents kept while the
  // same role is asked again with no larger n).
  virtual float* buffer(Act role, size_t n) = 0;

  // x[t] = row ids[t] of the embedding matrix.
  virtual void embed(int weight, std::span<const int32_t> ids, float* x) = 0;
  // y[r] = rmsnorm(x[r]) * w for `rows` consecutive rows of `dim` floats.
  virtual void rmsnorm(const float* x, int w, float* y, int rows, int dim, float eps) = 0;
  // y[t * ldy + r] = sum_c W[r, c] x[t * ldx + c]; exact: float32 activations.
  virtual void matmul(int weight, const float* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                      bool exact) = 0;
  // y[r * ldy + i] += b[i] for r < rows.
  virtual void add_bias(float* y, int64_t ldy, int rows, int b) = 0;
  // Rotates every slot's q and k (rows of qkv_dim floats: q, k, v) in place and writes k and v into
  // the slot's KV cache at (layer, pos).
  virtual void rope_and_store_kv(int layer, float* qkv) = 0;
  // Causal attention of each slot over its own sequence's cache (positions up to its own).
  virtual void attention(int layer, const float* qkv, float* out) = 0;
  virtual void add(float* x, const float* y, size_t n) = 0;  // x += y
  // For each of `rows` rows of 2*ff floats: gate = silu(gate) * up (gate first, up second).
  virtual void silu_mul(float* rows_gate_up, int rows, int ff) = 0;
  // Copies n floats of a pass buffer to host memory; ends the pass's device work.
  virtual void read(const float* src, float* host, size_t n) = 0;
  // Copies n floats from host memory into a pass buffer (tests, tools).
  virtual void write(float* dst, const float* host, size_t n) = 0;
};

// How passes use a weight: as a matrix (matmul), as a table of rows (embed), or both (tied
// embeddings).
enum class WeightUse { Matmul, Rows, Both };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"

  // Registers a weight (matrix, embedding) or a float32 vector (norm weight, bias); returns its id.
  virtual int add_weight(const Tensor& t, WeightUse use) = 0;
  // Registers the rows of `parts` (matrices of one type and width) as one matrix, the parts' rows
  // in order, where the backend can hold them so at no cost (-1: it cannot; add them one by one).
  // A pass then runs one matmul where it would run one a part (e.g. separate q, k and v, or gate
  // and up, as one GEMV that can also take the RoPE or silu_mul after it).
  virtual int add_stacked(std::span<const Tensor* const> /*parts*/, WeightUse /*use*/) { return -1; }
  virtual int add_vector(std::vector<float> v) = 0;
  // Called once after every weight is added (uploads, reports memory, or starts preparing the
  // weights in the background).
  virtual void finish_load() {}
  // Blocks until the weights are in the form passes use (no-op where finish_load leaves nothing
  // running); passes never need it, they wait for just the weights they touch.
  virtual void wait_prepared() const {}

  // Opens a pass over `slots` (one per token, in order). The CPU backend runs its kernels on
  // `pool`; passes on one backend may run from several threads (a GPU backend serialises them).
  virtual std::unique_ptr<BackendPass> begin_pass(std::span<const PassSlot> slots, ThreadPool& pool) const = 0;

  // Where the backend holds a weight and how many bytes a matmul over it reads, when that is not
  // the tensor as loaded (e.g. a repacked copy); empty otherwise. The bandwidth probe reads these.
  virtual std::span<const uint8_t> weight_region(int /*weight*/) const { return {}; }

  // Passes a GPU backend replayed from a recorded graph, and of those, how many it launched as soon
  // as their token ids were up, before their ops were recorded (a pass shaped as the one before),
  // and how many of those turned out to be another pass's graph and ran again.
  struct LaunchStats {
    int64_t graph_passes = 0, early = 0, early_wasted = 0;
  };
  virtual LaunchStats launch_stats() const { return {}; }

  // Bytes of device memory held (weights, KV pools, workspace); 0 for the CPU.
  virtual size_t device_bytes() const { return 0; }
  virtual std::string memory_report() const { return {}; }

  // Host memory for what passes read back (BackendPass::read's destination, the logits): page-locked
  // on a GPU, so that the copy runs at the bus's speed with no staging copy. free_host takes what
  // alloc_host returned.
  virtual void* alloc_host(size_t bytes) const;
  virtual void free_host(void* p) const;
};

// A host buffer of floats from Backend::alloc_host that grows as needed (a step's logits); its
// contents are undefined after get() grows it. The backend must outlive it.
class HostFloats {
 public:
  explicit HostFloats(const Backend& b) : backend_(&b) {}
  HostFloats(const HostFloats&) = delete;
  HostFloats& operator=(const HostFloats&) = delete;
  ~HostFloats() {
    if (data_) backend_->free_host(data_);
  }
  float* get(size_t n);  // room for at least n floats

 private:
  const Backend* backend_;
  float* data_ = nullptr;
  size_t size_ = 0;
};

std::shared_ptr<Backend> make_cpu_backend(const ModelConfig& cfg);

// Which backend a `--device` string picks: "cpu", "cuda", "cuda:N" or "auto" (a visible CUDA GPU
// whose free memory holds `weight_bytes` plus room to work, else the CPU; the choice is logged).
// Throws Error for a malformed string, or "cuda" on a build or machine without a usable GPU.
struct DeviceChoice {
  bool cuda = false;
  int index = 0;
};
DeviceChoice parse_device(const std::string& device);
std::shared_ptr<Backend> make_backend(const std::string& device, const ModelConfig& cfg,
                                      size_t weight_bytes);

}  // namespace pensieve
