// `pensieve serve` settings: pensieve.toml, then PENSIEVE_* environment variables over it, then
// command-line flags over both (applied by cmd_serve).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace pensieve::server {

struct ModelSpec {
  std::string path;
  std::string id;                    // "" = from the model's metadata
  std::vector<std::string> aliases;  // exact names or prefixes ending in '*'
  int context = 0;                   // 0 = engine default
  int threads = 0;                   // 0 = the server's shared pool (physical cores)
  std::string keep_alive;            // "" = [limits] keep_alive; else a duration ("5m", "-1": never)
  std::string chat_template;         // a chat template file to use instead of the model's own
  std::string device;                // "" = the server's device (--device, default cpu); auto, cpu, cuda[:N]
};

constexpr int kMinHeaderBytes = 1024;  // the least max_header_bytes may be

struct ServerConfig {
  // [server]
  std::string host = "127.0.0.1";
  int port = 7777;
  std::vector<std::string> api_keys;
  std::string api_key_file;
  bool allow_no_auth = false;
  std::string state_dir;  // "" = default_state_dir()
  bool claude_aliases = true;  // any claude-* name means the default model
  std::string device = "cpu";  // backend of models without their own `device` (--device)
  // [limits]
  int64_t max_body_bytes = 32ll << 20;
  int max_output_tokens = 0;    // server-wide cap per request; 0 = none
  int max_waiting = 1024;       // requests waiting per model before 529 / 429
  int max_running = 64;         // sequences one model batches per step
  int max_batch_tokens = 512;   // tokens per forward pass (decode tokens + prompt chunks)
  double kv_cache_gb = 0;       // KV cache per model; 0 = context x 4 sequences, capped by free memory
  std::string kv_cache_type = "f16";  // f16, f32 or q8 (int8 with a scale a head row)
  int request_timeout_ms = 600000;
  int ping_interval_ms = 5000;  // SSE ping while a stream waits for the model
  int shutdown_grace_ms = 15000;
  int max_connections = 512;      // open connections; beyond it (and a small reserve) closed at once
  int header_timeout_ms = 10000;  // a request's headers must arrive within this
  int idle_timeout_ms = 60000;    // keep-alive wait for the next request; a stalled body or write
  int max_header_bytes = 65536;   // request line and header fields together
  int max_requests_per_key = 16;  // concurrent requests per API key (429 beyond); 0 = no limit
  int max_loaded_models = 0;      // models loaded at once (LRU unloading beyond); 0 = no limit
  double max_model_memory_gb = 0; // weights + KV caches of the loaded models; 0 = no limit
  std::string keep_alive = "-1";  // an idle model is unloaded after this ("5m", "1h"; "-1": never)
  // [[models]]
  std::vector<ModelSpec> models;
};

// Reads a TOML file over cfg. Error naming the file and line for syntax errors, unknown keys and
// values of the wrong type.
void load_config_file(ServerConfig& cfg, const std::filesystem::path& file);

// Applies PENSIEVE_HOST, _PORT, _API_KEY, _API_KEY_FILE, _ALLOW_NO_AUTH, _STATE_DIR,
// _MAX_OUTPUT_TOKENS, _MAX_BODY_BYTES, _MAX_WAITING, _MAX_RUNNING, _MAX_BATCH_TOKENS, _KV_CACHE_GB,
// _REQUEST_TIMEOUT_MS, _MAX_CONNECTIONS, _HEADER_TIMEOUT_MS, _IDLE_TIMEOUT_MS, _MAX_HEADER_BYTES,
// _MAX_REQUESTS_PER_KEY, _MAX_LOADED_MODELS, _MAX_MODEL_MEMORY_GB, _KEEP_ALIVE, _MODEL (paths separated by ':'), _CONTEXT, _THREADS. Error naming the
// variable for a bad value.
void apply_environment(ServerConfig& cfg);

// Non-empty lines of a key file (one key a line; '#' starts a comment line).
std::vector<std::string> read_key_file(const std::filesystem::path& file);

// The effective configuration as TOML, with API keys redacted.
std::string config_to_toml(const ServerConfig& cfg);

// Checks values that must hold whatever their source.
void validate_config(const ServerConfig& cfg);

}  // namespace pensieve::server
