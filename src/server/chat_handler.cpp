#include "server/chat_handler.h"

#include <deque>
#include <random>

#include "server/anthropic_api.h"
#include "server/job_channel.h"
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

void assign_ids(std::vector<OutputPiece>& output, const char* prefix) {
  for (auto& p : output)
    if (p.kind == OutputPiece::Kind::Call) p.call.id = random_id(prefix);
}

class AnthropicProtocol : public ChatProtocol {
 public:
  AnthropicProtocol(const std::string& model, bool tools) : id_(random_id("msg_")), stream_(id_, model, tools) {}
  json complete(const std::string& model, std::vector<OutputPiece> output, const GenerateResult& r) override {
    assign_ids(output, "toolu_");
    return anthropic_message(id_, model, output, r);
  }
  std::string stream_start(int n) override { return stream_.start(n); }
  std::string stream_delta(const std::string& t) override { return stream_.delta(t); }
  std::string stream_tool_call(ToolCall c) override {
    c.id = random_id("toolu_");
    return stream_.tool_call(c);
  }
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
  json complete(const std::string& model, std::vector<OutputPiece> output, const GenerateResult& r) override {
    assign_ids(output, "call_");
    return openai_completion(id_, created_, model, output, r);
  }
  std::string stream_start(int) override { return stream_.start(); }
  std::string stream_delta(const std::string& t) override { return stream_.delta(t); }
  std::string stream_tool_call(ToolCall c) override {
    c.id = random_id("call_");
    return stream_.tool_call(c);
  }
  std::string stream_ping() override { return ": ping\n\n"; }  // an SSE comment: clients skip it
  std::string stream_finish(const GenerateResult& r) override { return stream_.finish(r); }
  std::string stream_error(const ApiError& e) override { return stream_.error(e); }

 private:
  std::string id_;
  int64_t created_;
  OpenAIStream stream_;
};

// The API error for a job that failed.
ApiError job_error(const GenerationEvent& e) {
  switch (e.fail) {
    case FailKind::InvalidRequest: return ApiError::invalid_request(e.message);
    case FailKind::TimedOut: return ApiError::timeout(e.message);
    case FailKind::Cancelled: return ApiError::overloaded(e.message);
    case FailKind::Internal: break;
  }
  return ApiError::internal("generation failed: " + e.message);
}

// Wraps the channel: records metrics and usage, whether or not the client is still there to read
// the result. Runs on the scheduler thread, which must not wait for the disk: the final event goes
// through the blocking pool, which commits the usage record first, so an answer that reached its
// client is never missing from the usage after a crash.
// When `server_limit_ends_turn` is set, stopping at a limit the server imposed (context room or
// the server-wide cap, below the client's max_tokens) is reported as end_turn: Claude Code treats
// max_tokens as "its own max_tokens was exceeded" and fails the turn.
std::function<void(GenerationEvent&&)> job_sink(ServerContext& ctx, std::shared_ptr<JobChannel> channel,
                                                Clock::time_point arrived, std::string key, std::string model,
                                                bool server_limit_ends_turn) {
  struct Progress { bool first = true; Clock::time_point last; };
  auto progress = std::make_shared<Progress>();
  return [&ctx, channel, arrived, key, model, progress, server_limit_ends_turn](GenerationEvent&& e) {
    auto now = Clock::now();
    switch (e.kind) {
      case GenerationEvent::Kind::Started:
        break;
      case GenerationEvent::Kind::Text:
        if (progress->first) ctx.metrics.record_first_token(std::chrono::duration<double>(now - arrived).count());
        else ctx.metrics.record_token_gap(std::chrono::duration<double>(now - progress->last).count());
        progress->first = false;
        progress->last = now;
        break;
      case GenerationEvent::Kind::Done:
      case GenerationEvent::Kind::Failed: {
        if (e.kind == GenerationEvent::Kind::Done && server_limit_ends_turn && e.result.reason == StopReason::MaxTokens)
          e.result.reason = StopReason::EndOfTurn;
        UsageRecord u{key, model, e.kind == GenerationEvent::Kind::Done};
        if (e.kind == GenerationEvent::Kind::Done) {
          u.input_tokens = e.result.prompt_tokens;
          u.output_tokens = e.result.completion_tokens;
          u.cached_input_tokens = e.result.cached_tokens;
          u.generation_seconds = e.result.prefill_seconds + e.result.decode_seconds;
          u.decode_tokens = std::max(0, e.result.completion_tokens - 1);
          u.decode_seconds = e.result.decode_seconds;
          ctx.metrics.record_tokens(u.input_tokens, u.output_tokens, e.result.cached_tokens);
        }
        if (!ctx.store) break;
        asio::post(ctx.blocking, [&ctx, u, channel, e = std::move(e)]() mutable {
          try {
            ctx.store->record_usage(u);
          } catch (const std::exception&) {
            // A full disk must not take the answer down with it; the answer still goes out.
          }
          channel->push(std::move(e));
        });
        return;
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

// The SSE bytes of a batch of answer pieces.
std::string stream_pieces(ChatProtocol& proto, std::vector<OutputPiece> pieces) {
  std::string out;
  for (auto& p : pieces)
    out += p.kind == OutputPiece::Kind::Call ? proto.stream_tool_call(std::move(p.call)) : proto.stream_delta(p.text);
  return out;
}

asio::awaitable<void> stream_events(ServerContext& ctx, HttpExchange& ex, ChatProtocol& proto, OutputShaper& shaper,
                                    JobChannel& channel, GenerationJob& job, int input_tokens) {
  if (!co_await ex.begin_stream("text/event-stream")) co_return;
  const std::string start = proto.stream_start(input_tokens);
  if (!co_await ex.write(start)) co_return;
  const auto ping_every = std::chrono::milliseconds(ctx.config.ping_interval_ms);
  for (;;) {
    std::deque<GenerationEvent> events = channel.take();
    for (GenerationEvent& e : events) {
      std::string out;
      if (e.kind == GenerationEvent::Kind::Text) out = stream_pieces(proto, shaper.push(e.text));
      else if (e.kind == GenerationEvent::Kind::Failed) out = proto.stream_error(job_error(e));
      else if (e.kind == GenerationEvent::Kind::Done && e.result.reason == StopReason::Cancelled) out = proto.stream_error(cancelled_error(ctx));
      else if (e.kind == GenerationEvent::Kind::Done) out = stream_pieces(proto, shaper.finish()) + proto.stream_finish(e.result);
      if (out.empty()) continue;
      if (!co_await ex.write(out)) co_return;
      if (e.kind == GenerationEvent::Kind::Done || e.kind == GenerationEvent::Kind::Failed) {
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

asio::awaitable<void> answer_once(ServerContext& ctx, HttpExchange& ex, ChatProtocol& proto, OutputShaper& shaper,
                                  JobChannel& channel, GenerationJob& job, const std::string& model) {
  std::vector<OutputPiece> output;
  auto keep = [&output](std::vector<OutputPiece> pieces) {
    for (auto& p : pieces) output.push_back(std::move(p));
  };
  for (;;) {
    std::deque<GenerationEvent> events = channel.take();
    for (GenerationEvent& e : events) {
      if (e.kind == GenerationEvent::Kind::Text) keep(shaper.push(e.text));
      if (e.kind == GenerationEvent::Kind::Failed) throw job_error(e);
      if (e.kind == GenerationEvent::Kind::Done) {
        if (e.result.reason == StopReason::Cancelled) throw cancelled_error(ctx);
        keep(shaper.finish());
        const json body = proto.complete(model, std::move(output), e.result);
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

std::unique_ptr<ChatProtocol> anthropic_protocol(const std::string& model, bool tools) {
  return std::make_unique<AnthropicProtocol>(model, tools);
}

std::vector<OutputPiece> OutputShaper::filter(std::vector<OutputPiece> pieces) {
  if (parallel_) return pieces;
  std::vector<OutputPiece> out;
  for (auto& p : pieces) {
    if (closed_) continue;  // after the one allowed call, nothing more is the answer
    if (p.kind == OutputPiece::Kind::Call) closed_ = true;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<OutputPiece> OutputShaper::push(const std::string& text) {
  if (!parser_) return {OutputPiece{OutputPiece::Kind::Text, text, {}}};
  return filter(parser_->push(text));
}

std::vector<OutputPiece> OutputShaper::finish() {
  if (!parser_) return {};
  return filter(parser_->finish());
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
  auto use = use_model(ctx, ex.executor(), ctx.models(), req.model, request_keep_alive(body));
  ServedLease lease = co_await std::move(use);  // held until the answer is sent
  auto model = lease.model;
  const int cap = ctx.config.max_output_tokens;
  auto prepare = [model, &req, cap] { return prepare_prompt(*model, req, cap); };
  auto task = run_blocking<PreparedPrompt>(ctx.blocking, ex.executor(), std::move(prepare));
  PreparedPrompt prepared = co_await std::move(task);
  const int input_tokens = static_cast<int>(prepared.tokens.size());
  const bool server_limited = !openai && req.max_tokens && prepared.max_tokens < *req.max_tokens;

  const bool tools = req.tools.is_array() && !req.tools.empty();
  auto proto = openai ? openai_protocol(req.model, req.include_usage) : anthropic_protocol(req.model, tools);
  OutputShaper shaper = tools ? OutputShaper(model->tool_call_format(), req.tool_choice.parallel) : OutputShaper();
  auto channel = std::make_shared<JobChannel>(ex.executor());
  auto job = std::make_shared<GenerationJob>();
  job->request = to_generate_request(req, std::move(prepared));
  job->deadline = ex.started() + std::chrono::milliseconds(ctx.config.request_timeout_ms);
  job->sink = job_sink(ctx, channel, ex.started(), key_name, model->id(), server_limited);
  if (ctx.stopping) throw ApiError::overloaded("the server is shutting down");
  if (!model->service().submit(job))
    throw ApiError::overloaded("model '" + model->id() + "' is busy: " +
                               std::to_string(model->service().waiting()) + " requests are waiting");
  ex.start_watch([job, channel] {
    job->cancelled = true;
    channel->wake();
  });
  if (req.stream)
    co_await stream_events(ctx, ex, *proto, shaper, *channel, *job, input_tokens);
  else
    co_await answer_once(ctx, ex, *proto, shaper, *channel, *job, req.model);
}

}  // namespace pensieve::server
