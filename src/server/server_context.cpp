#include "server/server_context.h"

#include "server/api_error.h"
#include "util/error.h"

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

std::optional<std::chrono::milliseconds> request_keep_alive(const nlohmann::ordered_json& body) {
  if (!body.is_object() || !body.contains("keep_alive") || body["keep_alive"].is_null()) return std::nullopt;
  const auto& v = body["keep_alive"];
  if (v.is_number()) {
    const double seconds = v.get<double>();
    return std::chrono::milliseconds(seconds < 0 ? -1 : int64_t(seconds * 1000));
  }
  if (!v.is_string()) throw ApiError::invalid_request("keep_alive: expected a number of seconds or a duration string");
  try {
    return parse_keep_alive(v.get<std::string>());
  } catch (const Error& e) {
    throw ApiError::invalid_request(std::string("keep_alive: ") + e.what());
  }
}

asio::awaitable<ServedLease> use_model(ServerContext& ctx, asio::any_io_executor ex,
                                       std::shared_ptr<const ModelRegistry> models, const std::string& name,
                                       std::optional<std::chrono::milliseconds> keep_alive) {
  if (!models) throw ApiError::overloaded("the server is still loading its models");
  const ModelEntry* entry = models->resolve(name);
  if (!entry) throw ApiError::not_found("model: " + name);
  ServedLease lease = models->try_acquire(*entry, keep_alive);
  if (lease) co_return lease;
  auto load = [models, entry, keep_alive] { return models->acquire(*entry, keep_alive); };
  auto task = run_blocking<ServedLease>(ctx.loading, ex, std::move(load));
  std::string failure;
  try {
    lease = co_await std::move(task);
  } catch (const Error& e) {
    failure = e.what();
  }
  if (!failure.empty()) throw ApiError::internal(failure);
  co_return lease;
}

}  // namespace pensieve::server
