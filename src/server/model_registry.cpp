#include "server/model_registry.h"

namespace pensieve::server {

bool alias_matches(const std::string& alias, const std::string& name) {
  if (!alias.empty() && alias.back() == '*')
    return name.compare(0, alias.size() - 1, alias, 0, alias.size() - 1) == 0;
  return alias == name;
}

void ModelRegistry::add(ModelEntry entry) { entries_.push_back(std::move(entry)); }

const ModelEntry* ModelRegistry::find_id(const std::string& id) const {
  for (const auto& e : entries_)
    if (e.model->id() == id) return &e;
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

}  // namespace pensieve::server
