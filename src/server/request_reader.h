// Reading one HTTP/1.1 request off a connection with Beast's parser, within the configured limits.
// The parser runs in the connection's coroutine rather than inside Beast's composed read, so that
// whatever it throws is caught here (Beast 1.74 throws std::length_error for a header field of
// 65,534 bytes or more, from inside the read's completion handler, where nothing could catch it and
// the process ended).
#pragma once
#include <optional>

#include "server/api_error.h"
#include "server/http_exchange.h"
#include "server/server_config.h"

namespace pensieve::server {

using RequestParser = http::request_parser<http::string_body>;

// How reading a request ended: a complete request, the client gone (or silent too long), or a
// request that cannot be read, with the error it is answered with.
struct ReadEnd {
  enum Kind { Complete, Closed, Failed, NeedMore } kind;
  std::optional<ApiError> error;  // Failed
};

// Sets the parser's limits from the configuration.
void apply_limits(RequestParser& parser, const ServerConfig& config);

// Parses what `buffer` holds (consuming what the parser used): Complete, Failed, or NeedMore.
// Never throws for any input.
ReadEnd parse_buffered(RequestParser& parser, beast::flat_buffer& buffer, const ServerConfig& config);

// Reads one request into `parser` (limits applied here): Complete, Failed or Closed. `first`: the
// connection's first request, whose header must arrive within header_timeout_ms of the connection;
// a later one may be awaited for idle_timeout_ms, then has header_timeout_ms from its first byte.
// A header or body that runs out of time is a 408; an idle connection just closes.
asio::awaitable<ReadEnd> read_request(asio::ip::tcp::socket& stream, beast::flat_buffer& buffer,
                                      RequestParser& parser, const ServerConfig& config, bool first);

}  // namespace pensieve::server
