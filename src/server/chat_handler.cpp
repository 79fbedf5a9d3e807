#include "server/chat_handler.h"

#include <deque>
#include <random>

#include "server/anthropic_api.h"
#include "server/generation_queue.h"
#include "server/json_fields.h"
#include "server/openai_api.h"
#include "server/prompt_builder.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

std::string random_id(const char* prefix) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += alphabet[rng() % 62];
  return id;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

class AnthropicProtocol : public ChatProtocol {
 public:
  explicit AnthropicProtocol(const std::string& model) : id_(random_id("msg_")), stream_(id_, model) {}
  json complete(const std::string& model, const std::string& text, const GenerateResult& r) override {
    return anthropic_message(id_, model, text, r);
  }
  std::string stream_start(int n) override { return stream_.start(n); }
  std::string stream_delta(const std::string& t) override { return stream_.delta(t); }
  std::string stream_ping() override { return stream_.ping(); }
  std::string stream_finish(const GenerateResult& r) override { return stream_.finish(r); }
  std::string stream_error(const ApiError& e) override { return stream_.error(e); }

 private:
  std::string id_;
  AnthropicStream stream_;
};

class OpenAIProtocol : public ChatProtocol {
 public:
  OpenAIProtocol(const std::string& model, bool include_usage)
      : id_(random_id("chatcmpl-")), created_(unix_now()), stream_(id_, created_, model, include_usage) {}
  json complete(const std::string& model, const std::string& text, const GenerateResult& r) override {
    return openai_completion(id_, created_, model, text, r);
  }
  std::string stream_start(int) override { return stream_.start(); }
  std::string stream_delta(const std::string& t) override { return stream_.delta(t); }
  std::string stream_ping() override { return ": ping\n\n"; }  // an SSE comment: clients skip it
  std::string stream_finish(const GenerateResult& r) override { return stream_.finish(r); }
  std::string stream_error(const ApiError& e) override { return stream_.error(e); }

 private:
  std::string id_;
  int64_t created_;
  OpenAIStream stream_;
};

// Carries a job's events from the worker thread to the connection's coroutine, which sleeps on a
// timer that each event (or the client leaving) cancels.
class JobChannel : public std::enable_shared_from_this<JobChannel> {
 public:
  explicit JobChannel(asio::any_io_executor ex) : timer_(ex) {}
  void push(JobEvent&& e) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(e));
    }
    wake();
  }
  void wake() {
    asio::post(timer_.get_executor(), [self = shared_from_this()] { self->timer_.cancel(); });
  }
  std::deque<JobEvent> take() {
    std::lock_guard lock(mu_);
    return std::exchange(events_, {});
  }
  // Returns after an event, a wake() or the timeout (must follow a take() without yielding).
  asio::awaitable<void> wait(Clock::duration timeout) {
    timer_.expires_after(timeout);
    beast::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

 private:
  asio::steady_timer timer_;
  std::mutex mu_;
  std::deque<JobEvent> events_;
};

// Wraps the channel: records metrics, usage and KV use on the worker thread, whether or not the
// client is still there to read the result.
// When `server_limit_ends_turn` is set, stopping at a limit the server imposed (context room or
// the server-wide cap, below the client's max_tokens) is reported as end_turn: Claude Code treats
// max_tokens as "its own max_tokens was exceeded" and fails the turn.
std::function<void(JobEvent&&)> job_sink(ServerContext& ctx, std::shared_ptr<JobChannel> channel,
                                         Clock::time_point arrived, std::string key, std::string model,
                                         int prompt_tokens, bool server_limit_ends_turn) {
  struct Progress { bool first = true; Clock::time_point last; int held = 0; };
  auto progress = std::make_shared<Progress>();
  return [&ctx, channel, arrived, key, model, prompt_tokens, progress, server_limit_ends_turn](JobEvent&& e) {
    auto now = Clock::now();
    switch (e.kind) {
      case JobEvent::Kind::Started:
        progress->held = prompt_tokens;
        ctx.tokens_in_use += prompt_tokens;
        break;
      case JobEvent::Kind::Text:
        if (progress->first) ctx.metrics.record_first_token(std::chrono::duration<double>(now - arrived).count());
        else ctx.metrics.record_token_gap(std::chrono::duration<double>(now - progress->last).count());
        progress->first = false;
        progress->last = now;
        ++progress->held;
        ++ctx.tokens_in_use;
        break;
      case JobEvent::Kind::Done:
      case JobEvent::Kind::Failed: {
        ctx.tokens_in_use -= progress->held;
        progress->held = 0;
        if (e.kind == JobEvent::Kind::Done && server_limit_ends_turn && e.result.reason == StopReason::MaxTokens)
          e.result.reason = StopReason::EndOfTurn;
        UsageRecord u{key, model, e.kind == JobEvent::Kind::Done};
        if (e.kind == JobEvent::Kind::Done) {
          u.input_tokens = e.result.prompt_tokens;
          u.output_tokens = e.result.completion_tokens;
          u.generation_seconds = e.result.prefill_seconds + e.result.decode_seconds;
          ctx.metrics.record_tokens(u.input_tokens, u.output_tokens);
        }
        try {
          if (ctx.store) ctx.store->record_usage(u);
        } catch (const std::exception&) {
          // A full disk must not take the answer down with it; the answer still goes out.
        }
        break;
      }
    }
    channel->push(std::move(e));
  };
}

// The terminal error for a job that the server (not the client) cancelled.
ApiError cancelled_error(const ServerContext& ctx) {
  if (ctx.stopping) return ApiError::overloaded("the server is shutting down");
  return ApiError::timeout("the request exceeded request_timeout_ms");
}

asio::awaitable<void> stream_events(ServerContext& ctx, HttpExchange& ex, ChatProtocol& proto,
                                    JobChannel& channel, GenerationJob& job, int input_tokens) {
  if (!co_await ex.begin_stream("text/event-stream")) co_return;
  const std::string start = proto.stream_start(input_tokens);
  if (!co_await ex.write(start)) co_return;
  const auto ping_every = std::chrono::milliseconds(ctx.config.ping_interval_ms);
  for (;;) {
    std::deque<JobEvent> events = channel.take();
    for (JobEvent& e : events) {
      std::string out;
      if (e.kind == JobEvent::Kind::Text) out = proto.stream_delta(e.text);
      else if (e.kind == JobEvent::Kind::Failed) out = proto.stream_error(*e.error);
      else if (e.kind == JobEvent::Kind::Done && e.result.reason == StopReason::Cancelled) out = proto.stream_error(cancelled_error(ctx));
      else if (e.kind == JobEvent::Kind::Done) out = proto.stream_finish(e.result);
      if (!co_await ex.write(out)) co_return;
      if (e.kind == JobEvent::Kind::Done || e.kind == JobEvent::Kind::Failed) {
        co_await ex.end_stream();
        co_return;
      }
    }
    if (ex.client_gone()) co_return;
    if (Clock::now() >= job.deadline && !job.cancelled) {
      job.cancelled = true;  // frees the model if it is still running or waiting
      const std::string error = proto.stream_error(ApiError::timeout("the request exceeded request_timeout_ms"));
      co_await ex.write(error);
      co_await ex.end_stream();
      co_return;
    }
    auto before = Clock::now();
    co_await channel.wait(std::min<Clock::duration>(ping_every, job.deadline - before));
    if (Clock::now() - before >= ping_every) {
      const std::string ping = proto.stream_ping();
      if (!co_await ex.write(ping)) co_return;
    }
  }
}

asio::awaitable<void> answer_once(ServerContext& ctx, HttpExchange& ex, ChatProtocol& proto,
                                  JobChannel& channel, GenerationJob& job, const std::string& model) {
  std::string text;
  for (;;) {
    std::deque<JobEvent> events = channel.take();
    for (JobEvent& e : events) {
      if (e.kind == JobEvent::Kind::Text) text += e.text;
      if (e.kind == JobEvent::Kind::Failed) throw *e.error;
      if (e.kind == JobEvent::Kind::Done) {
        if (e.result.reason == StopReason::Cancelled) throw cancelled_error(ctx);
        const json body = proto.complete(model, text, e.result);
        co_await ex.send_json(200, body);
        co_return;
      }
    }
    if (ex.client_gone()) co_return;
    if (Clock::now() >= job.deadline) {
      job.cancelled = true;
      throw ApiError::timeout("the request exceeded request_timeout_ms");
    }
    co_await channel.wait(job.deadline - Clock::now());
  }
}

}  // namespace

std::unique_ptr<ChatProtocol> anthropic_protocol(const std::string& model) {
  return std::make_unique<AnthropicProtocol>(model);
}

std::unique_ptr<ChatProtocol> openai_protocol(const std::string& model, bool include_usage) {
  return std::make_unique<OpenAIProtocol>(model, include_usage);
}

json parse_json_body(const HttpExchange& ex) {
  const std::string& body = ex.request().body();
  if (body.empty()) throw ApiError::invalid_request("request body is empty: expected a JSON object");
  return fields::parse_json_text(body);
}

asio::awaitable<void> handle_chat(ServerContext& ctx, HttpExchange& ex, bool openai, const std::string& key_name) {
  json body = parse_json_body(ex);
  ChatRequest req = openai ? parse_openai_request(body) : parse_anthropic_request(body);
  auto models = ctx.models();
  const ModelEntry* entry = models ? models->resolve(req.model) : nullptr;
  if (!entry) throw ApiError::not_found("model: " + req.model);
  auto model = entry->model;
  const int cap = ctx.config.max_output_tokens;
  auto prepare = [model, &req, cap] { return prepare_prompt(*model, req, cap); };
  auto task = run_blocking<PreparedPrompt>(ctx.blocking, ex.executor(), std::move(prepare));
  PreparedPrompt prepared = co_await std::move(task);
  const int input_tokens = static_cast<int>(prepared.tokens.size());
  const bool server_limited = !openai && req.max_tokens && prepared.max_tokens < *req.max_tokens;

  auto proto = openai ? openai_protocol(req.model, req.include_usage) : anthropic_protocol(req.model);
  auto channel = std::make_shared<JobChannel>(ex.executor());
  auto job = std::make_shared<GenerationJob>();
  job->request = to_generate_request(req, std::move(prepared));
  job->deadline = ex.started() + std::chrono::milliseconds(ctx.config.request_timeout_ms);
  job->sink = job_sink(ctx, channel, ex.started(), key_name, model->id(), input_tokens, server_limited);
  if (ctx.stopping) throw ApiError::overloaded("the server is shutting down");
  if (!entry->queue->submit(job))
    throw ApiError::overloaded("model '" + model->id() + "' is busy: " +
                               std::to_string(entry->queue->waiting()) + " requests are waiting");
  ex.start_watch([job, channel] {
    job->cancelled = true;
    channel->wake();
  });
  if (req.stream)
    co_await stream_events(ctx, ex, *proto, *channel, *job, input_tokens);
  else
    co_await answer_once(ctx, ex, *proto, *channel, *job, req.model);
}

}  // namespace pensieve::server
