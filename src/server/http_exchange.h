// One HTTP request and its response on a keep-alive connection: plain responses, chunked SSE
// streams, and a watch on the socket that notices the client leaving while a response is being
// produced (so that generation stops at once).
#pragma once
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using HttpRequest = http::request<http::string_body>;

// The completion of every coroutine the server spawns: logs an exception that ended it, so that
// none leaves the event loop (which would end the process).
void log_task_exception(std::exception_ptr e);

// A timer that calls `on_expiry` if it fires while armed. Re-arming, disarm() or destruction
// also stops a firing that is already queued, so on_expiry may hold references to the caller's
// locals.
class Watchdog {
 public:
  explicit Watchdog(asio::any_io_executor ex) : timer_(std::move(ex)) {}
  ~Watchdog() { disarm(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void arm(std::chrono::milliseconds after, std::function<void()> on_expiry);
  void disarm();

 private:
  asio::steady_timer timer_;
  std::shared_ptr<bool> armed_;
};

class HttpExchange {
 public:
  // A response write that stalls for `write_timeout` (a client that stopped reading) closes the
  // connection.
  HttpExchange(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer, HttpRequest& req, std::string request_id,
               std::chrono::milliseconds write_timeout);
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  const HttpRequest& request() const { return req_; }
  std::string_view path() const;   // the target without its query string
  std::string_view query() const;  // after '?', or ""
  std::string header(std::string_view name) const;
  const std::string& request_id() const { return request_id_; }
  std::chrono::steady_clock::time_point started() const { return started_; }
  asio::any_io_executor executor() { return stream_.get_executor(); }

  int status() const { return status_; }  // 0 until a response began
  bool keep_alive() const { return keep_alive_; }
  void close_after() { keep_alive_ = false; }
  // A header for the response (before it begins).
  void add_header(std::string name, std::string value) { extra_headers_.emplace_back(std::move(name), std::move(value)); }
  bool client_gone() const { return gone_; }

  // Arguments of co_await-ed calls in this server are always named objects: GCC 12 destroys
  // non-trivial temporaries of a co_await expression twice.
  asio::awaitable<void> send(int status, std::string_view content_type, const std::string& body);
  asio::awaitable<void> send_json(int status, const nlohmann::ordered_json& body);

  // Sends a 200 with chunked transfer encoding; then write() each piece and end_stream().
  asio::awaitable<bool> begin_stream(std::string_view content_type);
  asio::awaitable<bool> write(const std::string& data);  // false when the client is gone
  asio::awaitable<void> end_stream();

  // Reads the socket in the background until stop_watch(); calls on_gone (on this connection's
  // executor) when the client is gone: a reset, or a write that failed. EOF alone is a client that
  // half-closed after its request and still reads the answer: the answer goes out, then the
  // connection closes (a client that closed for good is noticed at the next write). Bytes of a
  // pipelined next request are kept for the next read.
  void start_watch(std::function<void()> on_gone);
  asio::awaitable<void> stop_watch();

 private:
  template <class Response> void common_headers(Response& res, int status);
  void client_left();
  // Awaits a write under the write timeout; false (and the client counted gone) when it failed.
  template <class Write> asio::awaitable<bool> timed(Write write);

  asio::ip::tcp::socket& stream_;
  beast::flat_buffer& buffer_;
  HttpRequest& req_;
  std::string request_id_;
  std::chrono::steady_clock::time_point started_;
  int status_ = 0;
  bool keep_alive_;
  bool gone_ = false;
  bool watching_ = false;
  bool watch_done_ = true;
  asio::steady_timer watch_timer_;
  std::chrono::milliseconds write_timeout_;
  Watchdog write_watchdog_;
  std::vector<std::pair<std::string, std::string>> extra_headers_;
  std::function<void()> on_gone_;
};

}  // namespace pensieve::server
