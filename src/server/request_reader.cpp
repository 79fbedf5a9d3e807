#include "server/request_reader.h"

namespace pensieve::server {

using asio::use_awaitable;

namespace {

ApiError header_too_large(const std::string& why) {
  return ApiError(431, "invalid_request_error", "request header fields too large: " + why);
}

ApiError read_error(const beast::error_code& ec, const ServerConfig& config) {
  if (ec == http::error::body_limit)
    return ApiError::too_large("request body exceeds " + std::to_string(config.max_body_bytes) + " bytes");
  if (ec == http::error::header_limit)
    return header_too_large("the header is longer than " + std::to_string(config.max_header_bytes) + " bytes");
  return ApiError::invalid_request("malformed HTTP request: " + ec.message());
}

ReadEnd failed(ApiError e) { return {ReadEnd::Failed, std::move(e)}; }

// Bodies come plain or chunked: any other transfer coding (gzip, deflate…) would otherwise be read
// as if the bytes under it were the body.
std::optional<ApiError> unsupported_transfer_coding(const HttpRequest& req) {
  int chunked = 0;
  for (auto it = req.find(http::field::transfer_encoding); it != req.end() && it->name() == http::field::transfer_encoding; ++it)
    for (const auto& coding : http::token_list(it->value())) {
      if (!beast::iequals(coding, "chunked"))
        return ApiError(501, "invalid_request_error",
                        "Transfer-Encoding '" + std::string(it->value().substr(0, 100)) +
                            "' is not supported: send the body as it is, with Content-Length or 'chunked' alone");
      ++chunked;
    }
  if (chunked > 1) return ApiError::invalid_request("Transfer-Encoding names 'chunked' more than once");
  return std::nullopt;
}

}  // namespace

void apply_limits(RequestParser& parser, const ServerConfig& config) {
  parser.body_limit(static_cast<uint64_t>(config.max_body_bytes));
  parser.header_limit(static_cast<uint32_t>(config.max_header_bytes));
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
    if (parser.is_header_done())
      if (auto unsupported = unsupported_transfer_coding(parser.get())) return failed(std::move(*unsupported));
    if (parser.is_done()) return {ReadEnd::Complete, std::nullopt};
    if (ec == http::error::need_more) break;
    if (ec) return failed(read_error(ec, config));
    if (used == 0) break;  // nothing parsed, no error: wait for more bytes
  }
  return {ReadEnd::NeedMore, std::nullopt};
}

asio::awaitable<ReadEnd> read_request(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer,
                                      RequestParser& parser, const ServerConfig& config, bool first) {
  apply_limits(parser, config);
  const std::chrono::milliseconds header_timeout(config.header_timeout_ms), idle_timeout(config.idle_timeout_ms);
  Watchdog watchdog(stream.get_executor());
  bool expired = false;
  auto expire = [&] {
    expired = true;
    beast::error_code ignored;
    stream.cancel(ignored);
  };
  // A new connection's first request and pipelined bytes are on the header clock at once; a
  // keep-alive connection may wait idle_timeout for the next request to begin.
  bool started = first || buffer.size() > 0;
  watchdog.arm(started ? header_timeout : idle_timeout, expire);
  for (;;) {
    ReadEnd step = parse_buffered(parser, buffer, config);
    if (step.kind != ReadEnd::NeedMore) co_return step;
    if (parser.is_header_done()) watchdog.arm(idle_timeout, expire);  // the body must keep coming
    beast::error_code ec;
    const size_t n = co_await stream.async_read_some(buffer.prepare(65536), asio::redirect_error(use_awaitable, ec));
    buffer.commit(n);
    if (n > 0 && !started) {
      started = true;
      watchdog.arm(header_timeout, expire);
    }
    if (expired) {
      if (buffer.size() == 0 && !parser.got_some()) co_return ReadEnd{ReadEnd::Closed, std::nullopt};
      co_return failed(ApiError(408, "timeout_error",
                                parser.is_header_done() ? "the request body stalled for idle_timeout_ms"
                                                        : "the request header did not arrive within header_timeout_ms"));
    }
    if (ec == asio::error::eof) {
      if (!parser.got_some() && buffer.size() == 0) co_return ReadEnd{ReadEnd::Closed, std::nullopt};
      parser.put_eof(ec);
      if (ec) co_return failed(read_error(ec, config));
      co_return ReadEnd{ReadEnd::Complete, std::nullopt};
    }
    if (ec) co_return ReadEnd{ReadEnd::Closed, std::nullopt};  // reset
  }
}

}  // namespace pensieve::server
