// `pensieve show NAME|PATH`: a model's architecture, parameters, quantization, context, chat
// template family and licence, from its metadata.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "cli/model_facts.h"
#include "hub/model_store.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

int run_show(const std::string& name) {
  hub::ModelStore store(hub::ModelStore::default_root());
  std::string path = name, quant;
  if (auto m = store.find(name)) {
    path = m->load_path().string();
    quant = m->quant;
    std::printf("name          %s\nsource        %s/%s (revision %s)\npulled        %s\nfiles         %zu, %.2f GB in %s\n",
                m->name.c_str(), m->source.c_str(), m->repo.c_str(), m->revision.c_str(), m->pulled_at.c_str(),
                m->files.size(), double(m->size_bytes()) / 1e9, m->dir.c_str());
  } else if (!std::filesystem::exists(name)) {
    throw Error("no model named '" + name + "' in the store (" + store.root().string() + ") and no such file");
  }
  const ModelFacts f = read_model_facts(path);
  const bool billions = f.parameters >= 1000000000ull;
  std::printf("architecture  %s\nparameters    %.2f %s (%llu)\n", f.architecture.empty() ? "?" : f.architecture.c_str(),
              double(f.parameters) / (billions ? 1e9 : 1e6), billions ? "B" : "M",
              static_cast<unsigned long long>(f.parameters));
  if (!quant.empty()) std::printf("quantization  %s\n", quant.c_str());
  std::printf("context       %d\ntemplate      %s\n", f.context, f.template_family.c_str());
  if (!f.license.empty()) std::printf("license       %s\n", f.license.c_str());
  return 0;
}

const CommandRegistrar show_command{
    "show", "Describe a model of the store (or a model file)", [](CLI::App& sub) -> std::function<int()> {
      auto name = std::make_shared<std::string>();
      sub.add_option("name", *name, "Model name as `pensieve list` shows it, or a path")->required();
      return [name] { return run_show(*name); };
    }};

}  // namespace
}  // namespace pensieve::cli
