#include "server/http_server.h"

#include <spdlog/spdlog.h>

#include <random>

#include "server/http_exchange.h"
#include "server/request_reader.h"
#include "server/router.h"
#include "util/error.h"

namespace pensieve::server {

using asio::ip::tcp;
using asio::use_awaitable;

namespace {

// Connections beyond max_connections that are still accepted, for /health and /metrics only.
constexpr int kReservedConnections = 8;

// Counts itself in `n` while it lives.
class Counted {
 public:
  explicit Counted(std::atomic<int>& n) : n_(n) { ++n_; }
  ~Counted() { --n_; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<int>& n_;
};

std::string request_id() {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "req_";
  for (int i = 0; i < 24; ++i) id += alphabet[rng() % 62];
  return id;
}

}  // namespace

HttpServer::HttpServer(ServerContext& ctx)
    : ctx_(ctx), acceptor_(ioc_), signals_(ioc_), drain_timer_(ioc_) {}

HttpServer::~HttpServer() = default;

void HttpServer::listen(const std::string& host, int port) {
  beast::error_code ec;
  tcp::resolver resolver(ioc_);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || results.empty()) throw Error("cannot resolve listen address '" + host + "': " + ec.message());
  tcp::endpoint ep = results.begin()->endpoint();
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw Error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
}

void HttpServer::run(bool handle_signals) {
  if (handle_signals) {
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.async_wait([this](const beast::error_code& ec, int sig) {
      if (ec) return;
      spdlog::info("signal {}: shutting down", sig);
      begin_shutdown();
    });
  }
  asio::co_spawn(ioc_, accept_loop(), log_task_exception);
  // One network thread: handlers only parse, route and copy bytes (CPU work runs on the blocking
  // pool and the generation workers), and a single thread needs no strands.
  ioc_.run();
}

void HttpServer::shutdown() {
  asio::post(ioc_, [this] { begin_shutdown(); });
}

void HttpServer::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  ctx_.stopping = true;
  // The listener stays open while requests drain, so that /health answers 503 and new requests
  // are refused with 529 rather than a refused connection.
  beast::error_code ec;
  signals_.cancel(ec);
  auto grace_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ctx_.config.shutdown_grace_ms);
  drain_then_stop(grace_end, false);
}

void HttpServer::stop() {
  beast::error_code ec;
  acceptor_.close(ec);
  ioc_.stop();
}

// Polls until no request is active; past the grace period, cancels the generations so that their
// streams end with an error event rather than a cut connection.
void HttpServer::drain_then_stop(std::chrono::steady_clock::time_point grace_end, bool cancelled) {
  if (ctx_.active_requests == 0) {
    stop();
    return;
  }
  if (!cancelled && std::chrono::steady_clock::now() >= grace_end) {
    if (auto models = ctx_.models())
      for (const auto& m : models->loaded_models()) m->service().cancel_all();
    cancelled = true;
    grace_end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  } else if (cancelled && std::chrono::steady_clock::now() >= grace_end) {
    stop();  // a generation that ignores cancellation must not hold the process forever
    return;
  }
  drain_timer_.expires_after(std::chrono::milliseconds(20));
  drain_timer_.async_wait([this, grace_end, cancelled](const beast::error_code& ec) {
    if (!ec) drain_then_stop(grace_end, cancelled);
  });
}

asio::awaitable<void> HttpServer::accept_loop() {
  for (;;) {
    beast::error_code ec;
    tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
        asio::steady_timer pause(ioc_, std::chrono::milliseconds(50));  // out of fds: back off
        co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      continue;
    }
    const int open = ctx_.open_connections;
    if (open >= ctx_.config.max_connections + kReservedConnections) {
      socket.close(ec);  // beyond the cap and its reserve: closed at once
      continue;
    }
    auto ex = socket.get_executor();
    asio::co_spawn(ex, session(std::move(socket), open >= ctx_.config.max_connections), log_task_exception);
  }
}

asio::awaitable<void> HttpServer::session(tcp::socket socket, bool reserve) {
  Counted open(ctx_.open_connections);
  tcp::socket& stream = socket;
  beast::flat_buffer buffer;
  try {
    co_await serve_requests(stream, buffer, reserve);
  } catch (const std::exception& e) {
    // Only this connection ends; an exception never reaches the event loop.
    spdlog::error("connection ended by an internal error: {}", e.what());
  }
  // Half-close, then read what the client still sends (the rest of a refused body) until it
  // closes: closing with unread bytes would reset the connection and could lose our answer.
  beast::error_code ec;
  stream.shutdown(tcp::socket::shutdown_send, ec);
  Watchdog linger(stream.get_executor());
  linger.arm(std::chrono::seconds(2), [&stream] {
    beast::error_code ignored;
    stream.close(ignored);
  });
  size_t drained = 0;
  while (!ec && drained < (64u << 20)) {
    buffer.consume(buffer.size());
    drained += co_await stream.async_read_some(buffer.prepare(65536), asio::redirect_error(use_awaitable, ec));
  }
  linger.disarm();
  stream.close(ec);
}

asio::awaitable<void> HttpServer::serve_requests(tcp::socket& stream, beast::flat_buffer& buffer, bool reserve) {
  for (bool first = true;; first = false) {
    RequestParser parser;
    ReadEnd read = co_await read_request(stream, buffer, parser, ctx_.config, first);
    if (read.kind == ReadEnd::Closed) co_return;
    HttpRequest& req = parser.get();
    Counted active(ctx_.active_requests);
    HttpExchange ex(stream, buffer, req, request_id(), std::chrono::milliseconds(ctx_.config.idle_timeout_ms));
    if (ctx_.stopping || reserve) ex.close_after();
    if (read.kind == ReadEnd::Failed) {
      // A request that cannot be read is answered, then the connection closes (its framing is lost).
      ex.close_after();
      co_await send_error(ex, *read.error);
    } else if (reserve && ex.path() != "/health" && ex.path() != "/metrics") {
      // The connections beyond max_connections are kept for /health and /metrics.
      const ApiError busy = ApiError::overloaded("too many open connections (max_connections is " +
                                                 std::to_string(ctx_.config.max_connections) + ")");
      co_await send_error(ex, busy);
    } else {
      co_await route_request(ctx_, ex);
    }
    co_await ex.stop_watch();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ex.started()).count();
    const int status = ex.status() ? ex.status() : 499;  // 499: the client left before an answer
    ctx_.metrics.record_request(route_label(ex.path()), status, seconds);
    const std::string_view target(req.target().data(), std::min<size_t>(req.target().size(), 200));
    spdlog::info("{} {} {} {:.1f} ms", std::string(req.method_string()), target, status, seconds * 1000);
    if (!ex.keep_alive() || ctx_.stopping) co_return;
  }
}

}  // namespace pensieve::server
