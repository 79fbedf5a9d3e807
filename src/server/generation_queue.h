// Runs generations for one model on its own worker thread, one at a time (the runtime serialises
// them until a scheduler exists), behind a bounded wait queue. The network thread only submits
// jobs and receive events, so a long generation never blocks accepting connections or /health.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "server/api_error.h"
#include "server/served_model.h"

namespace pensieve::server {

struct JobEvent {
  enum class Kind { Started, Text, Done, Failed } kind;
  std::string text;              // Text
  GenerateResult result;         // Done
  std::optional<ApiError> error; // Failed
};

struct GenerationJob {
  GenerateRequest request;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::atomic<bool> cancelled{false};  // set when the client is gone or the server stops
  // Receives the job's events on the worker thread: Started, Text..., then Done or Failed.
  std::function<void(JobEvent&&)> sink;
};

class GenerationQueue {
 public:
  GenerationQueue(std::shared_ptr<const ServedModel> model, int max_waiting);
  ~GenerationQueue();
  GenerationQueue(const GenerationQueue&) = delete;
  GenerationQueue& operator=(const GenerationQueue&) = delete;

  // False when max_waiting jobs already wait (the caller answers 529 / 429).
  bool submit(std::shared_ptr<GenerationJob> job);
  int waiting() const;
  int running() const { return running_.load(); }
  // Cancels every waiting and running job (they end with Failed, or Done when already streaming).
  void cancel_all();
  // Waits (up to `limit`) until no job runs or waits: call after cancel_all() and before the
  // event loop that receives the jobs' events goes away.
  void wait_idle(std::chrono::milliseconds limit);

 private:
  void worker();
  JobEvent run_job(GenerationJob& job);  // returns the final event (Done or Failed)

  std::shared_ptr<const ServedModel> model_;
  int max_waiting_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<GenerationJob>> waiting_;
  std::shared_ptr<GenerationJob> current_;
  std::atomic<int> running_{0};
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pensieve::server
