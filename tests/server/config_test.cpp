// pensieve.toml reading, environment overrides, and errors that name the line.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "server/server_config.h"
#include "util/error.h"

using namespace pensieve::server;
namespace fs = std::filesystem;

namespace {
// Named after this process: ctest runs each test in its own process, several at once, and two of
// them writing one path read each other's files.
fs::path write_file(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / (std::to_string(getpid()) + "-" + name);
  std::ofstream(p) << text;
  return p;
}
std::string load_error(const std::string& text) {
  ServerConfig cfg;
  try {
    load_config_file(cfg, write_file("pensieve-bad.toml", text));
  } catch (const pensieve::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, ReadsEverySection) {
  ServerConfig cfg;
  load_config_file(cfg, write_file("pensieve-good.toml", R"(
[server]
host = "0.0.0.0"
port = 8080
api_keys = ["k1"]
claude_aliases = false
[limits]
max_output_tokens = 512
max_body_bytes = 1000
request_timeout_ms = 5000
max_connections = 64
header_timeout_ms = 2000
idle_timeout_ms = 3000
max_header_bytes = 8192
max_requests_per_key = 4
kv_cache_type = "q8"
[[models]]
path = "a.gguf"
id = "a"
aliases = ["gpt-4*", "small"]
context = 2048
[[models]]
path = "b.gguf"
)"));
  EXPECT_EQ(cfg.host, "0.0.0.0");
  EXPECT_EQ(cfg.port, 8080);
  EXPECT_EQ(cfg.api_keys, std::vector<std::string>{"k1"});
  EXPECT_FALSE(cfg.claude_aliases);
  EXPECT_EQ(cfg.max_output_tokens, 512);
  EXPECT_EQ(cfg.max_body_bytes, 1000);
  EXPECT_EQ(cfg.max_connections, 64);
  EXPECT_EQ(cfg.header_timeout_ms, 2000);
  EXPECT_EQ(cfg.idle_timeout_ms, 3000);
  EXPECT_EQ(cfg.max_header_bytes, 8192);
  EXPECT_EQ(cfg.max_requests_per_key, 4);
  EXPECT_EQ(cfg.kv_cache_type, "q8");
  EXPECT_NE(config_to_toml(cfg).find("kv_cache_type = 'q8'"), std::string::npos) << config_to_toml(cfg);
  EXPECT_NE(config_to_toml(cfg).find("max_header_bytes = 8192"), std::string::npos) << config_to_toml(cfg);
  EXPECT_NE(config_to_toml(cfg).find("max_requests_per_key = 4"), std::string::npos);
  ASSERT_EQ(cfg.models.size(), 2u);
  EXPECT_EQ(cfg.models[0].aliases.size(), 2u);
  EXPECT_EQ(cfg.models[0].context, 2048);
  EXPECT_EQ(cfg.models[1].path, "b.gguf");
  EXPECT_NE(config_to_toml(cfg).find("<redacted>"), std::string::npos);
  EXPECT_EQ(config_to_toml(cfg).find("k1"), std::string::npos);
}

TEST(Config, ErrorsNameTheLine) {
  EXPECT_NE(load_error("[server]\nport = \"x\"\n").find(":2:"), std::string::npos);
  EXPECT_NE(load_error("[server]\n\nbogus = 1\n").find(":3: unknown key 'server.bogus'"), std::string::npos);
  EXPECT_NE(load_error("[server\nport=1\n").find(":1:"), std::string::npos);
  EXPECT_NE(load_error("[[models]]\nid = \"x\"\n").find("needs a 'path'"), std::string::npos);
  EXPECT_NE(load_error("[limits]\nmax_waiting = -1\n").find(":2:"), std::string::npos);
  EXPECT_NE(load_error("[limits]\nmax_connections = 0\n").find(":2:"), std::string::npos);
  EXPECT_NE(load_error("[limits]\nmax_header_bytes = 100\n").find(":2:"), std::string::npos);
  EXPECT_NE(load_error("[limits]\nkv_cache_type = \"q4\"\n").find(":2: KV cache type 'q4'"), std::string::npos);
}

TEST(Config, EnvironmentOverridesTheFile) {
  ServerConfig cfg;
  cfg.port = 1;
  setenv("PENSIEVE_PORT", "9999", 1);
  setenv("PENSIEVE_MODEL", "x.gguf:y.gguf", 1);
  setenv("PENSIEVE_MAX_OUTPUT_TOKENS", "64", 1);
  setenv("PENSIEVE_MAX_CONNECTIONS", "7", 1);
  setenv("PENSIEVE_IDLE_TIMEOUT_MS", "1500", 1);
  apply_environment(cfg);
  EXPECT_EQ(cfg.max_connections, 7);
  EXPECT_EQ(cfg.idle_timeout_ms, 1500);
  unsetenv("PENSIEVE_MAX_CONNECTIONS");
  unsetenv("PENSIEVE_IDLE_TIMEOUT_MS");
  EXPECT_EQ(cfg.port, 9999);
  ASSERT_EQ(cfg.models.size(), 2u);
  EXPECT_EQ(cfg.models[1].path, "y.gguf");
  EXPECT_EQ(cfg.max_output_tokens, 64);
  setenv("PENSIEVE_PORT", "abc", 1);
  EXPECT_THROW(apply_environment(cfg), pensieve::Error);
  unsetenv("PENSIEVE_PORT");
  setenv("PENSIEVE_KV_CACHE_TYPE", "q8", 1);
  apply_environment(cfg);
  EXPECT_EQ(cfg.kv_cache_type, "q8");
  setenv("PENSIEVE_KV_CACHE_TYPE", "int4", 1);
  EXPECT_THROW(apply_environment(cfg), pensieve::Error);
  unsetenv("PENSIEVE_KV_CACHE_TYPE");
  unsetenv("PENSIEVE_MODEL");
  unsetenv("PENSIEVE_MAX_OUTPUT_TOKENS");
}

TEST(Config, ModelDevice) {
  ServerConfig cfg;
  load_config_file(cfg, write_file("pensieve-device.toml", R"(
[[models]]
path = "a.gguf"
device = "cuda:1"
[[models]]
path = "b.gguf"
)"));
  ASSERT_EQ(cfg.models.size(), 2u);
  EXPECT_EQ(cfg.models[0].device, "cuda:1");
  EXPECT_EQ(cfg.models[1].device, "");  // the server's device (cpu unless --device)
  EXPECT_EQ(cfg.device, "cpu");
  const std::string err = load_error("[[models]]\npath = \"a.gguf\"\ndevice = \"gpu\"\n");
  EXPECT_NE(err.find(":3:"), std::string::npos) << err;
  EXPECT_NE(err.find("unknown device 'gpu'"), std::string::npos) << err;
}

TEST(Config, ModelLimitsAndKeepAlive) {
  ServerConfig cfg;
  load_config_file(cfg, write_file("pensieve-models.toml", R"(
[limits]
max_loaded_models = 2
max_model_memory_gb = 12.5
keep_alive = "5m"
[[models]]
path = "a.gguf"
keep_alive = 30
[[models]]
path = "org/repo:Q4_K_M"
)"));
  EXPECT_EQ(cfg.max_loaded_models, 2);
  EXPECT_DOUBLE_EQ(cfg.max_model_memory_gb, 12.5);
  EXPECT_EQ(cfg.keep_alive, "5m");
  EXPECT_EQ(cfg.models[0].keep_alive, "30");
  EXPECT_EQ(cfg.models[1].keep_alive, "");
  EXPECT_EQ(cfg.models[1].path, "org/repo:Q4_K_M");  // a store name, resolved when serving
  EXPECT_NE(config_to_toml(cfg).find("max_loaded_models = 2"), std::string::npos);
  EXPECT_NE(load_error("[limits]\nkeep_alive = \"soon\"\n").find(":2: invalid keep_alive 'soon'"), std::string::npos)
      << load_error("[limits]\nkeep_alive = \"soon\"\n");
  EXPECT_NE(load_error("[limits]\nmax_model_memory_gb = -1\n").find("max_model_memory_gb"), std::string::npos);
  ::setenv("PENSIEVE_MAX_LOADED_MODELS", "3", 1);
  ::setenv("PENSIEVE_KEEP_ALIVE", "1h", 1);
  apply_environment(cfg);
  EXPECT_EQ(cfg.max_loaded_models, 3);
  EXPECT_EQ(cfg.keep_alive, "1h");
  ::setenv("PENSIEVE_KEEP_ALIVE", "never", 1);
  EXPECT_THROW(apply_environment(cfg), pensieve::Error);
  ::unsetenv("PENSIEVE_MAX_LOADED_MODELS");
  ::unsetenv("PENSIEVE_KEEP_ALIVE");
}
