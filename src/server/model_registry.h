// The models a server answers for, and which one a requested name means: a model's id, one of its
// configured aliases, or (by default) any `claude-*` name for the default model.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "server/served_model.h"

namespace pensieve::server {

struct ModelEntry {
  std::shared_ptr<ServedModel> model;
  std::vector<std::string> aliases;  // exact names, or prefixes ending in '*'
};

class ModelRegistry {
 public:
  explicit ModelRegistry(bool claude_names_to_default = true)
      : claude_names_to_default_(claude_names_to_default) {}
  void add(ModelEntry entry);  // the first added is the default
  const std::vector<ModelEntry>& entries() const { return entries_; }
  // nullptr when no model answers to `name`.
  const ModelEntry* resolve(const std::string& name) const;
  const ModelEntry* find_id(const std::string& id) const;

 private:
  bool claude_names_to_default_;
  std::vector<ModelEntry> entries_;
};

bool alias_matches(const std::string& alias, const std::string& name);

}  // namespace pensieve::server
