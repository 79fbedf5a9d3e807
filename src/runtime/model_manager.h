// Which models are loaded: a server names many models and keeps some of them in memory. A request
// acquires a lease on its model, loading it first when needed (that caller waits; requests for
// loaded models go on). Loaded models are unloaded least-recently-used when max_loaded_models or
// max_model_memory would be exceeded, and after keep_alive of idleness. A lease keeps its model
// alive (shared ownership): an unloaded model that a request still uses is freed when that
// request ends, never under it.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generator.h"

namespace pensieve {

class GenerationService;

// What the manager needs of a loaded model.
class ManagedModel {
 public:
  virtual ~ManagedModel() = default;
  virtual GenerationService& service() const = 0;
  virtual uint64_t memory_bytes() const { return 0; }  // weights + KV cache; 0 when unknown
};

struct ModelSource {
  std::string name;  // what requests call it
  std::string path;  // a .gguf file or a model folder
  EngineOptions options;
  std::optional<std::chrono::milliseconds> keep_alive;  // nullopt: ModelLimits::keep_alive
};

struct ModelLimits {
  int max_loaded_models = 0;             // 0: no limit
  uint64_t max_model_memory_bytes = 0;   // 0: no limit
  std::chrono::milliseconds keep_alive{-1};  // idle time before unloading; negative: never
};

struct LoadedModelInfo {
  std::string name;
  uint64_t memory_bytes = 0;
  int64_t loaded_unix = 0;
  int in_use = 0;                      // leases held now
  std::optional<int64_t> expires_unix;  // when keep_alive unloads it (none while in use or kept forever)
  bool pinned = false;
};

struct ModelCounters {
  int64_t loads = 0, load_failures = 0;
  std::map<std::string, int64_t> unloads;  // by reason: "lru", "memory", "expired"
};

// "5m", "30s", "1h30m", "250ms", "-1" (forever), "0" (unload after the request), or plain seconds.
// Error naming the text when it is none of these.
std::chrono::milliseconds parse_keep_alive(std::string_view text);

class ModelManager;

// A model held for one use. Movable; releasing it (destruction) records the model's last use.
class ModelLease {
 public:
  ModelLease() = default;
  ModelLease(ModelLease&& o) noexcept = default;
  ModelLease& operator=(ModelLease&& o) noexcept;
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;
  ~ModelLease();
  explicit operator bool() const { return model_ != nullptr; }
  const std::shared_ptr<ManagedModel>& model() const { return model_; }

 private:
  friend class ModelManager;
  struct Holder;
  std::shared_ptr<Holder> holder_;
  std::shared_ptr<ManagedModel> model_;
};

class ModelManager {
 public:
  using Loader = std::function<std::shared_ptr<ManagedModel>(const ModelSource&)>;
  ModelManager(Loader loader, ModelLimits limits);
  ~ModelManager();  // stops the keep_alive timer; loaded models go with the last lease
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // A model that may be loaded on demand. Error when the name is taken.
  void add_source(ModelSource source);
  // A model loaded elsewhere, served as it is and never unloaded.
  void add_loaded(const std::string& name, std::shared_ptr<ManagedModel> model);
  bool contains(const std::string& name) const;

  // The model, loading it first when it is not loaded (blocks while it loads; a load already under
  // way is waited for, not repeated). `keep_alive` overrides the model's for its next idle period.
  // Error for an unknown name, or the loader's Error when the load fails.
  ModelLease acquire(const std::string& name, std::optional<std::chrono::milliseconds> keep_alive = {});
  // The same without loading: an empty lease when the model is not loaded now.
  ModelLease try_acquire(const std::string& name, std::optional<std::chrono::milliseconds> keep_alive = {});

  std::vector<LoadedModelInfo> loaded() const;
  std::vector<std::shared_ptr<ManagedModel>> loaded_models() const;
  std::map<std::string, ModelCounters> counters() const;
  const ModelLimits& limits() const;

 private:
  friend class ModelLease;
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace pensieve
