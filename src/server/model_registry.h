// The models a server answers for, and which one a requested name means: a model's id, one of its
// configured aliases, or (by default) any `claude-*` name for the default model. Which of them are
// loaded is the runtime's ModelManager's business: this registry names them and hands out leases.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model_manager.h"
#include "server/served_model.h"

namespace pensieve::server {

struct ModelEntry {
  std::string id;
  std::vector<std::string> aliases;  // exact names, or prefixes ending in '*'
  std::string path;                  // "" for a model handed over loaded
  int64_t created_unix = 0;          // when its file was written
};

// A model that is already loaded (tests, or a server handed instances): served, never unloaded.
struct LoadedModel {
  std::shared_ptr<ServedModel> model;
  std::vector<std::string> aliases;
};

// A ServedModel held for one request.
struct ServedLease {
  ModelLease lease;
  std::shared_ptr<ServedModel> model;
  explicit operator bool() const { return model != nullptr; }
};

class ModelRegistry {
 public:
  // Loads ServedModels through `loader` within `limits`.
  using Loader = std::function<std::shared_ptr<ServedModel>(const ModelSource&)>;
  explicit ModelRegistry(bool claude_names_to_default = true, Loader loader = nullptr, ModelLimits limits = {});

  void add(LoadedModel loaded);  // the first added (of either kind) is the default
  void add_source(ModelSource source, std::vector<std::string> aliases);
  const std::vector<ModelEntry>& entries() const { return entries_; }
  // nullptr when no model answers to `name`.
  const ModelEntry* resolve(const std::string& name) const;
  const ModelEntry* find_id(const std::string& id) const;

  // The entry's model if it is loaded now (no waiting), else empty.
  ServedLease try_acquire(const ModelEntry& e, std::optional<std::chrono::milliseconds> keep_alive = {}) const;
  // The entry's model, loaded first if needed (blocks); Error when the load fails.
  ServedLease acquire(const ModelEntry& e, std::optional<std::chrono::milliseconds> keep_alive = {}) const;

  std::vector<std::shared_ptr<ServedModel>> loaded_models() const;
  ModelManager& manager() const { return *manager_; }

 private:
  bool claude_names_to_default_;
  std::vector<ModelEntry> entries_;
  std::shared_ptr<ModelManager> manager_;
};

bool alias_matches(const std::string& alias, const std::string& name);

}  // namespace pensieve::server
