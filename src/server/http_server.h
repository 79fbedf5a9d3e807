// The HTTP/1.1 listener: accepts connections on Asio threads (up to max_connections, plus a
// reserve for /health and /metrics), runs one keep-alive session coroutine per connection, and
// shuts down gracefully (answer new requests with 503/529 and close, let running requests end
// within the grace period, then cancel them so streams still close cleanly).
#pragma once
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/http_exchange.h"
#include "server/server_context.h"

namespace pensieve::server {

class HttpServer {
 public:
  explicit HttpServer(ServerContext& ctx);
  ~HttpServer();

  // Binds host:port (port 0 picks a free one). Error naming the address when it cannot.
  void listen(const std::string& host, int port);
  int port() const { return port_; }

  // Runs the network threads until shutdown; handles SIGINT/SIGTERM when handle_signals is set.
  void run(bool handle_signals);
  // Starts a graceful shutdown (thread-safe).
  void shutdown();

 private:
  asio::awaitable<void> accept_loop();
  // `reserve`: a connection beyond max_connections, which may only ask for /health or /metrics.
  asio::awaitable<void> session(asio::ip::tcp::socket socket, bool reserve);
  asio::awaitable<void> serve_requests(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer, bool reserve);
  void begin_shutdown();
  void stop();
  void drain_then_stop(std::chrono::steady_clock::time_point grace_end, bool cancelled);

  ServerContext& ctx_;
  asio::io_context ioc_;
  asio::ip::tcp::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer drain_timer_;
  int port_ = 0;
  bool shutting_down_ = false;
};

}  // namespace pensieve::server
