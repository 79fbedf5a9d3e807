#include "server/request_reader.h"

namespace pensieve::server {

using asio::use_awaitable;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(120);
constexpr uint32_t kMaxHeaderBytes = 256 * 1024;

ApiError header_too_large(const std::string& why) {
  return ApiError(431, "invalid_request_error", "request header fields too large: " + why);
}

ApiError read_error(const beast::error_code& ec, const ServerConfig& config) {
  if (ec == http::error::body_limit)
    return ApiError::too_large("request body exceeds " + std::to_string(config.max_body_bytes) + " bytes");
  if (ec == http::error::header_limit)
    return header_too_large("the header is longer than " + std::to_string(kMaxHeaderBytes) + " bytes");
  return ApiError::invalid_request("malformed HTTP request: " + ec.message());
}

ReadEnd failed(ApiError e) { return {ReadEnd::Failed, std::move(e)}; }

}  // namespace

void apply_limits(RequestParser& parser, const ServerConfig& config) {
  parser.body_limit(static_cast<uint64_t>(config.max_body_bytes));
  parser.header_limit(kMaxHeaderBytes);
}

ReadEnd parse_buffered(RequestParser& parser, beast::flat_buffer& buffer, const ServerConfig& config) {
  while (buffer.size() > 0) {
    beast::error_code ec;
    size_t used = 0;
    try {
      used = parser.put(buffer.data(), ec);
    } catch (const std::length_error&) {
      return failed(header_too_large("a header field is longer than 65,535 bytes"));
    } catch (const std::exception& e) {
      return failed(ApiError::invalid_request(std::string("malformed HTTP request: ") + e.what()));
    }
    buffer.consume(used);
    if (parser.is_done()) return {ReadEnd::Complete, std::nullopt};
    if (ec == http::error::need_more) break;
    if (ec) return failed(read_error(ec, config));
    if (used == 0) break;  // nothing parsed, no error: wait for more bytes
  }
  return {ReadEnd::NeedMore, std::nullopt};
}

asio::awaitable<ReadEnd> read_request(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer,
                                      RequestParser& parser, const ServerConfig& config) {
  apply_limits(parser, config);
  // Closes a connection that stays silent too long (the watchdog runs only while reading).
  Watchdog idle(stream.get_executor());
  idle.arm(kIdleTimeout, [&stream] {
    beast::error_code ignored;
    stream.close(ignored);
  });
  for (;;) {
    ReadEnd step = parse_buffered(parser, buffer, config);
    if (step.kind != ReadEnd::NeedMore) co_return step;
    beast::error_code ec;
    const size_t n = co_await stream.async_read_some(buffer.prepare(65536), asio::redirect_error(use_awaitable, ec));
    buffer.commit(n);
    if (ec == asio::error::eof) {
      if (!parser.got_some() && buffer.size() == 0) co_return ReadEnd{ReadEnd::Closed, std::nullopt};
      parser.put_eof(ec);
      if (ec) co_return failed(read_error(ec, config));
      co_return ReadEnd{ReadEnd::Complete, std::nullopt};
    }
    if (ec) co_return ReadEnd{ReadEnd::Closed, std::nullopt};  // reset, or closed by the idle watchdog
  }
}

}  // namespace pensieve::server
