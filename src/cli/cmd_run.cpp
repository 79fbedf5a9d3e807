// `pensieve run`: one-shot generation from a prompt or a chat message, streamed to stdout.
#include <cstdio>

#include "cli/command.h"
#include "runtime/demo_model.h"
#include "runtime/generator.h"
#include "util/process_stats.h"

namespace pensieve::cli {
namespace {

struct RunOptions {
  std::string model, prompt, chat, system, chat_template;
  int max_tokens = 256;
  float temperature = 0.8f, top_p = 0.95f, min_p = 0.05f, repeat_penalty = 1.0f;
  int top_k = 40;
  uint64_t seed = 0;
  int threads = 0;
  int context = 0;
  std::string device = "cpu", kv_cache_type = "f16";
  std::vector<std::string> stop;
  bool metrics = false;
};

int run(const RunOptions& o) {
  EngineOptions eo;
  eo.threads = o.threads;
  eo.context = o.context;
  eo.chat_template_file = o.chat_template;
  eo.device = o.device;
  eo.kv_type = parse_kv_type(o.kv_cache_type);
  const std::string path = o.model.empty() ? demo_model_path() : o.model;
  auto inst = ModelInstance::load(path, eo);

  GenerateRequest req;
  if (!o.chat.empty()) {
    ChatPrompt chat;
    if (!o.system.empty()) chat.messages.push_back({"system", o.system, {}, {}});
    chat.messages.push_back({"user", o.chat, {}, {}});
    req.prompt = inst->chat_tokens(chat);
  } else {
    req.prompt = inst->text_tokens(o.prompt, true);
  }
  req.max_tokens = o.max_tokens;
  req.stop_strings = o.stop;
  req.sampling.temperature = o.temperature;
  req.sampling.top_p = o.top_p;
  req.sampling.top_k = o.top_k;
  req.sampling.min_p = o.min_p;
  req.sampling.repetition_penalty = o.repeat_penalty;
  req.sampling.seed = o.seed;
  const GenerateResult r = inst->generate(req, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  if (o.metrics) {
    std::fprintf(stderr,
                 "load: %.3f s\nprompt tokens: %d\nprefill: %.2f tok/s\ngenerated tokens: %d\n"
                 "decode: %.2f tok/s\nstop: %s\npeak RSS: %.1f MB\n",
                 inst->load_seconds(), r.prompt_tokens,
                 r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0, r.completion_tokens,
                 decode_tokens_per_second(r.completion_tokens, r.decode_seconds),
                 stop_reason_name(r.reason), double(peak_rss_bytes()) / 1e6);
  }
  return 0;
}

const CommandRegistrar run_command("run", "Generate text from a prompt or a chat message", [](CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  app.add_option("--model", o->model, "Model: .gguf file or safetensors/MLX folder (default: built-in demo)");
  auto* p = app.add_option("--prompt", o->prompt, "Raw text prompt (no chat template)");
  auto* c = app.add_option("--chat", o->chat, "A user message, formatted with the model's chat template");
  p->excludes(c);
  app.add_option("--system", o->system, "System prompt for --chat")->needs(c);
  app.add_option("--chat-template", o->chat_template, "A chat template file (Jinja) to use instead of the model's own");
  app.add_option("--max-tokens", o->max_tokens, "Maximum tokens to generate")->check(CLI::PositiveNumber);
  app.add_option("--temperature", o->temperature, "Sampling temperature (0 = greedy)")->check(CLI::Range(0.0, 2.0));
  app.add_option("--top-p", o->top_p, "Nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  app.add_option("--top-k", o->top_k, "Keep the K most likely tokens (0 = off)")->check(CLI::NonNegativeNumber);
  app.add_option("--min-p", o->min_p, "Drop tokens below min-p x the best probability")->check(CLI::Range(0.0, 1.0));
  app.add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty (1 = off)");
  app.add_option("--seed", o->seed, "Random seed for reproducible sampling (0 = random)");
  app.add_option("--threads", o->threads, "Threads (default: physical cores)");
  app.add_option("--ctx", o->context, "Context length (default: min(trained, 4096))");
  app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N (default cpu)");
  app.add_option("--kv-cache-type", o->kv_cache_type, "What the KV cache holds: f16 (default), f32, or q8 (int8 with a scale a head row: half the memory of f16)")
      ->check(CLI::IsMember({"f16", "f32", "q8"}));
  app.add_option("--stop", o->stop, "Stop string (repeatable)");
  app.add_flag("--metrics", o->metrics, "Print load time, token counts, speeds and peak RSS to stderr");
  return [o, p, c] {
    if (p->count() == 0 && c->count() == 0) throw CLI::RequiredError("--prompt or --chat");
    return run(*o);
  };
});

}  // namespace
}  // namespace pensieve::cli
