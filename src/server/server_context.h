// What every request handler shares: settings, the models (published once loaded), metrics, the
// state store, authentication, and a pool for CPU work (template rendering, tokenization) that
// must not run on the network threads.
#pragma once
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "server/auth.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/server_config.h"
#include "server/state_store.h"

namespace pensieve::server {

namespace asio = boost::asio;

class ServerContext {
 public:
  ServerContext(ServerConfig config, std::unique_ptr<StateStore> store);

  ServerConfig config;
  Metrics metrics;
  std::unique_ptr<StateStore> store;  // may be null (tests)
  Authenticator auth;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  asio::thread_pool blocking{2};
  // Model loads run here, so that a request waiting for its model holds no other work up.
  asio::thread_pool loading{4};
  std::atomic<bool> stopping{false};
  std::atomic<int> active_requests{0};
  std::atomic<int> open_connections{0};
  // Requests in flight per API key name, for max_requests_per_key (the network thread's alone).
  std::unordered_map<std::string, int> requests_by_key;

  // Null until the models are loaded.
  std::shared_ptr<const ModelRegistry> models() const;
  void publish_models(std::shared_ptr<const ModelRegistry> models);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const ModelRegistry> models_;
};

// Runs fn() on the blocking pool and resumes the awaiting coroutine on `ex` with its result (or
// exception). Not a coroutine itself; await the returned object from a named variable.
template <typename T, typename F>
asio::awaitable<T> run_blocking(asio::thread_pool& pool, asio::any_io_executor ex, F fn) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, T)>(
      [&pool, ex, fn = std::move(fn)](auto handler) mutable {
        asio::post(pool, [ex, fn = std::move(fn), handler = std::move(handler)]() mutable {
          std::exception_ptr error;
          T value{};
          try {
            value = fn();
          } catch (...) {
            error = std::current_exception();
          }
          asio::post(ex, [handler = std::move(handler), error, value = std::move(value)]() mutable {
            handler(error, std::move(value));
          });
        });
      },
      asio::use_awaitable);
}

// The request's Ollama-style "keep_alive" (seconds, or a duration such as "5m"; 0 unloads the
// model after the request, negative keeps it loaded), or nullopt. ApiError 400 when malformed.
std::optional<std::chrono::milliseconds> request_keep_alive(const nlohmann::ordered_json& body);

// The model a request names, loaded first when it is not (on ctx.loading; the request waits,
// others go on). ApiError 404 for an unknown name, 500 naming the file when the load fails.
asio::awaitable<ServedLease> use_model(ServerContext& ctx, asio::any_io_executor ex,
                                       std::shared_ptr<const ModelRegistry> models, const std::string& name,
                                       std::optional<std::chrono::milliseconds> keep_alive);

}  // namespace pensieve::server
