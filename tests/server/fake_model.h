// A ServedModel without weights for server tests: one token per byte of the rendered prompt, and
// an answer of numbered words. It can be told to reject system messages (as some chat templates
// do) and to hold each generation until released, to test queueing and cancellation.
#pragma once
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

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
      s += "<" + m.role + ">" + m.content;
    }
    if (!p.tools.is_null()) s += "<tools>" + std::to_string(p.tools.size());
    return s + "<assistant>";
  }
  std::vector<int32_t> chat_tokens(const ChatPrompt& p) const override {
    std::string s = render(p);
    return std::vector<int32_t>(s.begin(), s.end());
  }
  std::vector<int32_t> text_tokens(const std::string& t) const override {
    return std::vector<int32_t>(t.begin(), t.end());
  }

  // Emits "w0 ", "w1 ", … (one token each) until max_tokens, a stop string, or `eos_after` tokens.
  GenerateResult generate(const GenerateRequest& req, const TextCallback& on_text) const override {
    ++started;
    while (hold && !release) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    GenerateResult r;
    r.prompt_tokens = static_cast<int>(req.prompt.size());
    r.reason = StopReason::MaxTokens;
    std::string produced;
    for (int i = 0; i < req.max_tokens; ++i) {
      if (i == eos_after) {
        r.reason = StopReason::EndOfTurn;
        break;
      }
      std::string piece = "w" + std::to_string(i) + " ";
      produced += piece;
      ++r.completion_tokens;
      for (const auto& stop : req.stop_strings)
        if (produced.find(stop) != std::string::npos) {
          r.reason = StopReason::StopString;
          r.stop_string = stop;
          return r;
        }
      if (token_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(token_delay_ms));
      if (!on_text(piece)) {
        r.reason = StopReason::Cancelled;
        ++cancelled;
        return r;
      }
    }
    r.decode_seconds = 0.01;
    return r;
  }

  bool system_role = true;
  int eos_after = 1 << 30;
  int token_delay_ms = 0;
  std::atomic<bool> hold{false}, release{false};
  mutable std::atomic<int> started{0}, cancelled{0};

 private:
  std::string id_;
  int context_;
};

}  // namespace pensieve::server::test
