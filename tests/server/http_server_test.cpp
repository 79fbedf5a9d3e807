// The HTTP server in-process over loopback with a fake model: routing, statuses and bodies of each
// error class, auth headers, SSE framing, overload, client disconnects and timeouts.
#include <gtest/gtest.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <filesystem>
#include <optional>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_model.h"
#include "server/http_server.h"
#include "server/state_store.h"
#include "runtime/grammar.h"

using namespace pensieve::server;
using nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  http::response<http::string_body> res;
};

class ServerFixture : public ::testing::Test {
 protected:
  // Listens on cfg.host (127.0.0.1 unless a test binds 0.0.0.0; clients always connect to 127.0.0.1).
  void start(ServerConfig cfg = {}, std::unique_ptr<StateStore> store = nullptr) {
    cfg.port = 0;
    cfg.ping_interval_ms = 50;
    cfg.shutdown_grace_ms = 200;
    ctx_ = std::make_unique<ServerContext>(cfg, std::move(store));
    auto registry = std::make_shared<ModelRegistry>(true);
    model_->max_waiting = cfg.max_waiting;
    registry->add({model_, {"alias-*"}});
    ctx_->publish_models(registry);
    server_ = std::make_unique<HttpServer>(*ctx_);
    server_->listen(cfg.host, 0);
    thread_ = std::thread([this] { server_->run(false); });
  }
  void TearDown() override {
    if (server_) {
      model_->release = true;
      server_->shutdown();
      thread_.join();
      model_->service().cancel_all();
      model_->service().wait_idle(std::chrono::seconds(10));
    }
  }

  Reply call(http::verb verb, const std::string& target, const std::string& body = "",
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    for (auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    Reply r;
    http::read(stream, buffer, r.res);
    r.status = r.res.result_int();
    r.raw = r.res.body();
    if (r.res[http::field::content_type].starts_with("application/json")) r.body = json::parse(r.raw);
    return r;
  }
  // Sends `bytes` as they are and reads one response (status 0 when the connection ended without
  // one). Bounded: the exchange gives up after 10 s.
  tcp::socket connect(asio::io_context& ioc) {
    tcp::socket sock(ioc);
    sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    return sock;
  }

  Reply raw(const std::string& bytes) {
    asio::io_context ioc;
    Reply r;
    auto client = [&]() -> asio::awaitable<void> {
      beast::tcp_stream stream(co_await asio::this_coro::executor);
      stream.expires_after(std::chrono::seconds(10));
      beast::error_code ec;
      const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), server_->port());
      co_await stream.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      co_await asio::async_write(stream, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
      beast::flat_buffer buffer;
      co_await http::async_read(stream, buffer, r.res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      r.status = r.res.result_int();
      r.raw = r.res.body();
    };
    asio::co_spawn(ioc, client(), asio::detached);
    ioc.run();
    if (r.res[http::field::content_type].starts_with("application/json")) r.body = json::parse(r.raw);
    return r;
  }
  void expect_still_serving(const std::string& after) {
    EXPECT_EQ(call(http::verb::get, "/health").status, 200) << "after " << after;
  }

  Reply post(const std::string& target, const json& body, std::vector<std::pair<std::string, std::string>> h = {}) {
    return call(http::verb::post, target, body.dump(), std::move(h));
  }

  static json message(bool stream = false, int max_tokens = 5) {
    return {{"model", "claude-3-sonnet-20240229"}, {"max_tokens", max_tokens}, {"stream", stream},
            {"messages", {{{"role", "user"}, {"content", "Hello!"}}}}};
  }

  std::shared_ptr<test::FakeModel> model_ = std::make_shared<test::FakeModel>();
  std::unique_ptr<ServerContext> ctx_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

// Waits up to `ms` for the server to close the connection; returns every byte it sent before
// closing, or nullopt when it is still open at the end.
std::optional<std::string> read_until_closed(tcp::socket& s, int ms) {
  std::string got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{s.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::recv(s.native_handle(), buf, sizeof buf, 0);
    if (n <= 0) return got;  // EOF or reset
    got.append(buf, static_cast<size_t>(n));
  }
}

void expect_anthropic_error(const Reply& r, int status, const std::string& type) {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.body["type"], "error") << r.raw;
  EXPECT_EQ(r.body["error"]["type"], type) << r.raw;
  EXPECT_TRUE(r.body["error"]["message"].is_string());
  EXPECT_EQ(r.body["request_id"], std::string(r.res["request-id"]));
}

}  // namespace

TEST_F(ServerFixture, CreateMessageAndCountTokens) {
  start();
  Reply r = post("/v1/messages", message());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(std::string(r.res["request-id"]).rfind("req_", 0), 0u);
  EXPECT_EQ(r.body["model"], "claude-3-sonnet-20240229");
  EXPECT_EQ(r.body["content"][0]["text"], "w0 w1 w2 w3 w4 ");
  EXPECT_EQ(r.body["stop_reason"], "max_tokens");
  EXPECT_EQ(std::string(r.body["id"]).rfind("msg_", 0), 0u);
  Reply c = post("/v1/messages/count_tokens?beta=true", message());
  ASSERT_EQ(c.status, 200) << c.raw;
  EXPECT_EQ(c.body["input_tokens"], r.body["usage"]["input_tokens"]);
  EXPECT_GT(c.body["input_tokens"].get<int>(), 0);
}

TEST_F(ServerFixture, StreamHasTheEventSequence) {
  model_->eos_after = 2;
  start();
  Reply r = post("/v1/messages?beta=true", message(true, 10), {{"anthropic-beta", "a,b"}, {"anthropic-version", "2023-06-01"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.res[http::field::content_type], "text/event-stream");
  std::vector<std::string> names;
  for (size_t pos = 0; (pos = r.raw.find("event: ", pos)) != std::string::npos; pos += 7)
    names.push_back(r.raw.substr(pos + 7, r.raw.find('\n', pos) - pos - 7));
  std::vector<std::string> expected = {"message_start", "content_block_start", "ping", "content_block_delta",
                                       "content_block_delta", "content_block_stop", "message_delta", "message_stop"};
  // Keep-alive pings may come between events while the model works; drop those after the first.
  std::vector<std::string> trimmed;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] != "ping" || i == 2) trimmed.push_back(names[i]);
  EXPECT_EQ(trimmed, expected) << r.raw;
  EXPECT_NE(r.raw.find("\"stop_reason\":\"end_turn\""), std::string::npos);
}

TEST_F(ServerFixture, EachErrorClassAndTheServerKeepsServing) {
  ServerConfig cfg;
  cfg.max_body_bytes = 4096;
  start(cfg);
  expect_anthropic_error(call(http::verb::get, "/nope"), 404, "not_found_error");
  expect_anthropic_error(call(http::verb::get, "/v1/messages"), 405, "invalid_request_error");
  expect_anthropic_error(call(http::verb::post, "/v1/messages", "{not json"), 400, "invalid_request_error");
  json m = message();
  m["model"] = "gpt-unknown";
  expect_anthropic_error(post("/v1/messages", m), 404, "not_found_error");
  m = message();
  m["messages"][0]["content"] = std::string(8000, 'x');
  expect_anthropic_error(post("/v1/messages", m), 413, "request_too_large");
  m = message(), m["messages"][0]["content"] = std::string(300, 'x');
  Reply tl = post("/v1/messages", m);
  expect_anthropic_error(tl, 400, "invalid_request_error");
  EXPECT_NE(tl.body["error"]["message"].get<std::string>().find("256 tokens"), std::string::npos);
  Reply oa = post("/v1/chat/completions", json{{"model", "fake-model"}, {"messages", json::array()}});
  EXPECT_EQ(oa.status, 400);
  EXPECT_TRUE(oa.body["error"]["message"].is_string());
  EXPECT_FALSE(oa.body.contains("type"));
  EXPECT_EQ(post("/v1/messages", message()).status, 200);
  EXPECT_EQ(call(http::verb::get, "/v1/models/alias-x").body["id"], "fake-model");
  Reply models = call(http::verb::get, "/v1/models");
  EXPECT_EQ(models.body["data"][0]["id"], "fake-model");
  EXPECT_EQ(models.body["first_id"], "fake-model");
  EXPECT_EQ(models.body["has_more"], false);
  EXPECT_EQ(models.body["object"], "list");
}

TEST_F(ServerFixture, ApiKeysByEitherHeader) {
  ServerConfig cfg;
  cfg.api_keys = {"sekret"};
  start(cfg);
  expect_anthropic_error(post("/v1/messages", message()), 401, "authentication_error");
  expect_anthropic_error(post("/v1/messages", message(), {{"x-api-key", "wrong"}}), 401, "authentication_error");
  EXPECT_EQ(post("/v1/messages", message(), {{"x-api-key", "sekret"}}).status, 200);
  EXPECT_EQ(post("/v1/messages", message(), {{"authorization", "Bearer sekret"}}).status, 200);
  EXPECT_EQ(call(http::verb::get, "/health").status, 200);
  EXPECT_EQ(call(http::verb::get, "/metrics").status, 401);
  Reply metrics = call(http::verb::get, "/metrics", "", {{"x-api-key", "sekret"}});
  EXPECT_NE(metrics.raw.find("pensieve_requests_total{route=\"/v1/messages\",status=\"200\"} 2"), std::string::npos)
      << metrics.raw;
  EXPECT_NE(metrics.raw.find("pensieve_time_to_first_token_seconds_count 2"), std::string::npos);
}

// Bound beyond loopback, the server needs a key for good: revoking the last stored key turns every
// route but /health into a 401, never into an open server.
TEST_F(ServerFixture, RevokingTheLastKeyOnAPublicBindLeavesNoRouteOpen) {
  const auto dir = std::filesystem::temp_directory_path() / ("pensieve-auth-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto store = std::make_unique<StateStore>(dir);
  const std::string key = store->add_key("only");
  StateStore* keys = store.get();
  ServerConfig cfg;
  cfg.host = "0.0.0.0";  // reached at 127.0.0.1 all the same
  start(cfg, std::move(store));
  EXPECT_EQ(post("/v1/messages", message(), {{"x-api-key", key}}).status, 200);
  expect_anthropic_error(post("/v1/messages", message()), 401, "authentication_error");
  ASSERT_TRUE(keys->revoke_key("only"));
  expect_anthropic_error(post("/v1/messages", message()), 401, "authentication_error");
  expect_anthropic_error(post("/v1/messages", message(), {{"x-api-key", key}}), 401, "authentication_error");
  EXPECT_EQ(call(http::verb::get, "/v1/models").status, 401);
  EXPECT_EQ(call(http::verb::get, "/metrics").status, 401);
  EXPECT_EQ(post("/v1/chat/completions", json{{"model", "fake-model"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}}).status, 401);
  EXPECT_EQ(call(http::verb::get, "/health").status, 200);
  // A new key works at once.
  const std::string fresh = keys->add_key("fresh");
  EXPECT_EQ(post("/v1/messages", message(), {{"x-api-key", fresh}}).status, 200);
  std::filesystem::remove_all(dir);
}

TEST_F(ServerFixture, FullQueueIsOverloadedAndOpenAIGets429) {
  ServerConfig cfg;
  cfg.max_waiting = 0;
  model_->hold = true;
  start(cfg);
  std::thread first([&] { EXPECT_EQ(post("/v1/messages", message()).status, 200); });
  while (model_->started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  // The running generation does not block /health or other answers.
  EXPECT_EQ(call(http::verb::get, "/health").status, 200);
  Reply busy = post("/v1/messages", message());
  expect_anthropic_error(busy, 529, "overloaded_error");
  EXPECT_EQ(busy.res["retry-after"], "2");
  Reply oa = post("/v1/chat/completions", json{{"model", "fake-model"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  EXPECT_EQ(oa.status, 429);
  EXPECT_EQ(oa.res["retry-after"], "2");
  model_->release = true;
  first.join();
}

TEST_F(ServerFixture, ClientDisconnectCancelsGeneration) {
  model_->token_delay_ms = 5;
  start();
  {
    asio::io_context ioc;
    tcp::socket sock(ioc);
    sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    std::string body = message(true, 100000 / 1000 * 2).dump();
    std::string req = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body;
    asio::write(sock, asio::buffer(req));
    std::string seen;
    char buf[512];
    while (seen.find("content_block_delta") == std::string::npos)  // generation has begun
      seen.append(buf, sock.read_some(asio::buffer(buf)));
  }  // closed here
  for (int i = 0; i < 200 && model_->cancelled == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(model_->cancelled, 1);
}

TEST_F(ServerFixture, RequestTimeoutEndsTheRequest) {
  ServerConfig cfg;
  cfg.request_timeout_ms = 150;
  model_->hold = true;
  start(cfg);
  expect_anthropic_error(post("/v1/messages", message()), 504, "timeout_error");
  Reply s = post("/v1/messages", message(true));
  EXPECT_EQ(s.status, 200);
  EXPECT_NE(s.raw.find("event: error"), std::string::npos);
  EXPECT_NE(s.raw.find("timeout_error"), std::string::npos);
  model_->release = true;
}

TEST_F(ServerFixture, OpenAIStreamEndsWithDone) {
  start();
  json body = {{"model", "fake-model"}, {"stream", true}, {"max_tokens", 3},
               {"stream_options", {{"include_usage", true}}},
               {"messages", {{{"role", "user"}, {"content", "x"}}}}};
  Reply r = post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.raw.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_NE(r.raw.find("\"completion_tokens\":3"), std::string::npos);
  EXPECT_EQ(r.raw.substr(r.raw.size() - 14), "data: [DONE]\n\n");
}

TEST_F(ServerFixture, ServerClampReportsEndTurnToAnthropicAndLengthToOpenAI) {
  ServerConfig cfg;
  cfg.max_output_tokens = 3;
  start(cfg);
  Reply a = post("/v1/messages", message(false, 128000));
  ASSERT_EQ(a.status, 200) << a.raw;
  EXPECT_EQ(a.body["usage"]["output_tokens"], 3);
  EXPECT_EQ(a.body["stop_reason"], "end_turn");  // the client's max_tokens was not reached
  EXPECT_EQ(post("/v1/messages", message(false, 2)).body["stop_reason"], "max_tokens");
  Reply o = post("/v1/chat/completions", json{{"model", "fake-model"}, {"max_tokens", 1000},
                                              {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  EXPECT_EQ(o.body["choices"][0]["finish_reason"], "length");
}

// Beast 1.74 throws std::length_error for a header field of 65,534 bytes or more; that once ended
// the process. Every size across the 16-bit boundary, in a name, a value or the request target, is
// answered, and the server goes on serving.
TEST_F(ServerFixture, OversizedHeadersAreAnsweredAndTheServerKeepsServing) {
  ServerConfig cfg;
  cfg.max_header_bytes = 512 * 1024;  // above every 16-bit size, so that those reach Beast's fields
  start(cfg);
  for (size_t n : {size_t(65533), size_t(65534), size_t(65535), size_t(65536), size_t(300 * 1024)}) {
    const std::string big(n, 'a');
    const bool fits_field = n + 2 <= 65535;
    const bool fits_header = n < 512 * 1024 - 64;
    Reply v = raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n");
    EXPECT_EQ(v.status, fits_field ? 200 : 431) << "value of " << n << " bytes: " << v.raw;
    if (!fits_field) expect_anthropic_error(v, 431, "invalid_request_error");
    expect_still_serving("a value of " + std::to_string(n) + " bytes");
    Reply k = raw("GET /health HTTP/1.1\r\nHost: x\r\n" + big + ": 1\r\n\r\n");
    EXPECT_EQ(k.status, fits_field ? 200 : 431) << "name of " << n << " bytes: " << k.raw;
    expect_still_serving("a name of " + std::to_string(n) + " bytes");
    Reply t = raw("GET /" + big + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(t.status, fits_header ? 404 : 431) << "target of " << n << " bytes";
    expect_still_serving("a target of " + std::to_string(n) + " bytes");
  }
  // Many small fields: under the header limit they are served, beyond it 431.
  for (int count : {1000, 20000, 40000}) {
    std::string fields;
    for (int i = 0; i < count; ++i) fields += "X-F" + std::to_string(i) + ": v\r\n";
    Reply r = raw("GET /health HTTP/1.1\r\nHost: x\r\n" + fields + "\r\n");
    EXPECT_EQ(r.status, fields.size() < 512 * 1024 - 64 ? 200 : 431) << count << " fields";
    expect_still_serving(std::to_string(count) + " fields");
  }
  // A header that never ends, and one line without a colon.
  EXPECT_EQ(raw("GET /health HTTP/1.1\r\nX: " + std::string(1 << 20, 'b')).status, 431);
  expect_still_serving("an endless header");
  EXPECT_EQ(raw("GET /health HTTP/1.1\r\nno colon here\r\n\r\n").status, 400);
  expect_still_serving("a line without a colon");
}

TEST_F(ServerFixture, HeaderAndIdleTimeoutsEndSlowAndSilentConnections) {
  ServerConfig cfg;
  cfg.header_timeout_ms = 300;
  cfg.idle_timeout_ms = 400;
  start(cfg);
  asio::io_context ioc;
  tcp::socket silent = connect(ioc);
  tcp::socket slow = connect(ioc);
  asio::write(slow, asio::buffer(std::string("GET /health HTTP/1.1\r\nHost: x\r\n")));  // never ends
  tcp::socket idle = connect(ioc);
  asio::write(idle, asio::buffer(std::string("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_EQ(read_until_closed(silent, 5000), std::optional<std::string>(""));
  auto slow_got = read_until_closed(slow, 5000);
  ASSERT_TRUE(slow_got.has_value());
  EXPECT_EQ(slow_got->rfind("HTTP/1.1 408", 0), 0u) << *slow_got;
  auto idle_got = read_until_closed(idle, 5000);  // answered, then closed when idle
  ASSERT_TRUE(idle_got.has_value());
  EXPECT_EQ(idle_got->rfind("HTTP/1.1 200", 0), 0u) << *idle_got;
  expect_still_serving("the timeouts");
}

TEST_F(ServerFixture, ConnectionsBeyondTheCapKeepAReserveForHealth) {
  ServerConfig cfg;
  cfg.max_connections = 2;
  start(cfg);
  asio::io_context ioc;
  std::vector<tcp::socket> held;
  auto hold_one = [&] {
    held.push_back(connect(ioc));
    for (int i = 0; i < 200 && ctx_->open_connections < static_cast<int>(held.size()); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  hold_one(), hold_one();
  ASSERT_EQ(ctx_->open_connections, 2);
  // In the reserve: /health and /metrics answer (one request, then close), the rest is 529.
  Reply health = raw("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(health.status, 200);
  EXPECT_FALSE(health.res.keep_alive());
  EXPECT_EQ(raw("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
  const std::string body = message().dump();
  Reply busy = raw("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n\r\n" + body);
  expect_anthropic_error(busy, 529, "overloaded_error");
  EXPECT_EQ(busy.res["retry-after"], "2");
  for (int i = 0; i < 400 && ctx_->open_connections > 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  while (held.size() < 10) hold_one();  // the reserve is full too
  ASSERT_EQ(ctx_->open_connections, 10);
  tcp::socket refused = connect(ioc);
  asio::write(refused, asio::buffer(std::string("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_EQ(read_until_closed(refused, 5000), std::optional<std::string>(""));  // closed at once, unanswered
  held.clear();
  for (int i = 0; i < 400 && ctx_->open_connections > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(ctx_->open_connections, 0);
  Reply after = call(http::verb::get, "/health");
  EXPECT_EQ(after.status, 200);
  EXPECT_TRUE(after.res.keep_alive());
}

TEST_F(ServerFixture, AHalfClosedClientStillGetsItsAnswer) {
  start();
  asio::io_context ioc;
  tcp::socket sock = connect(ioc);
  const std::string body = message().dump();
  asio::write(sock, asio::buffer("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body));
  sock.shutdown(tcp::socket::shutdown_send);
  auto got = read_until_closed(sock, 10000);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->rfind("HTTP/1.1 200", 0), 0u) << *got;
  EXPECT_NE(got->find("w0 w1 w2 w3 w4"), std::string::npos) << *got;
}

TEST_F(ServerFixture, OnlyPlainOrChunkedBodiesAreRead) {
  start();
  const std::string body = message().dump();
  char size[32];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const std::string chunked = std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n";
  EXPECT_EQ(raw("POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked).status, 200);
  Reply gz = raw("POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked);
  expect_anthropic_error(gz, 501, "invalid_request_error");
  EXPECT_NE(gz.body["error"]["message"].get<std::string>().find("gzip"), std::string::npos);
  EXPECT_EQ(raw("POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n" + chunked).status, 400);
  expect_still_serving("transfer codings");
}

// The JSON layer: nesting beyond 128 levels, invalid UTF-8 and numbers beyond every range are
// 400s or clamped, never a crash or a 500.
TEST_F(ServerFixture, HostileJsonIsRefusedOrClamped) {
  start();
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  Reply d = call(http::verb::post, "/v1/messages",
                 R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":)" + deep + "}]}");
  expect_anthropic_error(d, 400, "invalid_request_error");
  EXPECT_NE(d.body["error"]["message"].get<std::string>().find("deeper than 128"), std::string::npos);
  expect_still_serving("deep nesting");
  json schema = json::object();
  for (int i = 0; i < 40; ++i) schema = json{{"type", "object"}, {"properties", {{"x", schema}}}};
  json m = message();
  m["tools"] = json::array({{{"name", "t"}, {"input_schema", schema}}});
  EXPECT_EQ(post("/v1/messages", m).status, 200);  // deep, but within the limit
  Reply u = call(http::verb::post, "/v1/messages",
                 "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc3\"}]}");
  expect_anthropic_error(u, 400, "invalid_request_error");
  Reply o = call(http::verb::post, "/v1/chat/completions",
                 "{\"model\":\"fake-model\",\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}");
  EXPECT_EQ(o.status, 400);
  expect_still_serving("invalid UTF-8");
  for (const char* number : {"1e400", "-1e400", "18446744073709551616", "1e30", "123456789012345678901234567890"}) {
    const std::string n(number);
    Reply a = call(http::verb::post, "/v1/messages",
                   R"({"model":"fake-model","max_tokens":)" + n + R"(,"temperature":)" + n +
                       R"(,"messages":[{"role":"user","content":"x"}]})");
    EXPECT_TRUE(a.status == 400 || a.status == 200) << number << ": " << a.raw;
    Reply t = call(http::verb::post, "/v1/messages",
                   R"({"model":"fake-model","max_tokens":)" + n + R"(,"messages":[{"role":"user","content":"x"}]})");
    // 1e400 is no double at all (400); the rest are whole numbers beyond 64 bits, clamped.
    EXPECT_EQ(t.status, n.find("e400") != std::string::npos ? 400 : 200) << number << ": " << t.raw;
    expect_still_serving(std::string("the number ") + number);
  }
}

// A client that stops reading a stream: the write stalls for idle_timeout_ms, the connection
// closes and the generation is cancelled; the server goes on serving.
TEST_F(ServerFixture, AStalledStreamReaderIsCutOff) {
  model_ = std::make_shared<test::FakeModel>("fake-model", 1 << 22);
  ServerConfig cfg;
  cfg.idle_timeout_ms = 300;
  start(cfg);
  asio::io_context ioc;
  tcp::socket sock(ioc);
  sock.open(tcp::v4());
  sock.set_option(asio::socket_base::receive_buffer_size(4096));
  sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  const std::string body = message(true, 2000000).dump();
  asio::write(sock, asio::buffer("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body));
  // Until the loopback buffers (megabytes of events) are full the writes go on: ~7 s in a sanitizer
  // build at -O1, ~11 s at -O0. Bounded at 60 s.
  for (int i = 0; i < 12000 && model_->cancelled == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(model_->cancelled, 1);
  expect_still_serving("a stalled stream reader");
}

TEST_F(ServerFixture, PerKeyConcurrencyLimitIs429WithRetryAfter) {
  ServerConfig cfg;
  cfg.api_keys = {"k1", "k2"};
  cfg.max_requests_per_key = 1;
  cfg.max_waiting = 8;
  model_->hold = true;
  start(cfg);
  std::thread first([&] { EXPECT_EQ(post("/v1/messages", message(), {{"x-api-key", "k1"}}).status, 200); });
  while (model_->started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  Reply limited = post("/v1/messages", message(), {{"x-api-key", "k1"}});
  expect_anthropic_error(limited, 429, "rate_limit_error");
  EXPECT_EQ(limited.res["retry-after"], "1");
  Reply oa = post("/v1/chat/completions", json{{"model", "fake-model"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}},
                  {{"authorization", "Bearer k1"}});
  EXPECT_EQ(oa.status, 429);
  EXPECT_EQ(oa.body["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(call(http::verb::get, "/v1/models", "", {{"x-api-key", "k2"}}).status, 200);  // another key
  model_->release = true;
  first.join();
  EXPECT_EQ(call(http::verb::get, "/v1/models", "", {{"x-api-key", "k1"}}).status, 200);  // freed
}

TEST_F(ServerFixture, HealthIs503ForNewConnectionsDuringShutdown) {
  model_->hold = true;
  ServerConfig cfg;
  start(cfg);
  std::thread running([&] {
    try {
      post("/v1/messages", message());  // answered or cut off by the shutdown: either is fine here
    } catch (const std::exception&) {
    }
  });
  while (model_->started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  server_->shutdown();
  while (!ctx_->stopping) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  Reply h = call(http::verb::get, "/health");
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body["status"], "stopping");
  EXPECT_FALSE(h.res.keep_alive());
  expect_anthropic_error(post("/v1/messages", message()), 529, "overloaded_error");
  model_->release = true;
  running.join();
}

// ---- Tool use through the whole server (the fake model writes Hermes-style calls) ----

namespace {

const std::vector<std::string> kCallScript = {
    "Let me check.", "\n<tool_", "call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Par",
    "is\"}}\n</tool_call>"};

json weather_tool_anthropic() {
  return {{"name", "get_weather"}, {"description", "Weather now."},
          {"input_schema", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", {"city"}}}}};
}

json tool_message(bool stream) {
  json m = {{"model", "claude-3-sonnet-20240229"}, {"max_tokens", 50}, {"stream", stream},
            {"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
            {"tools", json::array({weather_tool_anthropic()})}};
  return m;
}

// The data of every SSE event named `name`.
std::vector<json> sse_events(const std::string& raw, const std::string& name) {
  std::vector<json> out;
  const std::string head = "event: " + name + "\ndata: ";
  for (size_t pos = 0; (pos = raw.find(head, pos)) != std::string::npos; pos += head.size()) {
    const size_t start = pos + head.size();
    out.push_back(json::parse(raw.substr(start, raw.find('\n', start) - start)));
  }
  return out;
}

std::vector<json> openai_chunks(const std::string& raw) {
  std::vector<json> out;
  for (size_t pos = 0; (pos = raw.find("data: {", pos)) != std::string::npos; pos += 6) {
    const size_t start = pos + 6;
    out.push_back(json::parse(raw.substr(start, raw.find('\n', start) - start)));
  }
  return out;
}

}  // namespace

TEST_F(ServerFixture, AnthropicAnswersWithToolUseBlocks) {
  model_->script = kCallScript;
  start();
  Reply r = post("/v1/messages", tool_message(false));
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["content"].size(), 2u) << r.raw;
  EXPECT_EQ(r.body["content"][0]["type"], "text");
  EXPECT_EQ(r.body["content"][0]["text"], "Let me check.\n");
  const json& use = r.body["content"][1];
  EXPECT_EQ(use["type"], "tool_use");
  EXPECT_EQ(std::string(use["id"]).rfind("toolu_", 0), 0u);
  EXPECT_EQ(use["name"], "get_weather");
  EXPECT_EQ(use["input"], json({{"city", "Paris"}}));
  EXPECT_EQ(r.body["stop_reason"], "tool_use");
  EXPECT_NE(model_->last_prompt().find("<tools>1"), std::string::npos);
}

TEST_F(ServerFixture, AnthropicStreamsToolUseAsInputJsonDeltas) {
  model_->script = kCallScript;
  start();
  Reply r = post("/v1/messages", tool_message(true));
  ASSERT_EQ(r.status, 200) << r.raw;
  const auto starts = sse_events(r.raw, "content_block_start");
  ASSERT_EQ(starts.size(), 2u) << r.raw;
  EXPECT_EQ(starts[0]["content_block"]["type"], "text");
  EXPECT_EQ(starts[1]["index"], 1);
  EXPECT_EQ(starts[1]["content_block"]["type"], "tool_use");
  EXPECT_EQ(starts[1]["content_block"]["name"], "get_weather");
  EXPECT_EQ(starts[1]["content_block"]["input"], json::object());
  std::string text, partial;
  int pieces = 0;
  for (const json& d : sse_events(r.raw, "content_block_delta")) {
    if (d["delta"]["type"] == "text_delta") text += d["delta"]["text"].get<std::string>();
    if (d["delta"]["type"] == "input_json_delta") {
      EXPECT_EQ(d["index"], 1);
      partial += d["delta"]["partial_json"].get<std::string>();
      ++pieces;
    }
  }
  EXPECT_EQ(text, "Let me check.\n");  // no part of the call syntax leaks as text
  EXPECT_EQ(json::parse(partial), json({{"city", "Paris"}}));
  EXPECT_GE(pieces, 1);
  EXPECT_EQ(sse_events(r.raw, "content_block_stop").size(), 2u);
  EXPECT_EQ(sse_events(r.raw, "message_delta").at(0)["delta"]["stop_reason"], "tool_use");
}

TEST_F(ServerFixture, WithoutToolsTheCallSyntaxIsJustText) {
  model_->script = kCallScript;
  start();
  json m = tool_message(false);
  m.erase("tools");
  Reply r = post("/v1/messages", m);
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["content"].size(), 1u);
  EXPECT_NE(std::string(r.body["content"][0]["text"]).find("<tool_call>"), std::string::npos);
  EXPECT_EQ(r.body["stop_reason"], "end_turn");
}

TEST_F(ServerFixture, ToolResultRoundTripReachesTheTemplate) {
  start();
  json m = tool_message(false);
  m["messages"] = {
      {{"role", "user"}, {"content", "Weather in Paris?"}},
      {{"role", "assistant"},
       {"content", {{{"type", "text"}, {"text", "Checking."}},
                    {{"type", "tool_use"}, {"id", "toolu_abc"}, {"name", "get_weather"}, {"input", {{"city", "Paris"}}}}}}},
      {{"role", "user"},
       {"content", {{{"type", "tool_result"}, {"tool_use_id", "toolu_abc"}, {"content", "18 C"}},
                    {{"type", "text"}, {"text", "Thanks"}}}}}};
  Reply r = post("/v1/messages", m);
  ASSERT_EQ(r.status, 200) << r.raw;
  const std::string prompt = model_->last_prompt();
  EXPECT_NE(prompt.find("<assistant>Checking.<call toolu_abc get_weather>{\"city\":\"Paris\"}"), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("<user><result toolu_abc>18 CThanks"), std::string::npos) << prompt;
}

TEST_F(ServerFixture, ToolChoiceErrorsAre400) {
  start();
  json m = tool_message(false);
  m["tool_choice"] = {{"type", "tool"}, {"name", "nope"}};
  expect_anthropic_error(post("/v1/messages", m), 400, "invalid_request_error");
  m.erase("tools");
  m["tool_choice"] = {{"type", "any"}};
  expect_anthropic_error(post("/v1/messages", m), 400, "invalid_request_error");
}

TEST_F(ServerFixture, DisabledParallelToolUseKeepsTheFirstCall) {
  model_->script = {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}</tool_call>",
                    "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}</tool_call>"};
  start();
  json m = tool_message(false);
  Reply both = post("/v1/messages", m);
  ASSERT_EQ(both.status, 200) << both.raw;
  EXPECT_EQ(both.body["content"].size(), 2u) << both.raw;
  m["tool_choice"] = {{"type", "auto"}, {"disable_parallel_tool_use", true}};
  Reply one = post("/v1/messages", m);
  ASSERT_EQ(one.status, 200) << one.raw;
  ASSERT_EQ(one.body["content"].size(), 1u) << one.raw;
  EXPECT_EQ(one.body["content"][0]["input"]["city"], "A");
}

TEST_F(ServerFixture, OpenAIAnswersWithToolCalls) {
  model_->script = kCallScript;
  start();
  json fn = {{"name", "get_weather"}, {"parameters", weather_tool_anthropic()["input_schema"]}};
  json body = {{"model", "fake-model"}, {"max_tokens", 50},
               {"messages", {{{"role", "user"}, {"content", "Weather?"}}}},
               {"tools", {{{"type", "function"}, {"function", fn}}}}};
  Reply r = post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& choice = r.body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["content"], "Let me check.\n");
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(std::string(call["id"]).rfind("call_", 0), 0u);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(std::string(call["function"]["arguments"])), json({{"city", "Paris"}}));

  body["stream"] = true;
  Reply s = post("/v1/chat/completions", body);
  ASSERT_EQ(s.status, 200) << s.raw;
  std::string args, name, text, finish;
  for (const json& c : openai_chunks(s.raw)) {
    if (c["choices"].empty()) continue;
    const json& d = c["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) text += d["content"].get<std::string>();
    if (d.contains("tool_calls")) {
      EXPECT_EQ(d["tool_calls"][0]["index"], 0);
      if (d["tool_calls"][0].contains("id")) name = d["tool_calls"][0]["function"]["name"];
      args += d["tool_calls"][0]["function"]["arguments"].get<std::string>();
    }
    if (c["choices"][0]["finish_reason"].is_string()) finish = c["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, "Let me check.\n");
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(json::parse(args), json({{"city", "Paris"}}));
  EXPECT_EQ(finish, "tool_calls");
}

TEST_F(ServerFixture, OpenAIToolMessagesBecomeToolResults) {
  start();
  json body = {{"model", "fake-model"}, {"max_tokens", 5},
               {"messages",
                {{{"role", "user"}, {"content", "Weather?"}},
                 {{"role", "assistant"}, {"content", nullptr},
                  {"tool_calls", {{{"id", "call_1"}, {"type", "function"},
                                   {"function", {{"name", "get_weather"}, {"arguments", "{\"city\":\"Oslo\"}"}}}}}}},
                 {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "cold"}}}}};
  Reply r = post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  const std::string prompt = model_->last_prompt();
  EXPECT_NE(prompt.find("<call call_1 get_weather>{\"city\":\"Oslo\"}<user><result call_1>cold"), std::string::npos)
      << prompt;
  body["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json";
  Reply bad = post("/v1/chat/completions", body);
  EXPECT_EQ(bad.status, 400) << bad.raw;
}

TEST_F(ServerFixture, ForcedToolChoiceConstrainsTheAnswerToACall) {
  model_->eos_after = 1;
  start();
  json m = tool_message(false);
  EXPECT_EQ(post("/v1/messages", m).status, 200);
  EXPECT_EQ(model_->last_grammar(), nullptr);  // auto: the model may answer in text
  const std::string paris = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  for (json choice : {json{{"type", "any"}}, json{{"type", "tool"}, {"name", "get_weather"}}}) {
    m["tool_choice"] = choice;
    ASSERT_EQ(post("/v1/messages", m).status, 200);
    pensieve::GrammarPtr g = model_->last_grammar();
    ASSERT_NE(g, nullptr) << choice.dump();
    EXPECT_TRUE(g->accepts(paris));
    EXPECT_FALSE(g->accepts("Hello"));
    EXPECT_FALSE(g->accepts("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"));  // city is required
  }
  json body = {{"model", "fake-model"}, {"max_tokens", 5}, {"tool_choice", "required"},
               {"messages", {{{"role", "user"}, {"content", "Weather?"}}}},
               {"tools", {{{"type", "function"}, {"function", {{"name", "get_weather"},
                                                              {"parameters", weather_tool_anthropic()["input_schema"]}}}}}}};
  ASSERT_EQ(post("/v1/chat/completions", body).status, 200);
  ASSERT_NE(model_->last_grammar(), nullptr);
  EXPECT_TRUE(model_->last_grammar()->accepts(paris));
  body["tools"][0]["function"]["parameters"]["properties"]["city"]["not"] = {{"type", "null"}};
  Reply bad = post("/v1/chat/completions", body);
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_NE(bad.raw.find("'not'"), std::string::npos) << bad.raw;
}
