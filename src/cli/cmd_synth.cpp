// `pensieve synth`: a GGUF (or an MLX folder) with a real model shape, a real tokenizer and random
// weights, for benchmarks (full-size presets) and tests (`tiny`).
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/command.h"
#include "formats/gguf_export.h"
#include "formats/synth.h"
#include "util/error.h"

namespace pensieve::cli {
namespace {

struct SynthArgs {
  std::string preset, arch, type = "f16", vocab, out, format = "gguf";
  int bits = 4, group_size = 64;
  int layers = 0, dim = 0, ff = 0, heads = 0, kv_heads = 0, ctx = 4096, threads = 0;
  uint64_t seed = 1;
};

int run_synth(const SynthArgs& a) {
  SynthOptions o;
  if (!a.preset.empty()) {
    if (!a.arch.empty()) throw Error("give either --preset or --arch, not both");
    o.config = synth_preset(a.preset);
  } else {
    if (a.arch.empty()) throw Error("give --preset NAME or --arch with the model sizes");
    if (a.layers <= 0 || a.dim <= 0 || a.ff <= 0 || a.heads <= 0)
      throw Error("--arch needs positive --layers, --dim, --ff and --heads");
    o.config = synth_custom(a.arch, a.layers, a.dim, a.ff, a.heads, a.kv_heads, a.ctx);
  }
  o.type = a.type;
  o.vocab_path = a.vocab;
  o.seed = a.seed;
  o.threads = a.threads;
  if (a.format != "gguf" && a.format != "mlx") throw Error("--format: expected gguf or mlx, not '" + a.format + "'");
  const bool mlx = a.format == "mlx";
  if (a.vocab.empty())
    std::fprintf(stderr, "note: no --vocab given; the %s will have no tokenizer\n", mlx ? "folder" : "file");
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig c = mlx ? write_synthetic_mlx_folder(o, SynthMlx{a.bits, a.group_size}, a.out)
                            : write_synthetic_model(o, a.out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uintmax_t bytes = 0;
  if (mlx) {
    for (const auto& e : std::filesystem::directory_iterator(a.out))
      if (e.is_regular_file()) bytes += e.file_size();
  } else {
    bytes = std::filesystem::file_size(a.out);
  }
  const std::string what = mlx ? "MLX " + std::to_string(a.bits) + "-bit, group " + std::to_string(a.group_size) : a.type;
  std::fprintf(stderr, "wrote %s: %s, %d layers, dim %d, vocab %d, %s, %.1f MB in %.2f s\n",
               a.out.c_str(), arch_name(c.arch), c.n_layers, c.dim, c.n_vocab, what.c_str(), double(bytes) / 1e6,
               secs);
  return 0;
}

const CommandRegistrar synth_command(
    "synth", "Write a GGUF with a real model shape and tokenizer and random weights",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<SynthArgs>();
      std::string presets;
      for (const auto& n : synth_preset_names()) presets += (presets.empty() ? "" : ", ") + n;
      sub.add_option("--preset", a->preset, "Model shape: " + presets);
      sub.add_option("--arch", a->arch, "Custom shape: llama, phi3 or qwen2");
      sub.add_option("--layers", a->layers, "Custom shape: transformer blocks");
      sub.add_option("--dim", a->dim, "Custom shape: embedding length");
      sub.add_option("--ff", a->ff, "Custom shape: feed-forward length");
      sub.add_option("--heads", a->heads, "Custom shape: attention heads");
      sub.add_option("--kv-heads", a->kv_heads, "Custom shape: KV heads (default: --heads)");
      sub.add_option("--ctx", a->ctx, "Custom shape: context length")->capture_default_str();
      sub.add_option("--type", a->type, "Weight type: " + quant_recipe_names())->capture_default_str();
      sub.add_option("--vocab", a->vocab, "Vocabulary GGUF whose tokenizer and chat template are copied (MLX: a tokenizer.json or its folder)");
      sub.add_option("--format", a->format, "gguf, or mlx (a folder as mlx-community ships)")->capture_default_str();
      sub.add_option("--bits", a->bits, "MLX: bits per weight, 4 or 8")->capture_default_str();
      sub.add_option("--group-size", a->group_size, "MLX: weights per scale and bias (a multiple of 32)")->capture_default_str();
      sub.add_option("--out", a->out, "Output .gguf file (MLX: folder)")->required();
      sub.add_option("--seed", a->seed, "Random seed")->capture_default_str();
      sub.add_option("--threads", a->threads, "Threads (default: all)");
      return [a] { return run_synth(*a); };
    });

}  // namespace
}  // namespace pensieve::cli
