// A ServedModel without weights for server tests: one token per byte of the rendered prompt, and
// an answer of numbered words. It can be told to reject system messages (as some chat templates
// do) and to hold each generation until released, to test queueing and cancellation.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/served_model.h"
#include "util/error.h"

namespace pensieve::server::test {

class FakeModel : public ServedModel {
 public:
  explicit FakeModel(std::string id = "fake-model", int context = 256) : id_(std::move(id)), context_(context) {}

  const std::string& id() const override { return id_; }
  int context_length() const override { return context_; }
  double load_seconds() const override { return 0.25; }
  int64_t created_unix() const override { return 1700000000; }

  std::string render(const ChatPrompt& p) const {
    std::string s;
    for (const auto& m : p.messages) {
      if (m.role == "system" && !system_role) throw Error("System role not supported");
      s += "<" + m.role + ">";
      for (const auto& r : m.tool_results) s += "<result " + r.tool_call_id + (r.is_error ? " error" : "") + ">" + r.content;
      s += m.content;
      for (const auto& c : m.tool_calls) s += "<call " + c.id + " " + c.name + ">" + c.arguments.dump();
    }
    if (!p.tools.is_null()) s += "<tools>" + std::to_string(p.tools.size());
    return s + "<assistant>";
  }
  std::vector<int32_t> chat_tokens(const ChatPrompt& p) const override {
    std::string s = render(p);
    {
      std::lock_guard lock(prompt_mu_);
      last_prompt_ = s;
    }
    return std::vector<int32_t>(s.begin(), s.end());
  }
  std::vector<int32_t> text_tokens(const std::string& t) const override {
    return std::vector<int32_t>(t.begin(), t.end());
  }

  ToolCallFormat tool_call_format() const override { return format; }
  GenerationService& service() const override { return service_; }

  std::string last_prompt() const {
    std::lock_guard lock(prompt_mu_);
    return last_prompt_;
  }

  GrammarPtr last_grammar() const {
    std::lock_guard lock(prompt_mu_);
    return last_grammar_;
  }

  ToolCallFormat format = ToolCallFormat::Hermes;
  // When set, each generation emits these pieces (one token each) and then ends its turn.
  std::vector<std::string> script;

  bool system_role = true;
  int eos_after = 1 << 30;
  int token_delay_ms = 0;
  std::atomic<int> max_waiting{32};
  std::atomic<bool> hold{false}, release{false};
  mutable std::atomic<int> started{0}, cancelled{0};

 private:
  // Runs one job at a time on its own thread, as a scheduler with one running sequence would:
  // emits "w0 ", "w1 ", … (one token each) until max_tokens, a stop string, or `eos_after` tokens.
  class Service : public GenerationService {
   public:
    explicit Service(FakeModel& m) : m_(m), thread_([this] { worker(); }) {}
    ~Service() override {
      cancel_all();
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      thread_.join();
    }
    bool submit(std::shared_ptr<GenerationJob> job) override {
      {
        std::lock_guard lock(mu_);
        if (stop_ || int(waiting_.size()) + (current_ ? 1 : 0) > m_.max_waiting) return false;
        waiting_.push_back(std::move(job));
      }
      cv_.notify_one();
      return true;
    }
    int waiting() const override {
      std::lock_guard lock(mu_);
      return int(waiting_.size());
    }
    int running() const override {
      std::lock_guard lock(mu_);
      return current_ ? 1 : 0;
    }
    ServiceStats stats() const override {
      ServiceStats s;
      s.running = running();
      s.waiting = waiting();
      return s;
    }
    void cancel_all() override {
      std::lock_guard lock(mu_);
      for (auto& j : waiting_) j->cancelled = true;
      if (current_) current_->cancelled = true;
    }
    void wait_idle(std::chrono::milliseconds limit) override {
      const auto end = std::chrono::steady_clock::now() + limit;
      while (std::chrono::steady_clock::now() < end) {
        {
          std::lock_guard lock(mu_);
          if (waiting_.empty() && !current_) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }

   private:
    void worker() {
      for (;;) {
        std::shared_ptr<GenerationJob> job;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [&] { return stop_ || !waiting_.empty(); });
          if (waiting_.empty()) return;
          job = std::move(waiting_.front());
          waiting_.pop_front();
          current_ = job;
        }
        GenerationEvent last = run(*job);
        {
          std::lock_guard lock(mu_);
          current_.reset();
        }
        job->sink(std::move(last));
      }
    }
    GenerationEvent run(GenerationJob& job) {
      using Kind = GenerationEvent::Kind;
      auto now = [] { return std::chrono::steady_clock::now(); };
      if (job.cancelled) return {Kind::Failed, {}, {}, FailKind::Cancelled, "cancelled before it started"};
      if (now() >= job.deadline) return {Kind::Failed, {}, {}, FailKind::TimedOut, "timed out while waiting"};
      job.sink({Kind::Started, {}, {}, {}, {}});
      ++m_.started;
      while (m_.hold && !m_.release) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const GenerateRequest& req = job.request;
      {
        std::lock_guard lock(m_.prompt_mu_);
        m_.last_grammar_ = req.grammar;
      }
      GenerateResult r;
      r.prompt_tokens = static_cast<int>(req.prompt.size());
      r.reason = StopReason::MaxTokens;
      std::string produced;
      for (int i = 0; i < req.max_tokens; ++i) {
        if (i == m_.eos_after || (!m_.script.empty() && i == int(m_.script.size()))) {
          r.reason = StopReason::EndOfTurn;
          break;
        }
        if (job.cancelled) {
          r.reason = StopReason::Cancelled;
          ++m_.cancelled;
          return {Kind::Done, {}, r, {}, {}};
        }
        if (now() >= job.deadline) return {Kind::Failed, {}, {}, FailKind::TimedOut, "the request exceeded its time limit"};
        std::string piece = m_.script.empty() ? "w" + std::to_string(i) + " " : m_.script[i];
        produced += piece;
        ++r.completion_tokens;
        for (const auto& stop : req.stop_strings)
          if (produced.find(stop) != std::string::npos) {
            r.reason = StopReason::StopString;
            r.stop_string = stop;
            return {Kind::Done, {}, r, {}, {}};
          }
        if (m_.token_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(m_.token_delay_ms));
        job.sink({Kind::Text, piece, {}, {}, {}});
      }
      r.decode_seconds = 0.01;
      return {Kind::Done, {}, r, {}, {}};
    }

    FakeModel& m_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<GenerationJob>> waiting_;
    std::shared_ptr<GenerationJob> current_;
    bool stop_ = false;
    std::thread thread_;
  };

  std::string id_;
  int context_;
  mutable std::mutex prompt_mu_;
  mutable std::string last_prompt_;
  mutable GrammarPtr last_grammar_;
  mutable Service service_{*this};
};

}  // namespace pensieve::server::test
