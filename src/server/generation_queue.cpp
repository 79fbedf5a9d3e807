#include "server/generation_queue.h"

namespace pensieve::server {

using Clock = std::chrono::steady_clock;

GenerationQueue::GenerationQueue(std::shared_ptr<const ServedModel> model, int max_waiting)
    : model_(std::move(model)), max_waiting_(max_waiting), thread_([this] { worker(); }) {}

GenerationQueue::~GenerationQueue() {
  cancel_all();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool GenerationQueue::submit(std::shared_ptr<GenerationJob> job) {
  {
    std::lock_guard lock(mu_);
    // max_waiting counts requests behind the running one.
    if (stop_ || static_cast<int>(waiting_.size()) + (current_ ? 1 : 0) > max_waiting_) return false;
    waiting_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

int GenerationQueue::waiting() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(waiting_.size());
}

void GenerationQueue::cancel_all() {
  std::lock_guard lock(mu_);
  for (auto& j : waiting_) j->cancelled = true;
  if (current_) current_->cancelled = true;
}

void GenerationQueue::wait_idle(std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    {
      std::lock_guard lock(mu_);
      if (waiting_.empty() && !current_) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void GenerationQueue::worker() {
  for (;;) {
    std::shared_ptr<GenerationJob> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stop_ and nothing left
      job = std::move(waiting_.front());
      waiting_.pop_front();
      current_ = job;
    }
    running_ = 1;
    JobEvent last = run_job(*job);
    running_ = 0;
    {
      std::lock_guard lock(mu_);
      current_.reset();
    }
    job->sink(std::move(last));  // after the model is free: the answer never sees it busy
  }
}

JobEvent GenerationQueue::run_job(GenerationJob& job) {
  auto fail = [](ApiError e) { return JobEvent{JobEvent::Kind::Failed, {}, {}, std::move(e)}; };
  if (job.cancelled) return fail(ApiError::overloaded("the request was cancelled before it started"));
  if (Clock::now() >= job.deadline)
    return fail(ApiError::timeout("the request timed out while waiting for the model"));
  job.sink({JobEvent::Kind::Started, {}, {}, std::nullopt});
  bool timed_out = false;
  // Polled by the runtime between forward passes, so a long prefill stops too.
  job.request.cancelled = [&job, &timed_out] {
    if (job.cancelled) return true;
    if (Clock::now() >= job.deadline) timed_out = true;
    return timed_out;
  };
  try {
    GenerateResult r = model_->generate(job.request, [&](std::string_view text) {
      if (job.cancelled) return false;
      if (Clock::now() >= job.deadline) {
        timed_out = true;
        return false;
      }
      job.sink({JobEvent::Kind::Text, std::string(text), {}, std::nullopt});
      return true;
    });
    if (timed_out) return fail(ApiError::timeout("the request exceeded request_timeout_ms"));
    return {JobEvent::Kind::Done, {}, r, std::nullopt};
  } catch (const std::exception& e) {
    return fail(ApiError::internal(std::string("generation failed: ") + e.what()));
  }
}

}  // namespace pensieve::server
