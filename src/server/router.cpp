#include "server/router.h"

#include <spdlog/spdlog.h>

#include <ctime>
#include <set>

#include "server/anthropic_api.h"
#include "server/chat_handler.h"
#include "server/prompt_builder.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

namespace {

constexpr std::string_view kModelsPrefix = "/v1/models/";

bool is_openai_path(std::string_view path) { return path.rfind("/v1/chat/", 0) == 0; }

std::string rfc3339(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// One model object that both SDKs accept (Anthropic: type/id/display_name/created_at; OpenAI:
// id/object/created/owned_by).
json model_object(const std::string& id, int64_t created) {
  return {{"type", "model"}, {"id", id}, {"display_name", id},
          {"created_at", rfc3339(created)}, {"object", "model"},
          {"created", created}, {"owned_by", "pensieve"}};
}

const ModelRegistry& ready_models(const ServerContext& ctx) {
  auto models = ctx.models();
  if (!models) throw ApiError::overloaded("the server is still loading its models");
  return *models;  // published registries live as long as the context
}

json list_body(json data) {
  json first = data.empty() ? json(nullptr) : data.front()["id"];
  json last = data.empty() ? json(nullptr) : data.back()["id"];
  return {{"object", "list"}, {"data", data}, {"has_more", false}, {"first_id", first}, {"last_id", last}};
}

// JSON is built outside coroutines: GCC 12 mishandles braced-init temporaries inside them.
// Every servable model, each saying whether it is loaded now.
json models_list(const ModelRegistry& models) {
  std::set<std::string> loaded;
  for (const auto& i : models.manager().loaded()) loaded.insert(i.name);
  json data = json::array();
  for (const auto& e : models.entries()) {
    json m = model_object(e.id, e.created_unix);
    m["loaded"] = loaded.count(e.id) > 0;
    data.push_back(m);
  }
  return list_body(data);
}

// The loaded models (`?loaded=true`, what `pensieve ps` shows): memory, when loaded, requests
// using them, and when keep_alive unloads them (null: not while in use, or never).
json loaded_list(const ModelRegistry& models) {
  json data = json::array();
  for (const auto& i : models.manager().loaded()) {
    const ModelEntry* e = models.find_id(i.name);
    json m = model_object(i.name, e ? e->created_unix : 0);
    m["loaded"] = true;
    m["memory_bytes"] = i.memory_bytes;
    m["loaded_at"] = rfc3339(i.loaded_unix);
    m["requests"] = i.in_use;
    m["expires_at"] = i.expires_unix ? json(rfc3339(*i.expires_unix)) : json(nullptr);
    data.push_back(m);
  }
  return list_body(data);
}

asio::awaitable<void> list_models(ServerContext& ctx, HttpExchange& ex) {
  const bool only_loaded = ex.query().find("loaded=true") != std::string_view::npos;
  const json body = only_loaded ? loaded_list(ready_models(ctx)) : models_list(ready_models(ctx));
  co_await ex.send_json(200, body);
}

asio::awaitable<void> get_model(ServerContext& ctx, HttpExchange& ex) {
  std::string name(ex.path().substr(kModelsPrefix.size()));
  const ModelEntry* e = ready_models(ctx).resolve(name);
  if (!e) throw ApiError::not_found("model: " + name);
  const json body = model_object(e->id, e->created_unix);
  co_await ex.send_json(200, body);
}

json count_body(int n) { return {{"input_tokens", n}}; }

asio::awaitable<void> count_tokens(ServerContext& ctx, HttpExchange& ex) {
  ChatRequest req = parse_anthropic_request(parse_json_body(ex), true);
  auto use = use_model(ctx, ex.executor(), ctx.models(), req.model, std::nullopt);
  ServedLease lease = co_await std::move(use);
  auto model = lease.model;
  auto count = [model, &req] { return static_cast<int>(prompt_tokens(*model, req).size()); };
  auto task = run_blocking<int>(ctx.blocking, ex.executor(), std::move(count));
  const int n = co_await std::move(task);
  const json body = count_body(n);
  co_await ex.send_json(200, body);
}

json status_body(const char* status) { return {{"status", status}}; }

asio::awaitable<void> health(ServerContext& ctx, HttpExchange& ex) {
  const char* status = ctx.stopping ? "stopping" : !ctx.models() ? "loading" : "ok";
  const json body = status_body(status);
  co_await ex.send_json(std::string_view(status) == "ok" ? 200 : 503, body);
}

LiveGauges live_gauges(const ServerContext& ctx) {
  LiveGauges g;
  g.connections = ctx.open_connections;
  int64_t blocks = 0, used = 0;
  if (auto models = ctx.models()) {
    for (const auto& model : models->loaded_models()) {
      const ServiceStats s = model->service().stats();
      g.running += s.running;
      g.waiting += s.waiting;
      blocks += s.kv_blocks_total;
      used += s.kv_blocks_used;
      g.kv_blocks_cached += s.kv_blocks_cached;
      g.preemptions += s.preemptions;
      g.model_load_seconds.push_back({model->id(), model->load_seconds()});
    }
    g.models_loaded = int(models->loaded_models().size());
    for (const auto& [name, c] : models->manager().counters()) g.model_counters.push_back({name, c});
  }
  if (blocks > 0) g.kv_cache_usage = double(used) / double(blocks);
  return g;
}

json stats_body(const ServerContext& ctx) {
  UsageTotals t = ctx.store ? ctx.store->totals() : UsageTotals{};
  json by_key = json::object();
  if (ctx.store)
    for (const auto& [key, u] : ctx.store->usage_by_key())
      by_key[key] = {{"requests", u.requests}, {"errors", u.errors}, {"input_tokens", u.input_tokens},
                     {"output_tokens", u.output_tokens}};
  double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.started).count();
  json body = {{"total_requests", t.requests},
            {"total_tokens", t.input_tokens + t.output_tokens},
            {"total_input_tokens", t.input_tokens},
            {"total_output_tokens", t.output_tokens},
            // The decode speed of decode_tokens_per_second, over every request so far.
            {"average_tps", t.decode_seconds > 0 ? t.decode_tokens / t.decode_seconds : 0.0},
            // Input tokens read from the prefix cache instead of computed.
            {"cache_hit_rate", t.input_tokens > 0 ? double(t.cached_input_tokens) / double(t.input_tokens) : 0.0},
            {"peak_memory_mb", peak_resident_memory_bytes() / (1024.0 * 1024.0)},
            {"uptime", uptime},
            {"usage_by_key", by_key}};
  return body;
}

asio::awaitable<void> stats(ServerContext& ctx, HttpExchange& ex) {
  const json body = stats_body(ctx);
  co_await ex.send_json(200, body);
}

struct Route {
  const char* method;
  std::string_view path;
  bool prefix;
  bool needs_key;
};

constexpr Route kRoutes[] = {
    {"GET", "/health", false, false},       {"GET", "/metrics", false, true},
    {"GET", "/v1/stats", false, true},      {"GET", "/v1/models", false, true},
    {"GET", "/v1/models/", true, true},     {"POST", "/v1/messages", false, true},
    {"POST", "/v1/messages/count_tokens", false, true},
    {"POST", "/v1/chat/completions", false, true},
};

bool path_matches(const Route& r, std::string_view path) {
  return r.prefix ? path.size() > r.path.size() && path.rfind(r.path, 0) == 0 : path == r.path;
}

// Throws 401 when a key is needed and missing or wrong; returns the caller's name for usage.
std::string authenticate(const ServerContext& ctx, const HttpExchange& ex) {
  if (!ctx.auth.required()) return "anonymous";
  std::string key = presented_key(ex.header("x-api-key"), ex.header("authorization"));
  if (auto name = ctx.auth.identify(key)) return *name;
  if (!ctx.auth.has_keys()) {
    spdlog::warn("{} refused: this server requires an API key and none is left (were they all revoked?); "
                 "add one with `pensieve keys add NAME`", std::string(ex.path().substr(0, 100)));
    throw ApiError::authentication("this server requires an API key and has none configured");
  }
  if (key.empty())
    throw ApiError::authentication("missing API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'");
  throw ApiError::authentication("invalid x-api-key");
}

// Holds one of a key's max_requests_per_key slots while a request runs; 429 when none is free.
class KeySlot {
 public:
  KeySlot(ServerContext& ctx, std::string key) : ctx_(ctx), key_(std::move(key)) {
    int& n = ctx_.requests_by_key[key_];
    const int limit = ctx_.config.max_requests_per_key;
    if (limit > 0 && n >= limit)
      throw ApiError::rate_limit("API key '" + key_ + "' already has " + std::to_string(n) +
                                 " requests running (max_requests_per_key)");
    ++n;
  }
  ~KeySlot() {
    auto it = ctx_.requests_by_key.find(key_);
    if (--it->second == 0) ctx_.requests_by_key.erase(it);
  }
  KeySlot(const KeySlot&) = delete;
  KeySlot& operator=(const KeySlot&) = delete;

 private:
  ServerContext& ctx_;
  std::string key_;
};

asio::awaitable<void> dispatch(ServerContext& ctx, HttpExchange& ex) {
  const std::string_view path = ex.path();
  const std::string method(ex.request().method_string());
  const Route* found = nullptr;
  std::string allowed;
  for (const Route& r : kRoutes) {
    if (!path_matches(r, path)) continue;
    if (method == r.method) found = &r;
    else allowed = r.method;
  }
  if (!found && !allowed.empty())
    throw ApiError::method_not_allowed("method " + method + " is not allowed on " + std::string(path) +
                                       " (use " + allowed + ")");
  if (!found) throw ApiError::not_found("no route for " + method + " " + std::string(path));
  std::string key_name = found->needs_key ? authenticate(ctx, ex) : "anonymous";
  std::optional<KeySlot> slot;
  if (key_name != "anonymous") slot.emplace(ctx, key_name);

  if (path == "/health") co_return co_await health(ctx, ex);
  if (path == "/metrics") {
    const std::string text = ctx.metrics.render(live_gauges(ctx));
    co_return co_await ex.send(200, "text/plain; version=0.0.4; charset=utf-8", text);
  }
  if (path == "/v1/stats") co_return co_await stats(ctx, ex);
  if (path == "/v1/models") co_return co_await list_models(ctx, ex);
  if (found->prefix) co_return co_await get_model(ctx, ex);
  if (path == "/v1/messages/count_tokens") co_return co_await count_tokens(ctx, ex);
  if (!ctx.models()) throw ApiError::overloaded("the server is still loading its models");
  co_await handle_chat(ctx, ex, path == "/v1/chat/completions", key_name);
}

}  // namespace

std::string route_label(std::string_view path) {
  for (const Route& r : kRoutes)
    if (path_matches(r, path)) return r.prefix ? std::string(r.path) + "{id}" : std::string(r.path);
  return "other";
}

namespace {

json error_body_for(std::string_view path, const ApiError& e, const std::string& request_id, int& status) {
  if (is_openai_path(path)) {
    status = openai_status(e);
    return openai_error_body(e);
  }
  status = e.status();
  return anthropic_error_body(e, request_id);
}

}  // namespace

asio::awaitable<void> send_error(HttpExchange& ex, const ApiError& e) {
  if (e.retry_after() > 0) ex.add_header("retry-after", std::to_string(e.retry_after()));
  int status = 500;
  const json body = error_body_for(ex.path(), e, ex.request_id(), status);
  co_await ex.send_json(status, body);
}

asio::awaitable<void> route_request(ServerContext& ctx, HttpExchange& ex) {
  std::optional<ApiError> failure;
  try {
    co_await dispatch(ctx, ex);
  } catch (const ApiError& e) {
    failure = e;
  } catch (const std::exception& e) {
    failure = ApiError::internal(std::string("internal error: ") + e.what());
  } catch (...) {
    failure = ApiError::internal("internal error");
  }
  if (failure && ex.status() == 0 && !ex.client_gone()) co_await send_error(ex, *failure);
}

}  // namespace pensieve::server
