// `pensieve quantize IN.gguf OUT.gguf TYPE`: re-type a GGUF model's weights by a recipe (also from
// an already quantized file), keeping its tokenizer and chat template.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/command.h"
#include "formats/model_export.h"
#include "util/cpu.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

struct QuantizeArgs {
  std::string in, out, type;
  int threads = 0;
};

int run_quantize(const QuantizeArgs& a) {
  const auto recipe = quant_recipe(a.type);
  if (!recipe) throw Error("TYPE: unknown type '" + a.type + "' (known: " + quant_recipe_names() + ")");
  if (std::filesystem::exists(a.out) && std::filesystem::equivalent(a.in, a.out))
    throw Error(a.out + ": output would overwrite the input");
  const auto t0 = std::chrono::steady_clock::now();
  const LoadedModel m = load_model(a.in);
  if (!m.gguf) throw Error(a.in + ": not a GGUF file (use `pensieve convert` for folders)");
  // Everything but what the writer derives itself (architecture keys, file type, alignment).
  const std::string arch_prefix = std::string(arch_name(m.config.arch)) + ".";
  auto keep = [&](GgufWriter& w) {
    for (const auto& [key, value] : m.gguf->metadata()) {
      if (key.rfind(arch_prefix, 0) == 0 || key == "general.file_type" ||
          key == "general.quantization_version" || key == "general.alignment")
        continue;
      w.set(key, value);
    }
  };
  write_model_gguf(m, *recipe, a.out, keep, a.threads > 0 ? a.threads : physical_core_count());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s (%s, %.1f MB) in %.2f s\n", a.out.c_str(), recipe->name.c_str(),
               double(std::filesystem::file_size(a.out)) / 1e6, secs);
  return 0;
}

const CommandRegistrar quantize_command(
    "quantize", "Re-type a GGUF model's weights (e.g. F16 -> Q4_K_M)",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<QuantizeArgs>();
      sub.add_option("IN", a->in, "Input .gguf file")->required();
      sub.add_option("OUT", a->out, "Output .gguf file")->required();
      sub.add_option("TYPE", a->type, "Weight type: " + quant_recipe_names())->required();
      sub.add_option("--threads", a->threads, "Threads (default: physical cores)");
      return [a] { return run_quantize(*a); };
    });

}  // namespace
}  // namespace pensieve::cli
