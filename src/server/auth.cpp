#include "server/auth.h"

#include <boost/asio/ip/address.hpp>

#include "util/sha256.h"
#include "server/state_store.h"

namespace pensieve::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string presented_key(std::string_view x_api_key, std::string_view authorization) {
  if (!x_api_key.empty()) return std::string(x_api_key);
  constexpr std::string_view bearer = "Bearer ";
  if (authorization.size() > bearer.size()) {
    bool match = true;
    for (size_t i = 0; i < bearer.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
          std::tolower(static_cast<unsigned char>(bearer[i])))
        match = false;
    if (match) {
      std::string_view key = authorization.substr(bearer.size());
      while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
      while (!key.empty() && key.back() == ' ') key.remove_suffix(1);
      return std::string(key);
    }
  }
  return "";
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

Authenticator::Authenticator(const std::vector<std::string>& static_keys, const StateStore* store,
                             bool always_required)
    : store_(store), required_(always_required) {
  for (size_t i = 0; i < static_keys.size(); ++i)
    if (!static_keys[i].empty())
      static_.push_back({"key-" + std::to_string(i + 1), sha256_hex(static_keys[i])});
}

bool Authenticator::has_keys() const { return !static_.empty() || (store_ && !store_->active_keys().empty()); }

bool Authenticator::required() const {
  if (!required_ && has_keys()) required_ = true;
  return required_;
}

std::optional<std::string> Authenticator::identify(std::string_view key) const {
  if (key.empty()) return std::nullopt;
  const std::string digest = sha256_hex(key);
  std::optional<std::string> found;
  auto check = [&](const std::string& name, const std::string& hash) {
    if (constant_time_equal(digest, hash) && !found) found = name;
  };
  for (const auto& k : static_) check(k.name, k.hash_hex);
  if (store_)
    for (const auto& k : store_->active_keys()) check(k.name, k.hash_hex);
  return found;
}

}  // namespace pensieve::server
