// The bench-serve load generator against an in-process stub server on loopback that streams a known
// number of events in the Anthropic or OpenAI shape, and can answer errors, close mid-stream, send an
// error event or stall, per request.
#include <gtest/gtest.h>

#include <utility>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli_util.h"
#include "server/bench_client.h"
#include "server/http_exchange.h"
#include "util/error.h"

using namespace pensieve::server;
using namespace pensieve::server::bench;
using nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using asio::use_awaitable;

namespace {

struct StubBehaviour {
  int deltas = 5;           // content deltas per stream
  int tokens_per_delta = 2;  // usage reports deltas x this
  bool usage = true;
  int prompt_tokens = 7;
  int fail_every = 0;  // the k-th, 2k-th... request answers fail_status
  int fail_status = 529;
  int close_every = 0;  // ... closes the connection after two deltas
  int error_event_every = 0;  // ... sends an error event after one delta
  int stall_every = 0;        // ... sends the header and then nothing
};

class StubServer {
 public:
  explicit StubServer(StubBehaviour b) : b_(b), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~StubServer() {
    ioc_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int max_in_flight() const { return max_in_flight_; }
  int requests() const { return count_; }
  std::vector<json> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      tcp::socket socket = co_await acceptor_.async_accept(use_awaitable);
      asio::co_spawn(ioc_, session(std::move(socket)), asio::detached);
    }
  }

  static std::string anthropic_event(const std::string& type, const json& data) {
    json d = data;
    d["type"] = type;
    return "event: " + type + "\ndata: " + d.dump() + "\n\n";
  }
  static std::string openai_chunk(const json& data) { return "data: " + data.dump() + "\r\n\r\n"; }

  asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(ioc_, d);
    co_await t.async_wait(use_awaitable);
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::flat_buffer buffer;
    HttpRequest req;
    beast::error_code ec;
    co_await http::async_read(socket, buffer, req, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    HttpExchange ex(socket, buffer, req, "req_stub", std::chrono::seconds(10));
    ex.close_after();
    if (req.method() == http::verb::get) {
      const nlohmann::ordered_json models = {{"data", {{{"id", "stub-model"}}}}};
      co_await ex.send_json(200, models);
      co_return;
    }
    const bool anthropic = ex.path() == "/v1/messages";
    const int n = ++count_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(json::parse(req.body(), nullptr, false));
    }
    const int now = ++in_flight_;
    if (now > max_in_flight_) max_in_flight_ = now;  // sessions run on the stub's one thread
    struct Leave {
      std::atomic<int>& v;
      ~Leave() { --v; }
    } leave{in_flight_};

    if (b_.fail_every > 0 && n % b_.fail_every == 0) {
      const nlohmann::ordered_json body =
          anthropic ? nlohmann::ordered_json{{"type", "error"},
                                             {"error", {{"type", "overloaded_error"}, {"message", "busy"}}}}
                    : nlohmann::ordered_json{{"error", {{"message", "busy"}, {"type", "server_overloaded"}}}};
      co_await pause(std::chrono::milliseconds(2));
      co_await ex.send_json(b_.fail_status, body);
      co_return;
    }
    if (!co_await ex.begin_stream("text/event-stream")) co_return;
    if (b_.stall_every > 0 && n % b_.stall_every == 0) {
      co_await pause(std::chrono::seconds(5));
      co_return;
    }
    const bool close_early = b_.close_every > 0 && n % b_.close_every == 0;
    const bool error_event = b_.error_event_every > 0 && n % b_.error_event_every == 0;
    std::string out;
    if (anthropic) {
      out = anthropic_event("message_start",
                            {{"message", {{"usage", {{"input_tokens", b_.prompt_tokens}, {"output_tokens", 1}}}}}});
      out += anthropic_event("content_block_start", {{"index", 0}});
      out += anthropic_event("ping", json::object());
    } else {
      out = ": keep-alive\n\n" +
            openai_chunk({{"choices", {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}}}}});
    }
    co_await ex.write(out);
    for (int i = 0; i < b_.deltas; ++i) {
      co_await pause(std::chrono::milliseconds(1));
      if (close_early && i == 2) {
        beast::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
        co_return;
      }
      if (error_event && i == 1) {
        const std::string e =
            anthropic ? anthropic_event("error", {{"error", {{"type", "timeout_error"}, {"message", "late"}}}})
                      : openai_chunk({{"error", {{"type", "timeout_error"}, {"message", "late"}}}});
        co_await ex.write(e);
        co_await ex.end_stream();
        co_return;
      }
      const std::string text = "w" + std::to_string(i) + " ";
      out = anthropic ? anthropic_event("content_block_delta",
                                        {{"index", 0}, {"delta", {{"type", "text_delta"}, {"text", text}}}})
                      : openai_chunk({{"choices", {{{"index", 0}, {"delta", {{"content", text}}}}}}});
      co_await ex.write(out);
    }
    const int out_tokens = b_.deltas * b_.tokens_per_delta;
    if (anthropic) {
      json md = {{"delta", {{"stop_reason", "max_tokens"}}}};
      if (b_.usage) md["usage"] = {{"output_tokens", out_tokens}};
      out = anthropic_event("content_block_stop", {{"index", 0}}) + anthropic_event("message_delta", md) +
            anthropic_event("message_stop", json::object());
    } else {
      out = openai_chunk({{"choices", {{{"index", 0}, {"delta", json::object()}, {"finish_reason", "length"}}}}});
      if (b_.usage)
        out += openai_chunk({{"choices", json::array()},
                             {"usage", {{"prompt_tokens", b_.prompt_tokens}, {"completion_tokens", out_tokens}}}});
      out += "data: [DONE]\n\n";
    }
    co_await ex.write(out);
    co_await ex.end_stream();
  }

  // Declared before ioc_: coroutines still suspended when the stub stops are destroyed with it.
  StubBehaviour b_;
  std::atomic<int> count_{0}, in_flight_{0}, max_in_flight_{0};
  std::mutex mu_;
  std::vector<json> bodies_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::thread thread_;
};

BenchOptions options(const std::string& url, Api api, std::vector<int> concurrency, int requests) {
  BenchOptions o;
  o.url = url;
  o.api = api;
  o.concurrency = std::move(concurrency);
  o.requests = requests;
  o.prompt_tokens = 40;
  o.max_tokens = 16;
  o.timeout_s = 20;
  return o;
}

}  // namespace

TEST(BenchClient, PromptsShareExactlyTheRequestedPrefix) {
  const std::string a = build_prompt(100, 30, 1), b = build_prompt(100, 30, 2);
  auto words = [](const std::string& s) {
    std::vector<std::string> w;
    std::istringstream in(s);
    for (std::string x; in >> x;) w.push_back(x);
    return w;
  };
  const auto wa = words(a), wb = words(b);
  EXPECT_EQ(wa.size(), 100u);
  EXPECT_EQ(wb.size(), 100u);
  EXPECT_TRUE(std::equal(wa.begin(), wa.begin() + 30, wb.begin()));
  EXPECT_NE(std::vector<std::string>(wa.begin() + 30, wa.begin() + 34),
            std::vector<std::string>(wb.begin() + 30, wb.begin() + 34));
  EXPECT_EQ(build_prompt(100, 30, 1), a);  // seeded
  EXPECT_NE(words(build_prompt(50, 0, 1))[0] + words(build_prompt(50, 0, 1))[1],
            words(build_prompt(50, 0, 2))[0] + words(build_prompt(50, 0, 2))[1]);
  EXPECT_EQ(words(build_prompt(5, 0, 3)).size(), 5u);
}

TEST(BenchClient, Percentile) {
  EXPECT_EQ(percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(percentile({3, 1, 2}, 50), 2);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({1, 2}, 99), 1.99);
  EXPECT_DOUBLE_EQ(percentile({5}, 99), 5);
}

TEST(BenchClient, AnthropicStreamsAreCountedPerLevel) {
  StubServer stub({});
  const BenchOptions o = options(stub.url(), Api::anthropic, {1, 4}, 8);
  const BenchReport r = run_bench(o);
  EXPECT_EQ(r.model, "stub-model");  // from GET /v1/models
  EXPECT_EQ(r.endpoint, stub.url() + "/v1/messages");
  ASSERT_EQ(r.levels.size(), 2u);
  for (const auto& l : r.levels) {
    EXPECT_EQ(l.requests, 8);
    EXPECT_EQ(l.ok, 8);
    EXPECT_EQ(l.failed, 0);
    EXPECT_TRUE(l.failures.empty());
    EXPECT_EQ(l.generated_tokens, 8 * 10);  // usage, not the 5 deltas
    EXPECT_EQ(l.prompt_tokens, 8 * 7);
    EXPECT_TRUE(l.usage_reported);
    EXPECT_GT(l.wall_s, 0);
    EXPECT_NEAR(l.gen_tok_s, 80 / l.wall_s, 1e-6);
    EXPECT_GT(l.ttft_p50_s, 0);
    EXPECT_GE(l.ttft_p99_s, l.ttft_p50_s);
    EXPECT_GT(l.itl_p50_s, 0);
    EXPECT_GE(l.itl_p99_s, l.itl_p50_s);
    // Each request ends after its first delta: so do the percentiles.
    EXPECT_GE(l.latency_p50_s, l.ttft_p50_s);
    EXPECT_GE(l.latency_p99_s, l.latency_p50_s);
    EXPECT_LE(l.latency_p99_s, l.wall_s);
    EXPECT_GT(l.stream_tok_s_p50, 0);
  }
  EXPECT_FALSE(r.any_failed());
  EXPECT_EQ(stub.requests(), 16);
  EXPECT_LE(stub.max_in_flight(), 4);
  const auto bodies = stub.bodies();
  ASSERT_EQ(bodies.size(), 16u);
  EXPECT_EQ(bodies[0]["model"], "stub-model");
  EXPECT_EQ(bodies[0]["max_tokens"], 16);
  EXPECT_EQ(bodies[0]["stream"], true);
  EXPECT_NE(bodies[0]["messages"][0]["content"], bodies[1]["messages"][0]["content"]);
  const json j = report_json(o, r);
  EXPECT_EQ(j["levels"][1]["concurrency"], 4);
  EXPECT_EQ(j["levels"][1]["generated_tokens"], 80);
  EXPECT_NE(report_text(o, r).find("TTFT"), std::string::npos);
  EXPECT_NE(report_text(o, r).find("latency p50/p99"), std::string::npos);
  EXPECT_EQ(j["levels"][1]["latency_p99_s"], r.levels[1].latency_p99_s);
}

TEST(BenchClient, OpenAiWithoutUsageCountsDeltas) {
  StubBehaviour b;
  b.usage = false;
  StubServer stub(b);
  BenchOptions o = options(stub.url() + "/v1", Api::openai, {3}, 6);
  o.model = "given";
  o.shared_prefix_tokens = 20;
  const BenchReport r = run_bench(o);
  EXPECT_EQ(r.endpoint, stub.url() + "/v1/chat/completions");
  ASSERT_EQ(r.levels.size(), 1u);
  const LevelResult& l = r.levels[0];
  EXPECT_EQ(l.ok, 6);
  EXPECT_EQ(l.generated_tokens, 6 * 5);
  EXPECT_EQ(l.prompt_tokens, 6 * 40);  // no usage: the words sent
  EXPECT_FALSE(l.usage_reported);
  EXPECT_LE(stub.max_in_flight(), 3);
  const auto bodies = stub.bodies();
  ASSERT_EQ(bodies.size(), 6u);
  EXPECT_EQ(bodies[0]["model"], "given");
  EXPECT_EQ(bodies[0]["stream_options"]["include_usage"], true);
  const std::string p0 = bodies[0]["messages"][0]["content"], p1 = bodies[1]["messages"][0]["content"];
  EXPECT_NE(p0, p1);
  size_t common = 0;
  while (common < p0.size() && p0[common] == p1[common]) ++common;
  EXPECT_EQ(std::count(p0.begin(), p0.begin() + common, ' '), 20);  // 20 shared words, then a space
}

TEST(BenchClient, OpenAiWithUsage) {
  StubServer stub({});
  const BenchReport r = run_bench(options(stub.url(), Api::openai, {2}, 4));
  ASSERT_EQ(r.levels.size(), 1u);
  EXPECT_EQ(r.levels[0].ok, 4);
  EXPECT_EQ(r.levels[0].generated_tokens, 4 * 10);
  EXPECT_EQ(r.levels[0].prompt_tokens, 4 * 7);
  EXPECT_TRUE(r.levels[0].usage_reported);
}

TEST(BenchClient, OverloadAnswersAreTalliedByStatusAndType) {
  StubBehaviour b;
  b.fail_every = 3;
  {
    StubServer stub(b);
    const BenchReport r = run_bench(options(stub.url(), Api::anthropic, {4}, 12));
    const LevelResult& l = r.levels.at(0);
    EXPECT_EQ(l.ok, 8);
    EXPECT_EQ(l.failed, 4);
    EXPECT_EQ(l.failures, (std::map<std::string, int>{{"HTTP 529 overloaded_error", 4}}));
    EXPECT_EQ(l.generated_tokens, 8 * 10);
    EXPECT_TRUE(r.any_failed());
  }
  b.fail_status = 429;
  StubServer stub(b);
  const BenchReport r = run_bench(options(stub.url(), Api::openai, {4}, 9));
  const LevelResult& l = r.levels.at(0);
  EXPECT_EQ(l.ok, 6);
  EXPECT_EQ(l.failures, (std::map<std::string, int>{{"HTTP 429 server_overloaded", 3}}));
  EXPECT_EQ(l.generated_tokens, 6 * 10);
}

TEST(BenchClient, StreamsClosedMidwayOrEndedByAnErrorEventFail) {
  for (Api api : {Api::anthropic, Api::openai}) {
    StubBehaviour b;
    b.close_every = 2;
    b.error_event_every = 3;
    StubServer stub(b);
    const BenchReport r = run_bench(options(stub.url(), api, {2}, 12));
    const LevelResult& l = r.levels.at(0);
    // 3,6,9,12 send an error event after one delta; 2,4,8,10 close after two.
    EXPECT_EQ(l.failures, (std::map<std::string, int>{{"closed mid-stream", 4}, {"stream error timeout_error", 4}}));
    EXPECT_EQ(l.ok, 4);
    EXPECT_EQ(l.generated_tokens, 4 * 10);
  }
}

TEST(BenchClient, ConnectionRefusedIsTallied) {
  int port = 0;
  {
    asio::io_context ioc;
    tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  BenchOptions o = options("http://127.0.0.1:" + std::to_string(port), Api::anthropic, {2}, 3);
  const BenchReport r = run_bench(o);
  EXPECT_EQ(r.model, "claude-3-5-sonnet-latest");  // no /v1/models answer
  const LevelResult& l = r.levels.at(0);
  EXPECT_EQ(l.ok, 0);
  EXPECT_EQ(l.failures, (std::map<std::string, int>{{"connection refused", 3}}));
  EXPECT_EQ(l.gen_tok_s, 0);
  EXPECT_EQ(l.ttft_p50_s, 0);
  EXPECT_EQ(l.latency_p99_s, 0);  // failed requests do not count
}

TEST(BenchClient, StalledStreamsTimeOut) {
  StubBehaviour b;
  b.stall_every = 2;
  StubServer stub(b);
  BenchOptions o = options(stub.url(), Api::anthropic, {4}, 4);
  o.timeout_s = 0.3;
  const auto t0 = std::chrono::steady_clock::now();
  const BenchReport r = run_bench(o);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0);
  EXPECT_EQ(r.levels.at(0).ok, 2);
  EXPECT_EQ(r.levels.at(0).failures, (std::map<std::string, int>{{"timeout", 2}}));
}

TEST(BenchClient, BadOptionsAreRejected) {
  BenchOptions o = options("https://example.com", Api::anthropic, {1}, 1);
  EXPECT_THROW(run_bench(o), pensieve::Error);
  o.url = "http://127.0.0.1:1";
  o.concurrency = {0};
  EXPECT_THROW(run_bench(o), pensieve::Error);
  o.concurrency = {1};
  o.shared_prefix_tokens = 41;
  EXPECT_THROW(run_bench(o), pensieve::Error);
}

TEST(BenchClient, CommandPrintsJsonAndFailsWhenARequestFails) {
  {
    StubServer stub({});
    const auto res = pensieve::test::run_pensieve("bench-serve --url " + stub.url() +
                                                  " --api openai --concurrency 1,2 --requests 3 --prompt-tokens 20 "
                                                  "--max-tokens 8 --json");
    ASSERT_EQ(res.status, 0) << res.err;
    const json j = json::parse(res.out);
    ASSERT_EQ(j["levels"].size(), 2u);
    EXPECT_EQ(j["levels"][1]["concurrency"], 2);
    EXPECT_EQ(j["levels"][1]["ok"], 3);
    EXPECT_EQ(j["levels"][1]["generated_tokens"], 30);
  }
  StubBehaviour b;
  b.fail_every = 2;
  StubServer stub(b);
  const auto res = pensieve::test::run_pensieve("bench-serve --url " + stub.url() + " -c 2 -n 4 -p 20 -g 8");
  EXPECT_EQ(res.status, 1) << res.err;
  EXPECT_NE(res.out.find("2 x HTTP 529 overloaded_error"), std::string::npos) << res.out;
}
