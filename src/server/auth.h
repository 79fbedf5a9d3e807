// API-key checks: keys given on the command line or in the config, and keys in the state store
// (`pensieve keys add`). Keys are compared as SHA-256 digests in constant time, against every
// candidate, so the time taken says nothing about which key came close.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::server {

class StateStore;

bool constant_time_equal(std::string_view a, std::string_view b);

// The key a request presents: `x-api-key`, else `Authorization: Bearer KEY`.
std::string presented_key(std::string_view x_api_key, std::string_view authorization);

class Authenticator {
 public:
  // store may be null. Static keys are named "key-1", "key-2"… in usage records.
  Authenticator(const std::vector<std::string>& static_keys, const StateStore* store);
  bool required() const;  // any key configured (read live: `keys add` works on a running server)
  // The name of the matching key, or nullopt.
  std::optional<std::string> identify(std::string_view key) const;

 private:
  struct Known { std::string name, hash_hex; };
  std::vector<Known> static_;
  const StateStore* store_;
};

}  // namespace pensieve::server
