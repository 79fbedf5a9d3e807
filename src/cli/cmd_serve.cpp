// `pensieve serve`: the Anthropic Messages API and OpenAI chat completions over HTTP. Settings come
// from pensieve.toml, then PENSIEVE_* variables, then these flags. The listener starts first (so
// /health answers 503 while loading); models load on a separate thread and are published together.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include "backend/backend.h"
#include "cli/command.h"
#include "hub/model_store.h"
#include "runtime/model_manager.h"
#include "runtime/demo_model.h"
#include "server/http_server.h"
#include "server/model_instance_adapter.h"
#include "server/server_context.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace pensieve::cli {
namespace {

using namespace pensieve::server;

struct ServeFlags {
  std::vector<std::string> models, api_keys, aliases;
  std::string config, host, api_key_file, state_dir, id, chat_template, device, kv_cache_type;
  std::optional<int> port, max_output_tokens, max_waiting, max_running, max_batch_tokens, request_timeout_ms,
      context, threads;
  std::optional<double> kv_cache_gb;
  std::optional<int> max_connections, header_timeout_ms, idle_timeout_ms, max_header_bytes, max_requests_per_key;
  std::optional<int64_t> max_body_bytes;
  std::optional<int> max_loaded_models;
  std::optional<double> max_model_memory_gb;
  std::string keep_alive;
  bool allow_no_auth = false, print_config = false;
};

std::vector<hub::StoredModel> store_models() {
  try {
    return hub::ModelStore(hub::ModelStore::default_root()).list();
  } catch (const Error& e) {
    spdlog::warn("the model store cannot be read: {}", e.what());
    return {};
  }
}

// `serve_store` is set when no model was configured: then every model of the store is served too.
ServerConfig effective_config(const ServeFlags& f, bool* serve_store = nullptr) {
  ServerConfig cfg;
  std::string config_file = f.config;
  if (config_file.empty())
    if (const char* env = std::getenv("PENSIEVE_CONFIG")) config_file = env;
  if (!config_file.empty()) load_config_file(cfg, config_file);
  apply_environment(cfg);
  if (!f.host.empty()) cfg.host = f.host;
  if (f.port) cfg.port = *f.port;
  if (!f.api_keys.empty()) cfg.api_keys = f.api_keys;
  if (!f.api_key_file.empty()) cfg.api_key_file = f.api_key_file;
  if (f.allow_no_auth) cfg.allow_no_auth = true;
  if (!f.state_dir.empty()) cfg.state_dir = f.state_dir;
  if (f.max_output_tokens) cfg.max_output_tokens = *f.max_output_tokens;
  if (f.max_waiting) cfg.max_waiting = *f.max_waiting;
  if (f.max_running) cfg.max_running = *f.max_running;
  if (f.max_batch_tokens) cfg.max_batch_tokens = *f.max_batch_tokens;
  if (f.kv_cache_gb) cfg.kv_cache_gb = *f.kv_cache_gb;
  if (!f.kv_cache_type.empty()) cfg.kv_cache_type = f.kv_cache_type;
  if (f.request_timeout_ms) cfg.request_timeout_ms = *f.request_timeout_ms;
  if (f.max_body_bytes) cfg.max_body_bytes = *f.max_body_bytes;
  if (f.max_connections) cfg.max_connections = *f.max_connections;
  if (f.header_timeout_ms) cfg.header_timeout_ms = *f.header_timeout_ms;
  if (f.idle_timeout_ms) cfg.idle_timeout_ms = *f.idle_timeout_ms;
  if (f.max_header_bytes) cfg.max_header_bytes = *f.max_header_bytes;
  if (f.max_requests_per_key) cfg.max_requests_per_key = *f.max_requests_per_key;
  if (f.max_loaded_models) cfg.max_loaded_models = *f.max_loaded_models;
  if (f.max_model_memory_gb) cfg.max_model_memory_gb = *f.max_model_memory_gb;
  if (!f.keep_alive.empty()) {
    parse_keep_alive(f.keep_alive);  // Error naming the value
    cfg.keep_alive = f.keep_alive;
  }
  if (!f.models.empty()) {
    cfg.models.clear();
    for (const auto& p : f.models) {
      ModelSpec m;
      m.path = p;
      cfg.models.push_back(m);
    }
  }
  if (serve_store) *serve_store = cfg.models.empty();
  if (cfg.models.empty()) {
    ModelSpec m;
    try {
      m.path = demo_model_path();
      cfg.models.push_back(m);
    } catch (const Error& e) {
      if (store_models().empty())
        throw Error(std::string("no model given (pass --model NAME|PATH, set [[models]] in the config, or `pensieve pull` one), ") +
                    "and the built-in demo model is not available: " + e.what());
    }
  }
  // Flags about "the model" apply to the first (default) one.
  if (!cfg.models.empty()) {
    if (!f.id.empty()) cfg.models.front().id = f.id;
    for (const auto& a : f.aliases) cfg.models.front().aliases.push_back(a);
    if (!f.chat_template.empty()) cfg.models.front().chat_template = f.chat_template;
  }
  if (!f.device.empty()) {
    parse_device(f.device);  // a bad value is an error before anything loads
    cfg.device = f.device;
  }
  for (auto& m : cfg.models) {
    if (!f.device.empty()) m.device = f.device;
    if (f.context) m.context = *f.context;
    if (f.threads) m.threads = *f.threads;
  }
  if (cfg.state_dir.empty()) cfg.state_dir = default_state_dir().string();
  validate_config(cfg);
  return cfg;
}

// Every connection holds a descriptor: raise the soft limit to the hard one, and say so when even
// that leaves too little room for max_connections.
void raise_descriptor_limit(const ServerConfig& cfg) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) getrlimit(RLIMIT_NOFILE, &r);
  }
  const rlim_t needed = static_cast<rlim_t>(cfg.max_connections) + 100;  // + the reserve, models, store
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < needed)
    spdlog::warn("the descriptor limit ({}) leaves too little room for max_connections ({}): lower it or raise "
                 "`ulimit -n`", static_cast<uint64_t>(r.rlim_cur), cfg.max_connections);
}

std::shared_ptr<ServedModel> load_and_report(const ModelSource& src, int max_running) {
  std::shared_ptr<ServedModel> model = load_served_model(src.path, src.options);
  const ServiceStats s = model->service().stats();
  spdlog::info("model '{}' ready: context {} tokens, loaded in {:.2f} s; KV cache {} blocks of {} positions "
               "({:.2f} GiB of {}, {:.0f} positions), batching up to {} sequences",
               model->id(), model->context_length(), model->load_seconds(), s.kv_blocks_total, s.kv_block_size,
               double(s.kv_cache_bytes) / double(1ull << 30), kv_type_name(src.options.kv_type),
               double(s.kv_blocks_total) * s.kv_block_size, max_running);
  return model;
}

// Names every model the server answers for (the configured ones; with none configured, the demo
// model and every model of the store), loads the configured ones (within the limits), and
// publishes them; the runtime's ModelManager loads and unloads them from then on. On failure
// stops the server.
void load_models(ServerContext& ctx, HttpServer& server, bool serve_store, int threads, std::string& error) {
  try {
    const ServerConfig& cfg = ctx.config;
    ModelLimits limits;
    limits.max_loaded_models = cfg.max_loaded_models;
    limits.max_model_memory_bytes = uint64_t(cfg.max_model_memory_gb * double(1ull << 30));
    limits.keep_alive = parse_keep_alive(cfg.keep_alive);
    const int max_running = cfg.max_running;
    auto registry = std::make_shared<ModelRegistry>(
        cfg.claude_aliases, [max_running](const ModelSource& s) { return load_and_report(s, max_running); }, limits);
    // One compute pool for every model: loaded models take turns on the cores.
    // (--threads, else the default model's `threads`, else the physical cores)
    const int shared_threads = threads > 0                                               ? threads
                               : !cfg.models.empty() && cfg.models.front().threads > 0 ? cfg.models.front().threads
                                                                                       : physical_core_count();
    auto pool = std::make_shared<ThreadPool>(shared_threads);
    auto source_for = [&](const std::string& name, const std::string& path, const ModelSpec* spec) {
      ModelSource src;
      src.name = name;
      src.path = path;
      EngineOptions& opts = src.options;
      opts.context = spec ? spec->context : 0;
      opts.threads = spec ? spec->threads : 0;
      opts.device = spec && !spec->device.empty() ? spec->device : cfg.device;
      if (opts.threads == 0 || opts.threads == shared_threads) opts.pool = pool;
      opts.id = name;
      opts.chat_template_file = spec ? spec->chat_template : "";
      opts.max_running = cfg.max_running;
      opts.max_waiting = cfg.max_waiting;
      opts.max_batch_tokens = cfg.max_batch_tokens;
      opts.kv_cache_bytes = size_t(cfg.kv_cache_gb * double(1ull << 30));
      opts.kv_type = parse_kv_type(cfg.kv_cache_type);
      if (spec && !spec->keep_alive.empty()) src.keep_alive = parse_keep_alive(spec->keep_alive);
      return src;
    };
    std::vector<std::string> preload;
    for (const auto& spec : cfg.models) {
      std::string path = spec.path, name = spec.id;
      if (!std::filesystem::exists(path)) {
        hub::ModelStore store(hub::ModelStore::default_root());
        if (auto stored = store.find(spec.path)) {
          path = stored->load_path().string();
          if (name.empty()) name = stored->name;
        } else {
          throw Error("model '" + spec.path + "': no such file, and no model of that name in the store (" +
                      store.root().string() + ")");
        }
      }
      if (name.empty()) name = default_model_id(path);
      if (registry->find_id(name)) throw Error("two models share the id '" + name + "' (set id in [[models]])");
      registry->add_source(source_for(name, path, &spec), spec.aliases);
      preload.push_back(name);
    }
    if (serve_store)
      for (const auto& m : store_models()) {
        if (registry->find_id(m.name)) continue;
        registry->add_source(source_for(m.name, m.load_path().string(), nullptr), {});
        spdlog::info("store model '{}' ({}) served on demand", m.name, m.quant);
      }
    // The configured models load now, as many as the limits allow, so that a bad file stops the
    // start; store models load when first asked for.
    if (preload.empty() && !registry->entries().empty()) preload.push_back(registry->entries().front().id);
    if (cfg.max_loaded_models > 0 && int(preload.size()) > cfg.max_loaded_models) preload.resize(size_t(cfg.max_loaded_models));
    for (const auto& name : preload) registry->acquire(*registry->find_id(name));
    ctx.publish_models(registry);
  } catch (const std::exception& e) {
    error = e.what();
    server.shutdown();
  }
}

int run_serve(const ServeFlags& flags) {
  bool serve_store = false;
  ServerConfig cfg = effective_config(flags, &serve_store);
  if (!cfg.api_key_file.empty())
    for (auto& k : read_key_file(cfg.api_key_file)) cfg.api_keys.push_back(k);
  if (flags.print_config) {
    std::fputs(config_to_toml(cfg).c_str(), stdout);
    return 0;
  }
  raise_descriptor_limit(cfg);
  auto store = std::make_unique<StateStore>(cfg.state_dir);
  ServerContext ctx(cfg, std::move(store));
  if (!ctx.auth.has_keys() && !is_loopback_host(cfg.host) && !cfg.allow_no_auth)
    throw Error("refusing to listen on " + cfg.host + " without an API key: pass --api-key KEY or " +
                "--api-key-file FILE, create one with `pensieve keys add NAME`, or pass --allow-no-auth");
  HttpServer server(ctx);
  server.listen(cfg.host, cfg.port);
  std::printf("pensieve: listening on http://%s:%d (state in %s)%s\n", cfg.host.c_str(), server.port(),
              cfg.state_dir.c_str(), ctx.auth.required() ? "" : " - no API key configured");
  std::fflush(stdout);
  std::string load_error;
  std::thread loader([&] { load_models(ctx, server, serve_store, flags.threads.value_or(0), load_error); });
  server.run(true);
  loader.join();
  // Generation workers post their events to the server's event loop: stop them while it exists.
  if (auto models = ctx.models()) {
    for (const auto& m : models->loaded_models()) m->service().cancel_all();
    for (const auto& m : models->loaded_models()) m->service().wait_idle(std::chrono::seconds(10));
  }
  ctx.publish_models(nullptr);
  if (!load_error.empty()) throw Error(load_error);
  spdlog::info("stopped");
  return 0;
}

const CommandRegistrar serve_command{
    "serve", "Serve models over the Anthropic Messages API and OpenAI chat completions",
    [](CLI::App& sub) -> std::function<int()> {
      auto f = std::make_shared<ServeFlags>();
      sub.add_option("-m,--model", f->models,
                     "Model: a name from `pensieve list` or a path (GGUF file or folder); repeat for several (the first "
                     "is the default). Without it: the demo model and every model of the store");
      sub.add_option("-c,--config", f->config, "pensieve.toml (default: $PENSIEVE_CONFIG)");
      sub.add_option("--host", f->host, "Address to listen on (default 127.0.0.1)");
      sub.add_option("-p,--port", f->port, "Port (default 7777; 0 picks a free one)");
      sub.add_option("--api-key", f->api_keys, "An accepted API key; repeatable");
      sub.add_option("--api-key-file", f->api_key_file, "File with accepted API keys, one a line");
      sub.add_flag("--allow-no-auth", f->allow_no_auth, "Allow a non-loopback address without any API key");
      sub.add_option("--state-dir", f->state_dir, "Usage database and keys (default $XDG_STATE_HOME/pensieve)");
      sub.add_option("--max-output-tokens", f->max_output_tokens, "Server-wide cap on output tokens per request");
      sub.add_option("--max-waiting", f->max_waiting, "Requests that may wait for a model before 529/429");
      sub.add_option("--max-running", f->max_running, "Sequences batched per step, per model (default 64)")
          ->check(CLI::PositiveNumber);
      sub.add_option("--max-batch-tokens", f->max_batch_tokens, "Tokens per forward pass (default 512)")
          ->check(CLI::PositiveNumber);
      sub.add_option("--kv-cache-gb", f->kv_cache_gb,
                     "KV cache per model in GiB (default: the context x 4 sequences, capped by free memory)")
          ->check(CLI::NonNegativeNumber);
      sub.add_option("--kv-cache-type", f->kv_cache_type, "What the KV cache holds: f16 (default), f32, or q8 (int8 with a scale a head row: half the memory of f16)")
          ->check(CLI::IsMember({"f16", "f32", "q8"}));
      sub.add_option("--request-timeout-ms", f->request_timeout_ms, "End a request after this long");
      sub.add_option("--max-body-bytes", f->max_body_bytes, "Largest request body (default 32 MiB)");
      sub.add_option("--max-connections", f->max_connections, "Open connections before new ones are closed (default 512)");
      sub.add_option("--header-timeout-ms", f->header_timeout_ms, "A request's headers must arrive within this (default 10000)");
      sub.add_option("--idle-timeout-ms", f->idle_timeout_ms, "Keep-alive wait, and the longest a body or write may stall (default 60000)");
      sub.add_option("--max-header-bytes", f->max_header_bytes, "Largest request header (default 65536)");
      sub.add_option("--max-requests-per-key", f->max_requests_per_key, "Concurrent requests per API key, 429 beyond (default 16; 0: no limit)");
      sub.add_option("--max-loaded-models", f->max_loaded_models,
                     "Models loaded at once; the least recently used is unloaded beyond it (default 0: no limit)")
          ->check(CLI::NonNegativeNumber);
      sub.add_option("--max-model-memory-gb", f->max_model_memory_gb,
                     "Memory for loaded models (weights + KV caches) before LRU unloading (default 0: no limit)")
          ->check(CLI::NonNegativeNumber);
      sub.add_option("--keep-alive", f->keep_alive, "Unload a model idle this long (\"5m\", \"1h\"; default -1: never)");
      sub.add_option("--context", f->context, "Context length in tokens (default: min(trained, 4096))");
      sub.add_option("--device", f->device, "auto, cpu, cuda or cuda:N for every model (default cpu)");
      sub.add_option("-t,--threads", f->threads, "Compute threads, shared by the loaded models (default: physical cores)");
      sub.add_option("--id", f->id, "Model id to serve the first model under");
      sub.add_option("--chat-template", f->chat_template,
                     "A chat template file (Jinja) to use instead of the first model's own");
      sub.add_option("--alias", f->aliases, "Another name of the first model (a trailing * matches a prefix)");
      sub.add_flag("--print-config", f->print_config, "Print the effective configuration and exit");
      return [f] { return run_serve(*f); };
    }};

}  // namespace
}  // namespace pensieve::cli
