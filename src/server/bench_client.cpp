#include "server/bench_client.h"

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>

#include "util/error.h"

namespace pensieve::server::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

// Common English words: most are one token with a leading space in the usual BPE vocabularies, so
// N words come to about N tokens.
constexpr std::array<const char*, 200> kWords = {
    "time",    "year",    "people",  "way",     "day",     "man",     "thing",   "woman",   "life",    "child",
    "world",   "school",  "state",   "family",  "student", "group",   "country", "problem", "hand",    "part",
    "place",   "case",    "week",    "company", "system",  "program", "question", "work",   "number",  "night",
    "point",   "home",    "water",   "room",    "mother",  "area",    "money",   "story",   "fact",    "month",
    "lot",     "right",   "study",   "book",    "eye",     "job",     "word",    "business", "issue",  "side",
    "kind",    "head",    "house",   "service", "friend",  "father",  "power",   "hour",    "game",    "line",
    "end",     "member",  "law",     "car",     "city",    "name",    "team",    "minute",  "idea",    "kid",
    "body",    "back",    "parent",  "face",    "others",  "level",   "office",  "door",    "health",  "person",
    "art",     "war",     "history", "party",   "result",  "change",  "morning", "reason",  "research", "girl",
    "guy",     "moment",  "air",     "teacher", "force",   "order",   "good",    "new",     "first",   "last",
    "long",    "great",   "little",  "own",     "other",   "old",     "big",     "high",    "different", "small",
    "large",   "next",    "early",   "young",   "important", "few",   "public",  "bad",     "same",    "able",
    "go",      "make",    "know",    "take",    "see",     "come",    "think",   "look",    "want",    "give",
    "use",     "find",    "tell",    "ask",     "seem",    "feel",    "try",     "leave",   "call",    "keep",
    "river",   "garden",  "music",   "winter",  "summer",  "forest",  "letter",  "market",  "island",  "village",
    "bridge",  "window",  "horse",   "stone",   "bread",   "silver",  "ocean",   "mountain", "train",  "road",
    "light",   "color",   "paper",   "song",    "dream",   "field",   "table",   "voice",   "heart",   "fire",
    "sun",     "moon",    "star",    "tree",    "flower",  "bird",    "dog",     "cat",     "fish",    "rain",
    "snow",    "wind",    "sea",     "sky",     "glass",   "gold",    "king",    "queen",   "ship",    "castle",
    "doctor",  "lawyer",  "farmer",  "painter", "soldier", "captain", "pilot",   "baker",   "dancer",  "singer"};

constexpr const char* kInstruction = "\n\nWrite a long and detailed story that uses every word above.";
constexpr int kInstructionWords = 11;
constexpr uint64_t kSharedSeed = 0x5eedf00dULL;

void append_words(std::string& out, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, kWords.size() - 1);
  for (int i = 0; i < n; ++i) {
    if (!out.empty()) out += ' ';
    out += kWords[pick(rng)];
  }
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  return x;
}

struct Url {
  std::string host, port, path;  // path: the full API path
  std::string text() const { return "http://" + host + ":" + port + path; }
};

Url parse_url(const std::string& url, Api api) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0) throw Error("bench-serve: https is not supported (" + url + "); use http://");
  if (url.rfind(scheme, 0) != 0) throw Error("bench-serve: the URL must start with http:// (" + url + ")");
  std::string rest = url.substr(scheme.size());
  Url u;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  if (authority.empty()) throw Error("bench-serve: no host in " + url);
  if (authority.front() == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) throw Error("bench-serve: bad host in " + url);
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') u.port = authority.substr(close + 2);
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) u.port = authority.substr(colon + 1);
  }
  if (u.port.empty()) u.port = "80";
  if (u.host.empty() || u.port.find_first_not_of("0123456789") != std::string::npos)
    throw Error("bench-serve: bad host or port in " + url);
  const std::string api_path = api == Api::anthropic ? "/v1/messages" : "/v1/chat/completions";
  const std::string tail = api == Api::anthropic ? "/messages" : "/chat/completions";
  if (path.size() >= tail.size() && path.compare(path.size() - tail.size(), tail.size(), tail) == 0) {
    u.path = path;  // the endpoint itself was given
  } else {
    while (!path.empty() && path.back() == '/') path.pop_back();
    if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
    u.path = path + api_path;
  }
  return u;
}

// What comes before "/v1/" in the API path ("" for the usual root).
std::string prefix_of(const Url& u) {
  const size_t v1 = u.path.rfind("/v1/");
  return v1 == std::string::npos ? "" : u.path.substr(0, v1);
}

// Server-sent events, split at blank lines; "\r\n" line ends are accepted.
class SseReader {
 public:
  template <class OnEvent>
  void feed(const char* data, size_t n, OnEvent&& on_event) {
    buf_.append(data, n);
    size_t start = 0;
    for (;;) {
      const size_t nl = buf_.find('\n', start);
      if (nl == std::string::npos) break;
      std::string_view line(buf_.data() + start, nl - start);
      start = nl + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) {
        if (has_data_ || !event_.empty()) on_event(event_, data_);
        event_.clear(), data_.clear(), has_data_ = false;
        continue;
      }
      if (line.front() == ':') continue;  // comment (keep-alive)
      const size_t colon = line.find(':');
      std::string_view field = line.substr(0, colon);
      std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (field == "event") {
        event_ = value;
      } else if (field == "data") {
        if (has_data_) data_ += '\n';
        data_ += value;
        has_data_ = true;
      }
    }
    buf_.erase(0, start);
  }

 private:
  std::string buf_, event_, data_;
  bool has_data_ = false;
};

struct Shared {
  const BenchOptions& opt;
  Url url;
  tcp::resolver::results_type endpoints;
  std::string model;
  int level_index = 0;
  int requests = 0;
  int next = 0;
  std::vector<RequestResult> results;
};

std::string request_body(const BenchOptions& opt, const std::string& model, const std::string& prompt) {
  json body = {{"model", model},
               {"max_tokens", opt.max_tokens},
               {"stream", true},
               {"messages", json::array({{{"role", "user"}, {"content", prompt}}})}};
  if (opt.api == Api::openai) body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

void set_headers(http::request<http::string_body>& req, const Url& url, const BenchOptions& opt) {
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "pensieve-bench-serve");
  if (opt.api == Api::anthropic) {
    req.set("anthropic-version", "2023-06-01");
    if (!opt.api_key.empty()) req.set("x-api-key", opt.api_key);
  } else if (!opt.api_key.empty()) {
    req.set(http::field::authorization, "Bearer " + opt.api_key);
  }
}

// The error class named in an error body of either API (or llama-server's), or "".
std::string error_type(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (!j.is_object()) return "";
  auto it = j.find("error");
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_object()) return "";
  for (const char* key : {"type", "code"}) {
    auto f = it->find(key);
    if (f != it->end() && f->is_string() && !f->get<std::string>().empty()) return f->get<std::string>();
  }
  return "";
}

// The result of one streamed event: updates `r`; returns true at the stream's last event.
struct StreamState {
  bool done = false;
  std::string stream_error;  // an error event after the 200
};

void on_delta(RequestResult& r, Clock::time_point t0) {
  const double t = std::chrono::duration<double>(Clock::now() - t0).count();
  if (r.deltas == 0)
    r.ttft_s = t;
  else
    r.gaps_s.push_back(t - r.last_delta_s);
  r.last_delta_s = t;
  ++r.deltas;
}

int int_field(const json& obj, const char* key, int fallback) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  return it != obj.end() && it->is_number_integer() ? it->get<int>() : fallback;
}

void handle_anthropic(const std::string& event, const std::string& data, RequestResult& r, StreamState& s,
                      Clock::time_point t0) {
  const json j = json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  const std::string type = !event.empty() ? event : (j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "");
  if (type == "message_start") {
    if (j.contains("message") && j["message"].is_object() && j["message"].contains("usage"))
      r.prompt_tokens = int_field(j["message"]["usage"], "input_tokens", r.prompt_tokens);
  } else if (type == "content_block_delta") {
    on_delta(r, t0);
  } else if (type == "message_delta") {
    if (j.contains("usage")) {
      r.output_tokens = int_field(j["usage"], "output_tokens", r.output_tokens);
      r.prompt_tokens = int_field(j["usage"], "input_tokens", r.prompt_tokens);
    }
  } else if (type == "message_stop") {
    s.done = true;
  } else if (type == "error") {
    std::string t = error_type(data);
    s.stream_error = t.empty() ? "error" : t;
    s.done = true;
  }
}

void handle_openai(const std::string& data, RequestResult& r, StreamState& s, Clock::time_point t0) {
  if (data == "[DONE]") {
    s.done = true;
    return;
  }
  const json j = json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  if (j.contains("error")) {
    std::string t = error_type(data);
    s.stream_error = t.empty() ? "error" : t;
    s.done = true;
    return;
  }
  auto ch = j.find("choices");
  if (ch != j.end() && ch->is_array() && !ch->empty() && (*ch)[0].is_object()) {
    const json& c = (*ch)[0];
    auto d = c.find("delta");
    if (d != c.end() && d->is_object()) {
      for (const char* key : {"content", "reasoning_content"}) {
        auto f = d->find(key);
        if (f != d->end() && f->is_string() && !f->get_ref<const std::string&>().empty()) {
          on_delta(r, t0);
          break;
        }
      }
    }
  }
  auto u = j.find("usage");
  if (u != j.end() && u->is_object()) {
    r.output_tokens = int_field(*u, "completion_tokens", r.output_tokens);
    r.prompt_tokens = int_field(*u, "prompt_tokens", r.prompt_tokens);
  }
}

std::string describe(const beast::error_code& ec, const char* stage) {
  if (ec == beast::error::timeout) return "timeout";
  if (ec == asio::error::connection_refused) return "connection refused";
  return std::string(stage) + ": " + ec.message();
}

asio::awaitable<void> one_request(Shared& sh, int index, RequestResult& r) {
  const BenchOptions& opt = sh.opt;
  const auto t0 = Clock::now();
  auto finish = [&] { r.total_s = std::chrono::duration<double>(Clock::now() - t0).count(); };
  const std::string prompt =
      build_prompt(opt.prompt_tokens, opt.shared_prefix_tokens,
                   mix(mix(opt.seed, uint64_t(sh.level_index)), uint64_t(index)));

  const auto executor = co_await asio::this_coro::executor;
  beast::tcp_stream stream(executor);
  stream.expires_after(std::chrono::milliseconds(int64_t(opt.timeout_s * 1000)));
  beast::error_code ec;
  co_await stream.async_connect(sh.endpoints, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    r.failure = describe(ec, "connect");
    finish();
    co_return;
  }
  http::request<http::string_body> req{http::verb::post, sh.url.path, 11};
  set_headers(req, sh.url, opt);
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "text/event-stream");
  req.keep_alive(false);
  req.body() = request_body(opt, sh.model, prompt);
  req.prepare_payload();
  co_await http::async_write(stream, req, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    r.failure = describe(ec, "send");
    finish();
    co_return;
  }

  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  // No limit: a stream is as long as it is. (Not boost::none: Boost 1.74 compares a Content-Length
  // against an empty limit as if it were exceeded.)
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    r.failure = ec == beast::error::timeout ? "timeout" : "no response: " + ec.message();
    finish();
    co_return;
  }
  r.status = parser.get().result_int();

  std::array<char, 16384> chunk;
  std::string error_body;
  SseReader sse;
  StreamState st;
  while (!parser.is_done() && !st.done) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    const size_t n = chunk.size() - parser.get().body().size;
    if (ec == http::error::need_buffer) ec = {};
    if (n > 0) {
      if (r.status != 200) {
        if (error_body.size() < 65536) error_body.append(chunk.data(), n);
      } else {
        sse.feed(chunk.data(), n, [&](const std::string& event, const std::string& data) {
          if (st.done) return;
          if (opt.api == Api::anthropic)
            handle_anthropic(event, data, r, st, t0);
          else
            handle_openai(data, r, st, t0);
        });
      }
    }
    if (ec) break;
  }
  finish();
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);

  if (r.status != 200) {
    const std::string type = error_type(error_body);
    r.failure = "HTTP " + std::to_string(r.status) + (type.empty() ? "" : " " + type);
  } else if (!st.stream_error.empty()) {
    r.failure = "stream error " + st.stream_error;
  } else if (st.done) {
    r.ok = true;
  } else if (ec == beast::error::timeout) {
    r.failure = "timeout";
  } else if (ec) {
    r.failure = "closed mid-stream";
  } else {
    r.failure = opt.api == Api::anthropic ? "stream ended without message_stop" : "stream ended without [DONE]";
  }
}

asio::awaitable<void> worker(Shared& sh) {
  for (;;) {
    const int i = sh.next++;
    if (i >= sh.requests) co_return;
    co_await one_request(sh, i, sh.results[size_t(i)]);
  }
}

// GET {prefix}/v1/models: the first model id, or "" when the server does not answer with one.
asio::awaitable<void> first_model_id(const Url& url, const BenchOptions& opt,
                                     const tcp::resolver::results_type& endpoints, std::string& out) {
  const auto executor = co_await asio::this_coro::executor;
  beast::tcp_stream stream(executor);
  stream.expires_after(std::chrono::seconds(10));
  beast::error_code ec;
  co_await stream.async_connect(endpoints, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return;
  http::request<http::empty_body> req{http::verb::get, prefix_of(url) + "/v1/models", 11};
  req.set(http::field::host, url.host + ":" + url.port);
  if (opt.api == Api::anthropic) {
    req.set("anthropic-version", "2023-06-01");
    if (!opt.api_key.empty()) req.set("x-api-key", opt.api_key);
  } else if (!opt.api_key.empty()) {
    req.set(http::field::authorization, "Bearer " + opt.api_key);
  }
  req.keep_alive(false);
  co_await http::async_write(stream, req, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
  if (ec || parser.get().result_int() != 200) co_return;
  const json j = json::parse(parser.get().body(), nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty()) co_return;
  const json& m = j["data"][0];
  if (m.is_object() && m.contains("id") && m["id"].is_string()) out = m["id"].get<std::string>();
}

tcp::resolver::results_type resolve(asio::io_context& ioc, const Url& url) {
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto r = resolver.resolve(url.host, url.port, ec);
  if (ec) throw Error("bench-serve: cannot resolve " + url.host + ": " + ec.message());
  return r;
}

void validate(const BenchOptions& opt) {
  if (opt.concurrency.empty()) throw Error("bench-serve: --concurrency needs at least one level");
  for (int c : opt.concurrency)
    if (c < 1) throw Error("bench-serve: each --concurrency level must be >= 1");
  if (opt.requests < 0) throw Error("bench-serve: --requests must be >= 0");
  if (opt.prompt_tokens < 1) throw Error("bench-serve: --prompt-tokens must be >= 1");
  if (opt.max_tokens < 1) throw Error("bench-serve: --max-tokens must be >= 1");
  if (opt.shared_prefix_tokens < 0 || opt.shared_prefix_tokens > opt.prompt_tokens)
    throw Error("bench-serve: --shared-prefix-tokens must be between 0 and --prompt-tokens");
  if (!(opt.timeout_s > 0)) throw Error("bench-serve: --timeout-s must be > 0");
}

std::string format_double(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

int default_requests(int concurrency) { return std::max(2 * concurrency, 16); }

bool BenchReport::any_failed() const {
  for (const auto& l : levels)
    if (l.failed > 0) return true;
  return false;
}

std::string build_prompt(int words, int shared, uint64_t seed) {
  shared = std::clamp(shared, 0, std::max(words, 0));
  std::string out;
  append_words(out, shared, kSharedSeed);
  const bool instruct = words - shared > kInstructionWords;
  append_words(out, words - shared - (instruct ? kInstructionWords : 0), seed);
  if (instruct) out += kInstruction;
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

LevelResult summarize(int concurrency, const std::vector<RequestResult>& results, double wall_s, int prompt_words) {
  LevelResult l;
  l.concurrency = concurrency;
  l.requests = int(results.size());
  l.wall_s = wall_s;
  std::vector<double> ttft, gaps, stream_rate, latency;
  for (const auto& r : results) {
    if (!r.ok) {
      ++l.failed;
      ++l.failures[r.failure.empty() ? "unknown" : r.failure];
      continue;
    }
    ++l.ok;
    const int gen = r.generated_tokens();
    l.generated_tokens += gen;
    l.prompt_tokens += r.prompt_tokens >= 0 ? r.prompt_tokens : prompt_words;
    if (r.output_tokens < 0) l.usage_reported = false;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    latency.push_back(r.total_s);
    gaps.insert(gaps.end(), r.gaps_s.begin(), r.gaps_s.end());
    const double after_first = r.last_delta_s - r.ttft_s;
    if (gen > 1 && r.deltas > 1 && after_first > 0) stream_rate.push_back(double(gen - 1) / after_first);
  }
  if (wall_s > 0) {
    l.gen_tok_s = double(l.generated_tokens) / wall_s;
    l.prompt_tok_s = double(l.prompt_tokens) / wall_s;
  }
  l.ttft_p50_s = percentile(ttft, 50);
  l.ttft_p99_s = percentile(ttft, 99);
  l.itl_p50_s = percentile(gaps, 50);
  l.itl_p99_s = percentile(gaps, 99);
  l.latency_p50_s = percentile(latency, 50);
  l.latency_p99_s = percentile(latency, 99);
  l.stream_tok_s_p50 = percentile(stream_rate, 50);
  return l;
}

LevelResult run_level(const BenchOptions& opt, const std::string& model, int concurrency, int requests,
                      int level_index) {
  asio::io_context ioc;
  Shared sh{opt, parse_url(opt.url, opt.api), {}, model, level_index, requests, 0, {}};
  sh.endpoints = resolve(ioc, sh.url);
  sh.results.resize(size_t(requests));
  const auto t0 = Clock::now();
  for (int w = 0; w < std::min(concurrency, requests); ++w) asio::co_spawn(ioc, worker(sh), asio::detached);
  ioc.run();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return summarize(concurrency, sh.results, wall, opt.prompt_tokens);
}

BenchReport run_bench(const BenchOptions& opt) {
  validate(opt);
  BenchReport rep;
  const Url url = parse_url(opt.url, opt.api);
  rep.endpoint = url.text();
  rep.model = opt.model;
  if (rep.model.empty()) {
    asio::io_context ioc;
    const auto endpoints = resolve(ioc, url);
    std::string id;
    asio::co_spawn(ioc, first_model_id(url, opt, endpoints, id), asio::detached);
    ioc.run();
    rep.model = !id.empty() ? id : opt.api == Api::anthropic ? "claude-3-5-sonnet-latest" : "default";
  }
  for (size_t i = 0; i < opt.concurrency.size(); ++i) {
    const int c = opt.concurrency[i];
    const int n = opt.requests > 0 ? opt.requests : default_requests(c);
    rep.levels.push_back(run_level(opt, rep.model, c, n, int(i)));
  }
  return rep;
}

nlohmann::ordered_json report_json(const BenchOptions& opt, const BenchReport& r) {
  nlohmann::ordered_json levels = nlohmann::ordered_json::array();
  for (const auto& l : r.levels) {
    nlohmann::ordered_json failures = nlohmann::ordered_json::object();
    for (const auto& [k, v] : l.failures) failures[k] = v;
    levels.push_back({{"concurrency", l.concurrency},
                      {"requests", l.requests},
                      {"ok", l.ok},
                      {"failed", l.failed},
                      {"failures", failures},
                      {"wall_s", l.wall_s},
                      {"generated_tokens", l.generated_tokens},
                      {"prompt_tokens", l.prompt_tokens},
                      {"usage_reported", l.usage_reported},
                      {"gen_tok_s", l.gen_tok_s},
                      {"prompt_tok_s", l.prompt_tok_s},
                      {"ttft_p50_s", l.ttft_p50_s},
                      {"ttft_p99_s", l.ttft_p99_s},
                      {"itl_p50_s", l.itl_p50_s},
                      {"itl_p99_s", l.itl_p99_s},
                      {"latency_p50_s", l.latency_p50_s},
                      {"latency_p99_s", l.latency_p99_s},
                      {"stream_tok_s_p50", l.stream_tok_s_p50}});
  }
  return {{"endpoint", r.endpoint},
          {"api", opt.api == Api::anthropic ? "anthropic" : "openai"},
          {"model", r.model},
          {"prompt_tokens", opt.prompt_tokens},
          {"shared_prefix_tokens", opt.shared_prefix_tokens},
          {"max_tokens", opt.max_tokens},
          {"timeout_s", opt.timeout_s},
          {"levels", levels}};
}

std::string report_text(const BenchOptions& opt, const BenchReport& r) {
  std::string s;
  s += "endpoint  " + r.endpoint + " (" + (opt.api == Api::anthropic ? "anthropic" : "openai") + "), model " +
       r.model + "\n";
  s += "prompts   ~" + std::to_string(opt.prompt_tokens) + " tokens (" + std::to_string(opt.shared_prefix_tokens) +
       " shared), max_tokens " + std::to_string(opt.max_tokens) + "\n\n";
  char line[512];
  std::snprintf(line, sizeof line, "%5s %5s %5s %5s %8s %8s %10s %10s %17s %17s %21s %13s\n", "conc", "reqs", "ok",
                "fail", "wall s", "gen tok", "gen tok/s", "prompt t/s", "TTFT p50/p99 ms", "ITL p50/p99 ms",
                "latency p50/p99 ms", "stream tok/s");
  s += line;
  for (const auto& l : r.levels) {
    auto ms = [](double p50_s, double p99_s) {  // "p50 / p99" in milliseconds
      return format_double("%.1f", p50_s * 1e3) + " / " + format_double("%.1f", p99_s * 1e3);
    };
    const std::string ttft = ms(l.ttft_p50_s, l.ttft_p99_s), itl = ms(l.itl_p50_s, l.itl_p99_s),
                      lat = ms(l.latency_p50_s, l.latency_p99_s);
    std::snprintf(line, sizeof line, "%5d %5d %5d %5d %8.2f %8lld %10.1f %10.1f %17s %17s %21s %13.1f\n",
                  l.concurrency, l.requests, l.ok, l.failed, l.wall_s, static_cast<long long>(l.generated_tokens),
                  l.gen_tok_s, l.prompt_tok_s, ttft.c_str(), itl.c_str(), lat.c_str(), l.stream_tok_s_p50);
    s += line;
  }
  for (const auto& l : r.levels) {
    if (!l.failures.empty()) {
      s += "failures at concurrency " + std::to_string(l.concurrency) + ":";
      bool first = true;
      for (const auto& [k, v] : l.failures) {
        s += (first ? " " : "; ") + std::to_string(v) + " x " + k;
        first = false;
      }
      s += "\n";
    }
    if (!l.usage_reported && l.ok > 0)
      s += "note: at concurrency " + std::to_string(l.concurrency) +
           " some responses reported no usage; their tokens were counted as content deltas\n";
  }
  return s;
}

}  // namespace pensieve::server::bench
