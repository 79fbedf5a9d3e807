// The server's persistent state in one SQLite database (WAL) under the state directory: usage and
// performance counters per API key and model, and the API keys themselves (SHA-256 hashes only).
// Every update is its own transaction, so a restart or a kill -9 loses at most in-flight requests.
#pragma once
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace pensieve::server {

struct UsageRecord {
  std::string key_name;  // "anonymous" without auth
  std::string model;
  bool ok = true;
  int input_tokens = 0;
  int output_tokens = 0;
  double generation_seconds = 0;  // prefill + decode
  int cached_input_tokens = 0;    // input tokens read from the prefix cache
  int decode_tokens = 0;          // output tokens after the first, and the time they took
  double decode_seconds = 0;
};

struct UsageTotals {
  int64_t requests = 0, errors = 0, input_tokens = 0, output_tokens = 0;
  double generation_seconds = 0;
  int64_t cached_input_tokens = 0, decode_tokens = 0;
  double decode_seconds = 0;
};

struct KeyInfo {
  std::string name, prefix;
  int64_t created_at = 0;
  std::optional<int64_t> revoked_at;
};

// $XDG_STATE_HOME/pensieve, else ~/.local/state/pensieve.
std::filesystem::path default_state_dir();

class StateStore {
 public:
  explicit StateStore(const std::filesystem::path& dir);  // creates the directory and schema
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::filesystem::path& path() const { return path_; }

  void record_usage(const UsageRecord& r);
  UsageTotals totals() const;
  std::vector<std::pair<std::string, UsageTotals>> usage_by_key() const;

  // Creates a key and returns it in plain text (the only time it is shown). Error if the name is
  // taken by an active key.
  std::string add_key(const std::string& name);
  std::vector<KeyInfo> list_keys() const;
  // Revokes the active key with this name or key prefix; false when none matched.
  bool revoke_key(const std::string& name_or_prefix);
  struct ActiveKey { std::string name, hash_hex; };
  std::vector<ActiveKey> active_keys() const;

 private:
  void exec(const char* sql) const;
  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
};

}  // namespace pensieve::server
