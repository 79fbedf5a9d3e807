// `pensieve rm NAME`: removes a model from the local store (files another pulled model of the same
// repository still uses are kept).
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "hub/model_store.h"

namespace pensieve::cli {
namespace {

const CommandRegistrar rm_command{
    "rm", "Remove a model from the local store", [](CLI::App& sub) -> std::function<int()> {
      auto names = std::make_shared<std::vector<std::string>>();
      sub.add_option("name", *names, "Model name as `pensieve list` shows it")->required();
      return [names] {
        hub::ModelStore store(hub::ModelStore::default_root());
        for (const auto& n : *names) {
          const hub::StoredModel m = store.remove(n);
          std::printf("removed %s\n", m.name.c_str());
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace pensieve::cli
