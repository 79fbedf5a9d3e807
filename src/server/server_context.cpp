#include "server/server_context.h"

namespace pensieve::server {

ServerContext::ServerContext(ServerConfig cfg, std::unique_ptr<StateStore> st)
    : config(std::move(cfg)),
      store(std::move(st)),
      auth(config.api_keys, store.get(), !is_loopback_host(config.host) && !config.allow_no_auth) {}

std::shared_ptr<const ModelRegistry> ServerContext::models() const {
  std::lock_guard lock(mu_);
  return models_;
}

void ServerContext::publish_models(std::shared_ptr<const ModelRegistry> models) {
  std::lock_guard lock(mu_);
  models_ = std::move(models);
}

}  // namespace pensieve::server
