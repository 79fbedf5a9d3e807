#include "server/model_registry.h"

#include <sys/stat.h>

#include "util/error.h"

namespace pensieve::server {

bool alias_matches(const std::string& alias, const std::string& name) {
  if (!alias.empty() && alias.back() == '*')
    return name.compare(0, alias.size() - 1, alias, 0, alias.size() - 1) == 0;
  return alias == name;
}

ModelRegistry::ModelRegistry(bool claude_names_to_default, Loader loader, ModelLimits limits)
    : claude_names_to_default_(claude_names_to_default) {
  ModelManager::Loader load;
  if (loader)
    load = [loader](const ModelSource& s) -> std::shared_ptr<ManagedModel> { return loader(s); };
  else
    load = [](const ModelSource& s) -> std::shared_ptr<ManagedModel> {
      throw Error("model '" + s.name + "' cannot be loaded here (no loader)");
    };
  manager_ = std::make_shared<ModelManager>(std::move(load), limits);
}

void ModelRegistry::add(LoadedModel loaded) {
  const std::string id = loaded.model->id();
  manager_->add_loaded(id, loaded.model);
  entries_.push_back({id, std::move(loaded.aliases), "", loaded.model->created_unix()});
}

void ModelRegistry::add_source(ModelSource source, std::vector<std::string> aliases) {
  ModelEntry e{source.name, std::move(aliases), source.path, 0};
  struct stat st {};
  if (::stat(source.path.c_str(), &st) == 0) e.created_unix = st.st_mtime;
  manager_->add_source(std::move(source));
  entries_.push_back(std::move(e));
}

const ModelEntry* ModelRegistry::find_id(const std::string& id) const {
  for (const auto& e : entries_)
    if (e.id == id) return &e;
  return nullptr;
}

const ModelEntry* ModelRegistry::resolve(const std::string& name) const {
  if (const ModelEntry* e = find_id(name)) return e;
  for (const auto& e : entries_)
    for (const auto& a : e.aliases)
      if (alias_matches(a, name)) return &e;
  if (claude_names_to_default_ && !entries_.empty() && name.rfind("claude-", 0) == 0)
    return &entries_.front();
  return nullptr;
}

namespace {

// Every model the manager holds for this registry came from its loader or add(): ServedModels.
ServedLease served(ModelLease lease) {
  ServedLease s;
  s.model = std::static_pointer_cast<ServedModel>(lease.model());
  s.lease = std::move(lease);
  return s;
}

}  // namespace

ServedLease ModelRegistry::try_acquire(const ModelEntry& e, std::optional<std::chrono::milliseconds> keep_alive) const {
  ModelLease l = manager_->try_acquire(e.id, keep_alive);
  if (!l) return {};
  return served(std::move(l));
}

ServedLease ModelRegistry::acquire(const ModelEntry& e, std::optional<std::chrono::milliseconds> keep_alive) const {
  return served(manager_->acquire(e.id, keep_alive));
}

std::vector<std::shared_ptr<ServedModel>> ModelRegistry::loaded_models() const {
  std::vector<std::shared_ptr<ServedModel>> out;
  for (auto& m : manager_->loaded_models()) out.push_back(std::static_pointer_cast<ServedModel>(m));
  return out;
}

}  // namespace pensieve::server
