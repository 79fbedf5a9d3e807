// API-key checks: keys given on the command line or in the config, and keys in the state store
// (`pensieve keys add`). Keys are compared as SHA-256 digests in constant time, against every
// candidate, so the time taken says nothing about which key came close.
#pragma once
#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::server {

class StateStore;

bool constant_time_equal(std::string_view a, std::string_view b);

// The key a request presents: `x-api-key`, else `Authorization: Bearer KEY`.
std::string presented_key(std::string_view x_api_key, std::string_view authorization);

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(const std::string& host);

class Authenticator {
 public:
  // store may be null. Static keys are named "key-1", "key-2"… in usage records. `always_required`
  // is decided once, at start, from the bind address: a server that listens beyond loopback
  // (without --allow-no-auth) needs a key even when none is left.
  Authenticator(const std::vector<std::string>& static_keys, const StateStore* store, bool always_required = false);
  // Whether requests need a key: always_required, or from the first moment any key exists (keys
  // are read live: `pensieve keys add` reaches a running server). Revoking keys never turns it off.
  bool required() const;
  bool has_keys() const;  // a key is configured or stored now
  // The name of the matching key, or nullopt.
  std::optional<std::string> identify(std::string_view key) const;

 private:
  struct Known { std::string name, hash_hex; };
  std::vector<Known> static_;
  const StateStore* store_;
  mutable std::atomic<bool> required_;
};

}  // namespace pensieve::server
