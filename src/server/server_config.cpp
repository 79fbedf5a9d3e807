#include "server/server_config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "backend/backend.h"
#include "model/kv_cache.h"
#include "runtime/model_manager.h"
#include "util/error.h"

namespace pensieve::server {

namespace fs = std::filesystem;

namespace {

std::string where(const fs::path& file, const toml::node& node) {
  return file.string() + ":" + std::to_string(node.source().begin.line);
}

template <typename T>
T value_of(const fs::path& file, const toml::node& node, const std::string& key, const char* expected) {
  auto v = node.value<T>();
  if (!v) throw Error(where(file, node) + ": '" + key + "' must be " + expected);
  return *v;
}

int int_of(const fs::path& file, const toml::node& node, const std::string& key, int64_t min) {
  if (!node.is_integer()) throw Error(where(file, node) + ": '" + key + "' must be an integer");
  int64_t v = *node.value<int64_t>();
  if (v < min || v > INT32_MAX)
    throw Error(where(file, node) + ": '" + key + "' must be at least " + std::to_string(min));
  return static_cast<int>(v);
}

std::vector<std::string> strings_of(const fs::path& file, const toml::node& node, const std::string& key) {
  const toml::array* arr = node.as_array();
  if (!arr) throw Error(where(file, node) + ": '" + key + "' must be an array of strings");
  std::vector<std::string> out;
  for (const auto& el : *arr) out.push_back(value_of<std::string>(file, el, key, "an array of strings"));
  return out;
}

// A duration string ("5m", "-1") or a number of seconds, kept as the string.
std::string keep_alive_of(const fs::path& file, const toml::node& node, const std::string& key) {
  std::string text;
  if (node.is_integer()) text = std::to_string(*node.value<int64_t>());
  else if (node.is_string()) text = *node.value<std::string>();
  else throw Error(where(file, node) + ": '" + key + "' must be a duration such as \"5m\" or a number of seconds");
  try {
    parse_keep_alive(text);
  } catch (const Error& e) {
    throw Error(where(file, node) + ": " + e.what());
  }
  return text;
}

void read_server(ServerConfig& cfg, const fs::path& file, const toml::table& t) {
  for (const auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "host") cfg.host = value_of<std::string>(file, node, key, "a string");
    else if (key == "port") cfg.port = int_of(file, node, key, 0);
    else if (key == "api_keys") cfg.api_keys = strings_of(file, node, key);
    else if (key == "api_key_file") cfg.api_key_file = value_of<std::string>(file, node, key, "a string");
    else if (key == "allow_no_auth") cfg.allow_no_auth = value_of<bool>(file, node, key, "true or false");
    else if (key == "state_dir") cfg.state_dir = value_of<std::string>(file, node, key, "a string");
    else if (key == "claude_aliases") cfg.claude_aliases = value_of<bool>(file, node, key, "true or false");
    else throw Error(where(file, node) + ": unknown key 'server." + key + "'");
  }
}

void read_limits(ServerConfig& cfg, const fs::path& file, const toml::table& t) {
  for (const auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "max_body_bytes") {
      if (!node.is_integer() || *node.value<int64_t>() < 1)
        throw Error(where(file, node) + ": 'max_body_bytes' must be a positive integer");
      cfg.max_body_bytes = *node.value<int64_t>();
    } else if (key == "max_output_tokens") cfg.max_output_tokens = int_of(file, node, key, 0);
    else if (key == "max_waiting") cfg.max_waiting = int_of(file, node, key, 0);
    else if (key == "max_running") cfg.max_running = int_of(file, node, key, 1);
    else if (key == "max_batch_tokens") cfg.max_batch_tokens = int_of(file, node, key, 1);
    else if (key == "kv_cache_gb") {
      const auto v = node.value<double>();
      if (!v || *v < 0) throw Error(where(file, node) + ": 'kv_cache_gb' must be a number >= 0");
      cfg.kv_cache_gb = *v;
    }
    else if (key == "kv_cache_type") {
      const auto v = node.value<std::string>();
      if (!v) throw Error(where(file, node) + ": 'kv_cache_type' must be \"f16\", \"f32\" or \"q8\"");
      try {
        parse_kv_type(*v);
      } catch (const Error& e) {
        throw Error(where(file, node) + ": " + e.what());
      }
      cfg.kv_cache_type = *v;
    }
    else if (key == "request_timeout_ms") cfg.request_timeout_ms = int_of(file, node, key, 1);
    else if (key == "ping_interval_ms") cfg.ping_interval_ms = int_of(file, node, key, 10);
    else if (key == "shutdown_grace_ms") cfg.shutdown_grace_ms = int_of(file, node, key, 0);
    else if (key == "max_connections") cfg.max_connections = int_of(file, node, key, 1);
    else if (key == "header_timeout_ms") cfg.header_timeout_ms = int_of(file, node, key, 1);
    else if (key == "idle_timeout_ms") cfg.idle_timeout_ms = int_of(file, node, key, 1);
    else if (key == "max_header_bytes") cfg.max_header_bytes = int_of(file, node, key, kMinHeaderBytes);
    else if (key == "max_requests_per_key") cfg.max_requests_per_key = int_of(file, node, key, 0);
    else if (key == "max_loaded_models") cfg.max_loaded_models = int_of(file, node, key, 0);
    else if (key == "max_model_memory_gb") {
      const auto v = node.value<double>();
      if (!v || *v < 0) throw Error(where(file, node) + ": 'max_model_memory_gb' must be a number >= 0");
      cfg.max_model_memory_gb = *v;
    } else if (key == "keep_alive") cfg.keep_alive = keep_alive_of(file, node, key);
    else throw Error(where(file, node) + ": unknown key 'limits." + key + "'");
  }
}

ModelSpec read_model(const fs::path& file, const toml::node& node) {
  const toml::table* t = node.as_table();
  if (!t) throw Error(where(file, node) + ": each [[models]] entry must be a table");
  ModelSpec m;
  for (const auto& [k, v] : *t) {
    const std::string key(k.str());
    if (key == "path") m.path = value_of<std::string>(file, v, key, "a string");
    else if (key == "id") m.id = value_of<std::string>(file, v, key, "a string");
    else if (key == "aliases") m.aliases = strings_of(file, v, key);
    else if (key == "context") m.context = int_of(file, v, key, 0);
    else if (key == "threads") m.threads = int_of(file, v, key, 0);
    else if (key == "keep_alive") m.keep_alive = keep_alive_of(file, v, key);
    else if (key == "chat_template") m.chat_template = value_of<std::string>(file, v, key, "a string");
    else if (key == "device") {
      m.device = value_of<std::string>(file, v, key, "a string");
      try {
        parse_device(m.device);
      } catch (const Error& e) {
        throw Error(where(file, v) + ": 'device': " + e.what());
      }
    } else throw Error(where(file, v) + ": unknown key 'models." + key + "'");
  }
  if (m.path.empty()) throw Error(where(file, node) + ": [[models]] entry needs a 'path'");
  return m;
}

int env_int(const char* name, int64_t min) {
  const char* v = std::getenv(name);
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (!*v || *end || x < min || x > INT32_MAX)
    throw Error(std::string(name) + "='" + v + "': expected an integer >= " + std::to_string(min));
  return static_cast<int>(x);
}

bool env_bool(const char* name) {
  std::string v = std::getenv(name);
  if (v == "1" || v == "true" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "no" || v.empty()) return false;
  throw Error(std::string(name) + "='" + v + "': expected true or false");
}

}  // namespace

void load_config_file(ServerConfig& cfg, const fs::path& file) {
  if (!fs::exists(file)) throw Error("config file " + file.string() + ": not found");
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw Error(file.string() + ":" + std::to_string(e.source().begin.line) + ": " +
                std::string(e.description()));
  }
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (key == "server" && node.is_table()) read_server(cfg, file, *node.as_table());
    else if (key == "limits" && node.is_table()) read_limits(cfg, file, *node.as_table());
    else if (key == "models" && node.is_array()) {
      cfg.models.clear();
      for (const auto& m : *node.as_array()) cfg.models.push_back(read_model(file, m));
    } else throw Error(where(file, node) + ": unknown or mistyped section '" + key +
                       "' (expected [server], [limits] or [[models]])");
  }
}

void apply_environment(ServerConfig& cfg) {
  auto has = [](const char* n) { return std::getenv(n) != nullptr; };
  if (has("PENSIEVE_HOST")) cfg.host = std::getenv("PENSIEVE_HOST");
  if (has("PENSIEVE_PORT")) cfg.port = env_int("PENSIEVE_PORT", 0);
  if (has("PENSIEVE_API_KEY")) cfg.api_keys = {std::getenv("PENSIEVE_API_KEY")};
  if (has("PENSIEVE_API_KEY_FILE")) cfg.api_key_file = std::getenv("PENSIEVE_API_KEY_FILE");
  if (has("PENSIEVE_ALLOW_NO_AUTH")) cfg.allow_no_auth = env_bool("PENSIEVE_ALLOW_NO_AUTH");
  if (has("PENSIEVE_STATE_DIR")) cfg.state_dir = std::getenv("PENSIEVE_STATE_DIR");
  if (has("PENSIEVE_MAX_OUTPUT_TOKENS")) cfg.max_output_tokens = env_int("PENSIEVE_MAX_OUTPUT_TOKENS", 0);
  if (has("PENSIEVE_MAX_BODY_BYTES")) cfg.max_body_bytes = env_int("PENSIEVE_MAX_BODY_BYTES", 1);
  if (has("PENSIEVE_MAX_WAITING")) cfg.max_waiting = env_int("PENSIEVE_MAX_WAITING", 0);
  if (has("PENSIEVE_MAX_RUNNING")) cfg.max_running = env_int("PENSIEVE_MAX_RUNNING", 1);
  if (has("PENSIEVE_MAX_BATCH_TOKENS")) cfg.max_batch_tokens = env_int("PENSIEVE_MAX_BATCH_TOKENS", 1);
  if (has("PENSIEVE_KV_CACHE_GB")) {
    const char* v = std::getenv("PENSIEVE_KV_CACHE_GB");
    char* end = nullptr;
    const double x = std::strtod(v, &end);
    if (!*v || *end || !(x >= 0)) throw Error(std::string("PENSIEVE_KV_CACHE_GB='") + v + "': expected a number >= 0");
    cfg.kv_cache_gb = x;
  }
  if (has("PENSIEVE_KV_CACHE_TYPE")) {
    cfg.kv_cache_type = std::getenv("PENSIEVE_KV_CACHE_TYPE");
    parse_kv_type(cfg.kv_cache_type);  // names the accepted values
  }
  if (has("PENSIEVE_REQUEST_TIMEOUT_MS")) cfg.request_timeout_ms = env_int("PENSIEVE_REQUEST_TIMEOUT_MS", 1);
  if (has("PENSIEVE_MAX_CONNECTIONS")) cfg.max_connections = env_int("PENSIEVE_MAX_CONNECTIONS", 1);
  if (has("PENSIEVE_HEADER_TIMEOUT_MS")) cfg.header_timeout_ms = env_int("PENSIEVE_HEADER_TIMEOUT_MS", 1);
  if (has("PENSIEVE_IDLE_TIMEOUT_MS")) cfg.idle_timeout_ms = env_int("PENSIEVE_IDLE_TIMEOUT_MS", 1);
  if (has("PENSIEVE_MAX_HEADER_BYTES")) cfg.max_header_bytes = env_int("PENSIEVE_MAX_HEADER_BYTES", kMinHeaderBytes);
  if (has("PENSIEVE_MAX_REQUESTS_PER_KEY")) cfg.max_requests_per_key = env_int("PENSIEVE_MAX_REQUESTS_PER_KEY", 0);
  if (has("PENSIEVE_MAX_LOADED_MODELS")) cfg.max_loaded_models = env_int("PENSIEVE_MAX_LOADED_MODELS", 0);
  if (has("PENSIEVE_MAX_MODEL_MEMORY_GB")) {
    const char* v = std::getenv("PENSIEVE_MAX_MODEL_MEMORY_GB");
    char* end = nullptr;
    const double x = std::strtod(v, &end);
    if (!*v || *end || !(x >= 0)) throw Error(std::string("PENSIEVE_MAX_MODEL_MEMORY_GB='") + v + "': expected a number >= 0");
    cfg.max_model_memory_gb = x;
  }
  if (has("PENSIEVE_KEEP_ALIVE")) {
    cfg.keep_alive = std::getenv("PENSIEVE_KEEP_ALIVE");
    try {
      parse_keep_alive(cfg.keep_alive);
    } catch (const Error& e) {
      throw Error(std::string("PENSIEVE_KEEP_ALIVE: ") + e.what());
    }
  }
  if (has("PENSIEVE_MODEL")) {
    cfg.models.clear();
    std::stringstream ss(std::getenv("PENSIEVE_MODEL"));
    for (std::string p; std::getline(ss, p, ':');)
      if (!p.empty()) {
        ModelSpec m;
        m.path = p;
        cfg.models.push_back(m);
      }
  }
  if (has("PENSIEVE_CONTEXT"))
    for (auto& m : cfg.models) m.context = env_int("PENSIEVE_CONTEXT", 0);
  if (has("PENSIEVE_THREADS"))
    for (auto& m : cfg.models) m.threads = env_int("PENSIEVE_THREADS", 0);
}

std::vector<std::string> read_key_file(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error("API key file " + file.string() + ": cannot be read");
  std::vector<std::string> keys;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    size_t start = line.find_first_not_of(' ');
    if (start == std::string::npos || line[start] == '#') continue;
    keys.push_back(line.substr(start));
  }
  if (keys.empty()) throw Error("API key file " + file.string() + ": holds no key");
  return keys;
}

std::string config_to_toml(const ServerConfig& cfg) {
  toml::array keys;
  for (size_t i = 0; i < cfg.api_keys.size(); ++i) keys.push_back("<redacted>");
  toml::table server{{"host", cfg.host}, {"port", cfg.port}, {"api_keys", keys},
                     {"api_key_file", cfg.api_key_file}, {"allow_no_auth", cfg.allow_no_auth},
                     {"state_dir", cfg.state_dir}, {"claude_aliases", cfg.claude_aliases}};
  toml::table limits{{"max_body_bytes", cfg.max_body_bytes}, {"max_output_tokens", cfg.max_output_tokens},
                     {"max_waiting", cfg.max_waiting}, {"max_running", cfg.max_running},
                     {"max_batch_tokens", cfg.max_batch_tokens}, {"kv_cache_gb", cfg.kv_cache_gb},
                     {"kv_cache_type", cfg.kv_cache_type},
                     {"request_timeout_ms", cfg.request_timeout_ms},
                     {"ping_interval_ms", cfg.ping_interval_ms},
                     {"shutdown_grace_ms", cfg.shutdown_grace_ms}, {"max_connections", cfg.max_connections},
                     {"header_timeout_ms", cfg.header_timeout_ms}, {"idle_timeout_ms", cfg.idle_timeout_ms},
                     {"max_header_bytes", cfg.max_header_bytes},
                     {"max_requests_per_key", cfg.max_requests_per_key},
                     {"max_loaded_models", cfg.max_loaded_models},
                     {"max_model_memory_gb", cfg.max_model_memory_gb}, {"keep_alive", cfg.keep_alive}};
  toml::array models;
  for (const auto& m : cfg.models) {
    toml::array aliases;
    for (const auto& a : m.aliases) aliases.push_back(a);
    models.push_back(toml::table{{"path", m.path}, {"id", m.id}, {"aliases", aliases},
                                 {"context", m.context}, {"threads", m.threads}, {"keep_alive", m.keep_alive},
                                 {"chat_template", m.chat_template},
                                 {"device", m.device.empty() ? cfg.device : m.device}});
  }
  toml::table root{{"server", server}, {"limits", limits}, {"models", models}};
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

void validate_config(const ServerConfig& cfg) {
  if (cfg.port < 0 || cfg.port > 65535) throw Error("port " + std::to_string(cfg.port) + " is out of range");
  if (cfg.host.empty()) throw Error("host must not be empty");
  if (cfg.max_connections < 1) throw Error("max_connections must be at least 1");
  if (cfg.header_timeout_ms < 1 || cfg.idle_timeout_ms < 1) throw Error("timeouts must be at least 1 ms");
  if (cfg.max_header_bytes < kMinHeaderBytes)
    throw Error("max_header_bytes must be at least " + std::to_string(kMinHeaderBytes));
  if (cfg.max_requests_per_key < 0) throw Error("max_requests_per_key must not be negative");
}

}  // namespace pensieve::server
