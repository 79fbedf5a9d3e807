// The scheduler: runs every generation of one model through batched forward passes over a paged
// KV cache (continuous batching). Requests wait in a bounded FCFS queue, are admitted into a
// running set limited by max_running and the cache, and each step runs one token of every
// decoding sequence plus chunks of prompts being prefilled, within a token budget, in one pass.
// Full cache blocks are published to the prefix cache, so a prompt that starts like an earlier one
// prefills only the rest. When the cache runs out the youngest running sequence is preempted (its
// blocks freed, itself requeued to be recomputed). Nothing here knows about HTTP: callers submit
// jobs and receive their events on the scheduler's thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "runtime/generator.h"

namespace pensieve {

class Model;
class Tokenizer;
class ThreadPool;
class KvPool;
class BlockManager;
class TokenTrie;

// Why a job ended without a result.
enum class FailKind { InvalidRequest, Cancelled, TimedOut, Internal };

struct GenerationEvent {
  enum class Kind { Started, Text, Done, Failed } kind;
  std::string text;         // Text
  GenerateResult result;    // Done (reason Cancelled when the caller cancelled a started job)
  FailKind fail = FailKind::Internal;  // Failed
  std::string message;      // Failed
};

struct GenerationJob {
  GenerateRequest request;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::atomic<bool> cancelled{false};  // the caller is gone or the server stops
  // Receives the job's events on the scheduler thread: Started, Text..., then Done or Failed.
  // Failed comes without Started for a job that never ran.
  std::function<void(GenerationEvent&&)> sink;
};

struct ServiceStats {
  int running = 0, waiting = 0;
  int kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0;
  int kv_block_size = 0;
  size_t kv_cache_bytes = 0;
  double kv_usage_ratio = 0;          // blocks held by running sequences / all blocks
  int64_t prompt_tokens = 0;          // prompt tokens of admitted requests
  int64_t cached_prompt_tokens = 0;   // of which read from the prefix cache
  int64_t preemptions = 0;
  int64_t steps = 0;
};

// What the HTTP layer (or any caller) needs from a model's generation engine.
class GenerationService {
 public:
  virtual ~GenerationService() = default;
  // False when the wait queue is full (the caller reports overload).
  virtual bool submit(std::shared_ptr<GenerationJob> job) = 0;
  virtual int waiting() const = 0;
  virtual int running() const = 0;
  virtual ServiceStats stats() const = 0;
  // Cancels every waiting and running job.
  virtual void cancel_all() = 0;
  // Waits (up to `limit`) until no job runs or waits.
  virtual void wait_idle(std::chrono::milliseconds limit) = 0;
};

struct SchedulerOptions {
  int max_running = 64;        // sequences in the running set
  int max_waiting = 1024;      // jobs queued behind a full running set
  int max_batch_tokens = 512;  // tokens per forward pass (decode tokens + prefill chunks)
  size_t kv_cache_bytes = 0;   // 0: room for the context x 4 sequences, capped by free memory
  int kv_block_size = 16;
  KvType kv_type = KvType::F16;
};

class Scheduler : public GenerationService {
 public:
  // The model, tokenizer and pool must outlive the scheduler. `stop_ids` end a turn; `context` is
  // the most positions one sequence may use. Starts the scheduler thread.
  Scheduler(std::shared_ptr<const Model> model, const Tokenizer& tokenizer, std::vector<int32_t> stop_ids,
            int context, ThreadPool& pool, SchedulerOptions opts);
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  bool submit(std::shared_ptr<GenerationJob> job) override;
  int waiting() const override;
  int running() const override { return running_.load(); }
  ServiceStats stats() const override;
  void cancel_all() override;
  void wait_idle(std::chrono::milliseconds limit) override;

 private:
  struct Seq;
  void loop();
  void step();
  bool admit(Seq& s);
  bool grow(Seq& s, int positions);
  void preempt(Seq& s);
  void free_blocks(Seq& s);
  void publish_blocks(Seq& s);
  void finish(Seq& s);
  void fail(Seq& s, FailKind kind, const std::string& message);
  void update_gauges();
  bool should_stop(Seq& s);

  std::shared_ptr<const Model> model_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> stop_ids_;
  int context_;
  ThreadPool& pool_;
  SchedulerOptions opts_;
  uint64_t salt_;
  std::unique_ptr<KvPool> kv_;
  std::unique_ptr<BlockManager> blocks_;
  std::shared_ptr<const TokenTrie> trie_;  // built for the first grammar-constrained job
  HostFloats logits_;                      // a step's logits, in memory the backend copies into fastest

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<GenerationJob>> incoming_;  // submitted, not yet seen by the loop
  bool stop_ = false;
  uint64_t cancel_epoch_ = 0;       // bumped by cancel_all(); under mu_
  uint64_t cancel_epoch_seen_ = 0;  // its value at the start of the current step
  std::atomic<int> running_{0}, waiting_{0};
  ServiceStats stats_;  // under mu_

  // Owned by the scheduler thread.
  // PENSIEVE_SCHED_TIMING=1: where each step's time goes, by the number of sequences sampled,
  // printed to stderr when the scheduler ends (a diagnostic, like PENSIEVE_CUDA_STEP_TIMING);
  // "between" runs from a step's end to the next one's start, so it includes any wait for work.
  struct StepTiming {
    struct Sum {
      int64_t steps = 0;
      double before = 0, forward = 0, sample = 0, after = 0, between = 0;
    };
    bool on = false;
    std::map<int, Sum> by_sampled;
    std::chrono::steady_clock::time_point last_end{};
  };
  StepTiming timing_;
  std::deque<std::unique_ptr<Seq>> queue_;    // waiting, FCFS (preempted ones go to the front)
  std::vector<std::unique_ptr<Seq>> active_;  // running, in admission order
  std::thread thread_;
};

}  // namespace pensieve
