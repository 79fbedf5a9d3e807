// `pensieve list`: the models in the local store (name, size, quantization, context, date).
#include <cstdio>

#include "cli/command.h"
#include "cli/model_facts.h"
#include "hub/model_store.h"

namespace pensieve::cli {
namespace {

int run_list() {
  hub::ModelStore store(hub::ModelStore::default_root());
  std::vector<std::string> problems;
  const auto models = store.list(&problems);
  for (const auto& p : problems) std::fprintf(stderr, "warning: %s\n", p.c_str());
  if (models.empty()) {
    std::printf("no models in %s (get one with `pensieve pull OWNER/NAME[:QUANT]`)\n", store.root().c_str());
    return 0;
  }
  std::printf("%-56s %10s %-12s %8s  %s\n", "NAME", "SIZE", "QUANT", "CONTEXT", "PULLED");
  for (const auto& m : models) {
    std::string context = "?";
    try {
      if (int c = read_model_facts(m.load_path().string()).context; c > 0) context = std::to_string(c);
    } catch (const std::exception&) {
      context = "unreadable";
    }
    std::printf("%-56s %7.2f GB %-12s %8s  %s\n", m.name.c_str(), double(m.size_bytes()) / 1e9, m.quant.c_str(),
                context.c_str(), m.pulled_at.c_str());
  }
  return 0;
}

const CommandRegistrar list_command{"list", "List the models in the local store ($PENSIEVE_MODELS)",
                                 [](CLI::App&) -> std::function<int()> { return [] { return run_list(); }; }};

}  // namespace
}  // namespace pensieve::cli
