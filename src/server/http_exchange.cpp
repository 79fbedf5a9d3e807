#include "server/http_exchange.h"

#include <spdlog/spdlog.h>

namespace pensieve::server {

using asio::use_awaitable;

void log_task_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    spdlog::error("network task ended by an internal error: {}", x.what());
  } catch (...) {
    spdlog::error("network task ended by an unknown internal error");
  }
}

void Watchdog::arm(std::chrono::milliseconds after, std::function<void()> on_expiry) {
  disarm();
  armed_ = std::make_shared<bool>(true);
  timer_.expires_after(after);
  timer_.async_wait([armed = armed_, on_expiry = std::move(on_expiry)](const beast::error_code& ec) {
    if (ec || !*armed) return;
    *armed = false;
    on_expiry();
  });
}

void Watchdog::disarm() {
  if (!armed_) return;
  *armed_ = false;
  armed_.reset();
  timer_.cancel();
}

HttpExchange::HttpExchange(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer, HttpRequest& req,
                           std::string request_id, std::chrono::milliseconds write_timeout)
    : stream_(stream),
      buffer_(buffer),
      req_(req),
      request_id_(std::move(request_id)),
      started_(std::chrono::steady_clock::now()),
      keep_alive_(req.keep_alive()),
      watch_timer_(stream.get_executor()),
      write_timeout_(write_timeout),
      write_watchdog_(stream.get_executor()) {}

std::string_view HttpExchange::path() const {
  std::string_view t(req_.target().data(), req_.target().size());
  return t.substr(0, t.find('?'));
}

std::string_view HttpExchange::query() const {
  std::string_view t(req_.target().data(), req_.target().size());
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::string HttpExchange::header(std::string_view name) const {
  auto it = req_.find(beast::string_view(name.data(), name.size()));
  return it == req_.end() ? std::string() : std::string(it->value());
}

template <class Response>
void HttpExchange::common_headers(Response& res, int status) {
  status_ = status;
  res.set(http::field::server, "pensieve");
  res.set("request-id", request_id_);
  for (const auto& [name, value] : extra_headers_) res.set(name, value);
  res.keep_alive(keep_alive_);
}

template <class Write>
asio::awaitable<bool> HttpExchange::timed(Write write) {
  write_watchdog_.arm(write_timeout_, [this] {
    beast::error_code ignored;
    stream_.close(ignored);
  });
  beast::error_code ec;
  co_await write(asio::redirect_error(use_awaitable, ec));
  write_watchdog_.disarm();
  if (ec) client_left();
  co_return !ec;
}

asio::awaitable<void> HttpExchange::send(int status, std::string_view content_type, const std::string& body) {
  http::response<http::string_body> res{static_cast<http::status>(status), req_.version()};
  common_headers(res, status);
  res.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.body() = body;
  res.prepare_payload();
  auto write = [this, &res](auto token) { return http::async_write(stream_, res, token); };
  co_await timed(write);
}

asio::awaitable<void> HttpExchange::send_json(int status, const nlohmann::ordered_json& body) {
  const std::string text = body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  co_await send(status, "application/json", text);
}

asio::awaitable<bool> HttpExchange::begin_stream(std::string_view content_type) {
  http::response<http::empty_body> res{http::status::ok, req_.version()};
  common_headers(res, 200);
  res.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.set(http::field::cache_control, "no-cache");
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  auto write = [this, &sr](auto token) { return http::async_write_header(stream_, sr, token); };
  co_return co_await timed(write);
}

asio::awaitable<bool> HttpExchange::write(const std::string& data) {
  if (gone_) co_return false;
  if (data.empty()) co_return true;
  auto chunk = http::make_chunk(asio::buffer(data));
  auto write = [this, &chunk](auto token) { return asio::async_write(stream_, chunk, token); };
  co_return co_await timed(write);
}

asio::awaitable<void> HttpExchange::end_stream() {
  if (gone_) co_return;
  auto last = http::make_chunk_last();
  auto write = [this, &last](auto token) { return asio::async_write(stream_, last, token); };
  co_await timed(write);
}

void HttpExchange::client_left() {
  if (gone_) return;
  gone_ = true;
  keep_alive_ = false;
  if (on_gone_) on_gone_();
}

void HttpExchange::start_watch(std::function<void()> on_gone) {
  if (watching_) return;
  on_gone_ = std::move(on_gone);
  watching_ = true;
  watch_done_ = false;
  asio::co_spawn(
      stream_.get_executor(),
      [this]() -> asio::awaitable<void> {
        for (;;) {
          beast::error_code ec;
          size_t n = co_await stream_.async_read_some(buffer_.prepare(16384),
                                                               asio::redirect_error(use_awaitable, ec));
          if (ec == asio::error::eof) {
            keep_alive_ = false;  // half-closed: answer, then close
            break;
          }
          if (ec) {
            if (ec != asio::error::operation_aborted) client_left();
            break;
          }
          buffer_.commit(n);
          if (buffer_.size() > (1u << 20)) break;  // a client flooding pipelined bytes: stop reading
        }
        watch_done_ = true;
        watch_timer_.cancel();
      },
      log_task_exception);
}

asio::awaitable<void> HttpExchange::stop_watch() {
  if (!watching_) co_return;
  watching_ = false;
  if (!watch_done_) {
    beast::error_code ignored;
    stream_.cancel(ignored);
  }
  while (!watch_done_) {
    watch_timer_.expires_after(std::chrono::seconds(1));
    beast::error_code ec;
    co_await watch_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

}  // namespace pensieve::server
