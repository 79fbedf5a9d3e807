#include "runtime/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "model/kv_cache.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/stop_matcher.h"
#include "runtime/token_constraint.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace pensieve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// MemAvailable from /proc/meminfo, or 0 when unknown.
size_t available_memory() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

}  // namespace

struct Scheduler::Seq {
  Seq(std::shared_ptr<GenerationJob> j, KvPool& kv, const Tokenizer& tok, uint64_t epoch)
      : job(std::move(j)),
        st(kv),
        tokens(job->request.prompt),
        sampler(job->request.sampling),
        decoder(tok, /*skip_special=*/true),
        stops(job->request.stop_strings),
        epoch(epoch) {}

  std::shared_ptr<GenerationJob> job;
  SequenceState st;
  std::vector<int32_t> tokens;  // the prompt, then every generated token
  int n_prompt = 0, max_new = 0;
  Sampler sampler;
  StreamDecoder decoder;
  StopMatcher stops;
  GenerateResult res;
  uint64_t epoch;            // cancel_all() epoch at submission
  bool started = false;      // admitted at least once (Started sent)
  bool timed_out = false;
  Clock::time_point t_admit, t_first;
  std::vector<uint64_t> hashes;  // hash of each leading full block in st.blocks
  int32_t next = -1;             // sampled this step
  bool in_batch = false;
  bool preempted = false;  // blocks freed; goes back to the queue at the end of the step
  bool removed = false;    // finished or failed
  std::unique_ptr<TokenConstraint> grammar;  // when the request has one
  bool grammar_end = false;   // the grammar is complete and no token may follow (this step)
};

Scheduler::Scheduler(std::shared_ptr<const Model> model, const Tokenizer& tokenizer,
                     std::vector<int32_t> stop_ids, int context, ThreadPool& pool, SchedulerOptions opts)
    : model_(std::move(model)),
      tokenizer_(tokenizer),
      stop_ids_(std::move(stop_ids)),
      context_(context),
      pool_(pool),
      opts_(opts),
      logits_(model_->backend()) {
  const ModelConfig& cfg = model_->config();
  if (opts_.max_running < 1 || opts_.max_batch_tokens < 1 || opts_.max_waiting < 0 || opts_.kv_block_size < 1)
    throw Error("scheduler: max_running and max_batch_tokens must be at least 1");
  const int bs = opts_.kv_block_size;
  const size_t block = KvPool::block_bytes(cfg, bs, opts_.kv_type);
  const size_t per_context = size_t((context_ + bs - 1) / bs) * block;
  size_t bytes = opts_.kv_cache_bytes;
  if (bytes == 0) {
    bytes = per_context * 4;
    if (const size_t avail = available_memory(); avail > 0) bytes = std::min(bytes, avail / 2);
    bytes = std::max(bytes, per_context + block);
  }
  const int n_blocks = int(std::min<size_t>(bytes / block, size_t(1) << 30));
  if (size_t(n_blocks) * block < per_context + block)
    throw Error("KV cache of " + std::to_string(bytes >> 20) + " MiB cannot hold one sequence of the " +
                std::to_string(context_) + "-token context (" + std::to_string((per_context + block) >> 20) +
                " MiB): raise kv_cache_gb or lower the context");
  kv_ = std::make_unique<KvPool>(cfg, n_blocks, bs, opts_.kv_type);
  blocks_ = std::make_unique<BlockManager>(n_blocks);
  const std::vector<int32_t> name(cfg.name.begin(), cfg.name.end());  // blocks of other models never match
  salt_ = kv_block_hash(0x5eed, name);
  stats_.kv_blocks_total = n_blocks;
  stats_.kv_block_size = bs;
  stats_.kv_cache_bytes = kv_->bytes();
  const char* timing = std::getenv("PENSIEVE_SCHED_TIMING");
  timing_.on = timing && std::atoi(timing) != 0;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  cancel_all();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (const auto& [n, t] : timing_.by_sampled)
    std::fprintf(stderr,
                 "scheduler step timing: %lld steps sampling %d sequences: before the pass %.1f us, pass %.1f us, "
                 "sampling %.1f us, after it %.1f us, between steps %.1f us\n",
                 (long long)t.steps, n, 1e6 * t.before / double(t.steps), 1e6 * t.forward / double(t.steps),
                 1e6 * t.sample / double(t.steps), 1e6 * t.after / double(t.steps), 1e6 * t.between / double(t.steps));
}

bool Scheduler::submit(std::shared_ptr<GenerationJob> job) {
  {
    std::lock_guard lock(mu_);
    // Room for max_running sequences and max_waiting more behind them.
    if (stop_ || waiting_.load() + running_.load() >= opts_.max_running + opts_.max_waiting) return false;
    incoming_.push_back(std::move(job));
    ++waiting_;
  }
  cv_.notify_one();
  return true;
}

int Scheduler::waiting() const { return waiting_.load(); }

ServiceStats Scheduler::stats() const {
  std::lock_guard lock(mu_);
  ServiceStats s = stats_;
  s.running = running_.load();
  s.waiting = waiting_.load();
  return s;
}

void Scheduler::cancel_all() {
  std::lock_guard lock(mu_);
  for (auto& j : incoming_) j->cancelled = true;
  ++cancel_epoch_;
  cv_.notify_all();
}

void Scheduler::wait_idle(std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (running_.load() == 0 && waiting_.load() == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Scheduler::loop() {
  for (;;) {
    std::deque<std::shared_ptr<GenerationJob>> arrived;
    uint64_t epoch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !incoming_.empty() || !queue_.empty() || !active_.empty(); });
      if (stop_ && incoming_.empty() && queue_.empty() && active_.empty()) return;
      arrived.swap(incoming_);
      epoch = cancel_epoch_;
    }
    for (auto& job : arrived) {
      auto seq = std::make_unique<Seq>(std::move(job), *kv_, tokenizer_, epoch);
      if (seq->job->request.grammar) {
        // The token table is built once per model, on first use (tens of milliseconds at 32k).
        if (!trie_) trie_ = std::make_shared<const TokenTrie>(tokenizer_);
        seq->grammar = std::make_unique<TokenConstraint>(seq->job->request.grammar, trie_);
      }
      queue_.push_back(std::move(seq));
    }
    try {
      step();
    } catch (const std::exception& e) {
      // A failed pass fails the sequences it carried (in step); anything else fails everyone
      // rather than leaving callers waiting.
      for (auto& s : active_) fail(*s, FailKind::Internal, e.what());
      for (auto& s : queue_) fail(*s, FailKind::Internal, e.what());
      active_.clear();
      queue_.clear();
    }
    update_gauges();
  }
}

// The gauges (running(), waiting(), the cache's use) as of now. Refreshed after every step and
// whenever a sequence ends, before its end is delivered: a client that has its answer never sees
// its own sequence still counted.
void Scheduler::update_gauges() {
  const auto live = [](const auto& seqs) {
    return int(std::count_if(seqs.begin(), seqs.end(), [](const auto& s) { return s && !s->removed; }));
  };
  std::lock_guard lock(mu_);
  running_ = live(active_);
  waiting_ = live(queue_) + int(incoming_.size());
  stats_.kv_blocks_used = blocks_->in_use();
  stats_.kv_blocks_cached = blocks_->cached();
  stats_.kv_usage_ratio = double(blocks_->in_use()) / blocks_->total();
}

bool Scheduler::should_stop(Seq& s) {
  if (s.epoch < cancel_epoch_seen_) s.job->cancelled = true;
  if (s.job->cancelled) return true;
  if (Clock::now() >= s.job->deadline) {
    s.timed_out = true;
    return true;
  }
  return false;
}

void Scheduler::step() {
  const Clock::time_point t_start = timing_.on ? Clock::now() : Clock::time_point{};
  {
    std::lock_guard lock(mu_);
    cancel_epoch_seen_ = cancel_epoch_;
  }
  // Jobs that ended while waiting.
  for (auto& s : queue_) {
    if (!should_stop(*s)) continue;
    if (s->started && !s->timed_out) {
      s->res.reason = StopReason::Cancelled;
      finish(*s);
    } else {
      fail(*s, s->timed_out ? FailKind::TimedOut : FailKind::Cancelled,
           s->timed_out ? "the request timed out while waiting for the model"
                        : "the request was cancelled before it started");
    }
  }
  std::erase_if(queue_, [](const auto& s) { return s->removed; });
  for (auto& s : active_) {
    if (!should_stop(*s)) continue;
    if (s->timed_out) {
      fail(*s, FailKind::TimedOut, "the request exceeded its time limit");
    } else {
      s->res.reason = StopReason::Cancelled;
      finish(*s);
    }
  }
  std::erase_if(active_, [](const auto& s) { return s->removed; });

  // Admission, first come first served.
  while (!queue_.empty() && int(active_.size()) < opts_.max_running) {
    Seq& s = *queue_.front();
    if (!admit(s)) break;
    if (s.removed) {  // finished at admission (nothing to generate) or rejected
      queue_.pop_front();
      continue;
    }
    active_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (active_.empty()) return;

  // The batch: one token of every decoding sequence, then prompt chunks within the token budget.
  std::vector<BatchItem> items;
  std::vector<Seq*> seqs;
  int budget = opts_.max_batch_tokens;
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (size_t i = 0; i < active_.size() && budget > 0; ++i) {
      Seq& s = *active_[i];
      if (s.preempted || s.in_batch) continue;
      const int pending = int(s.tokens.size()) - s.st.n_past;
      if ((pass == 0) != (pending == 1)) continue;
      const int n = std::min(pending, budget);
      if (!grow(s, s.st.n_past + n)) continue;
      s.st.rope_horizon = s.n_prompt;
      items.push_back({&s.st, std::span<const int32_t>(s.tokens).subspan(size_t(s.st.n_past), size_t(n)),
                       n == pending ? BatchItem::Logits::Last : BatchItem::Logits::None});
      seqs.push_back(&s);
      s.in_batch = true;
      budget -= n;
    }
  }
  std::vector<std::unique_ptr<Seq>> preempted;
  for (auto& s : active_)
    if (s->preempted) preempted.push_back(std::move(s));
  std::erase_if(active_, [](const auto& s) { return !s; });
  // Preempted sequences go back to the front of the queue, oldest first.
  for (auto it = preempted.rbegin(); it != preempted.rend(); ++it) {
    (*it)->preempted = false;
    queue_.push_front(std::move(*it));
  }
  if (items.empty()) return;

  int n_logits = 0;
  for (const BatchItem& it : items) n_logits += it.logits == BatchItem::Logits::Last;
  const size_t vocab = size_t(model_->config().n_vocab);
  float* logits = logits_.get(size_t(n_logits) * vocab);
  const Clock::time_point t_pass = timing_.on ? Clock::now() : Clock::time_point{};
  try {
    model_->forward_batch(items, logits, pool_);
  } catch (const std::exception& e) {
    for (Seq* s : seqs) fail(*s, FailKind::Internal, std::string("forward pass failed: ") + e.what());
    std::erase_if(active_, [](const auto& s) { return s->removed; });
    return;
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.steps;
  }

  const Clock::time_point t_passed = timing_.on ? Clock::now() : Clock::time_point{};
  // Sample every sequence that got logits, in parallel (each has its own sampler and buffer).
  std::vector<Seq*> sampled;
  for (size_t i = 0; i < items.size(); ++i) {
    seqs[i]->in_batch = false;
    publish_blocks(*seqs[i]);
    if (items[i].logits == BatchItem::Logits::Last) sampled.push_back(seqs[i]);
  }
  pool_.parallel_for(int64_t(sampled.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Seq& s = *sampled[size_t(i)];
      const std::span<float> row(logits + size_t(i) * vocab, vocab);
      if (s.grammar) {
        // The mask comes first, so greedy and every sampling filter see only allowed tokens.
        const Clock::time_point t0 = Clock::now();
        const std::span<const int32_t> ends =
            s.job->request.stop_at_eos ? std::span<const int32_t>(stop_ids_) : std::span<const int32_t>();
        const int allowed = s.grammar->apply(row, ends, s.res.completion_tokens == 0);
        s.res.grammar_seconds += seconds(Clock::now() - t0);
        if (allowed == 0) {
          s.grammar_end = true;  // nothing may follow: complete (ends the turn) or stuck (fails)
          continue;
        }
      }
      s.next = s.sampler.sample(row, s.tokens);
    }
  });

  const Clock::time_point t = Clock::now();
  for (Seq* sp : sampled) {
    Seq& s = *sp;
    const int32_t id = s.next;
    if (s.res.completion_tokens == 0) {
      s.t_first = t;
      s.res.prefill_seconds = seconds(t - s.t_admit);
    }
    if (s.grammar_end) {
      if (!s.grammar->complete()) {
        fail(s, FailKind::Internal, "no token of this vocabulary can continue the grammar here");
        continue;
      }
      s.res.reason = StopReason::EndOfTurn;
      finish(s);
      continue;
    }
    if (s.job->request.stop_at_eos && std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) {
      s.res.reason = StopReason::EndOfTurn;
      finish(s);
      continue;
    }
    if (s.grammar) {
      try {
        s.grammar->accept(id, s.res.completion_tokens == 0);
      } catch (const std::exception& e) {
        fail(s, FailKind::Internal, e.what());
        continue;
      }
    }
    s.tokens.push_back(id);
    ++s.res.completion_tokens;
    const std::string text = s.stops.push(s.decoder.push(id));
    if (!text.empty()) s.job->sink({GenerationEvent::Kind::Text, text, {}, {}, {}});
    if (s.stops.matched()) {
      s.res.reason = StopReason::StopString;
      s.res.stop_string = s.stops.matched_string();
      finish(s);
    } else if (s.grammar && s.grammar->finished()) {
      s.res.reason = StopReason::EndOfTurn;  // the grammar admits nothing more
      finish(s);
    } else if (s.res.completion_tokens >= s.max_new) {
      s.res.reason = StopReason::MaxTokens;
      finish(s);
    }
  }
  std::erase_if(active_, [](const auto& s) { return s->removed; });
  if (timing_.on) {
    const Clock::time_point t_end = Clock::now();
    StepTiming::Sum& sum = timing_.by_sampled[int(sampled.size())];
    ++sum.steps;
    sum.before += seconds(t_pass - t_start);
    sum.forward += seconds(t_passed - t_pass);
    sum.sample += seconds(t - t_passed);
    sum.after += seconds(t_end - t);
    if (timing_.last_end != Clock::time_point{}) sum.between += seconds(t_start - timing_.last_end);
    timing_.last_end = t_end;
  }
}

// Takes the sequence into the running set: reuses every cached leading block of its tokens and
// checks that the cache can hold the rest of its prompt. False when it must wait.
bool Scheduler::admit(Seq& s) {
  const GenerateRequest& req = s.job->request;
  if (!s.started) {
    s.n_prompt = int(req.prompt.size());
    if (req.prompt.empty()) {
      fail(s, FailKind::InvalidRequest, "the prompt has no tokens");
      return true;
    }
    if (s.n_prompt >= context_) {
      fail(s, FailKind::InvalidRequest,
           "the prompt has " + std::to_string(s.n_prompt) + " tokens, more than fit the context of " +
               std::to_string(context_) + " tokens");
      return true;
    }
    s.max_new = std::max(0, std::min(req.max_tokens, context_ - s.n_prompt));
    s.res.prompt_tokens = s.n_prompt;
  }
  const int bs = kv_->block_size();
  const int n = int(s.tokens.size());
  // Leading full blocks from the prefix cache; at least one token is always computed, for logits.
  while ((int(s.st.blocks.size()) + 1) * bs < n) {
    const size_t i = s.st.blocks.size();
    const uint64_t parent = i == 0 ? salt_ : s.hashes[i - 1];
    const std::span<const int32_t> span(s.tokens.data() + i * size_t(bs), size_t(bs));
    const uint64_t h = kv_block_hash(parent, span);
    const int b = blocks_->lookup(h, parent, span);
    if (b < 0) break;
    s.st.blocks.push_back(b);
    s.hashes.push_back(h);
  }
  s.st.n_past = int(s.st.blocks.size()) * bs;
  // Room for the rest of the prompt, keeping one block per running sequence for its decoding.
  const int need = (n - s.st.n_past + bs - 1) / bs;
  if (blocks_->available() - need < int(active_.size())) {
    free_blocks(s);
    return false;
  }
  s.t_admit = Clock::now();
  if (!s.started) {
    s.started = true;
    s.res.cached_tokens = s.st.n_past;
    {
      std::lock_guard lock(mu_);
      stats_.prompt_tokens += s.n_prompt;
      stats_.cached_prompt_tokens += s.st.n_past;
    }
    s.job->sink({GenerationEvent::Kind::Started, {}, {}, {}, {}});
    if (s.max_new == 0) {
      s.res.reason = StopReason::MaxTokens;
      finish(s);
    }
  }
  return true;
}

// Gives the sequence blocks for `positions` positions, preempting the youngest running sequences
// not in this step's batch when the cache is full. False when the sequence itself had to yield.
bool Scheduler::grow(Seq& s, int positions) {
  while (s.st.capacity() < positions) {
    const int b = blocks_->allocate();
    if (b >= 0) {
      s.st.blocks.push_back(b);
      continue;
    }
    Seq* victim = nullptr;
    for (auto it = active_.rbegin(); it != active_.rend() && !victim; ++it)
      if (!(*it)->preempted && !(*it)->in_batch) victim = it->get();
    if (!victim) return false;  // every other sequence is in this batch: wait for the next step
    preempt(*victim);
    if (victim == &s) return false;
  }
  return true;
}

void Scheduler::preempt(Seq& s) {
  free_blocks(s);
  s.preempted = true;
  std::lock_guard lock(mu_);
  ++stats_.preemptions;
}

void Scheduler::publish_blocks(Seq& s) {
  const int bs = kv_->block_size();
  const size_t full = size_t(s.st.n_past / bs);
  for (size_t i = s.hashes.size(); i < full && i < s.st.blocks.size(); ++i) {
    const uint64_t parent = i == 0 ? salt_ : s.hashes[i - 1];
    const std::span<const int32_t> span(s.tokens.data() + i * size_t(bs), size_t(bs));
    const uint64_t h = kv_block_hash(parent, span);
    blocks_->publish(s.st.blocks[i], h, parent, span);
    s.hashes.push_back(h);
  }
}

void Scheduler::free_blocks(Seq& s) {
  for (int32_t b : s.st.blocks) blocks_->release(b);
  s.st.blocks.clear();
  s.st.n_past = 0;
  s.hashes.clear();
}

void Scheduler::finish(Seq& s) {
  if (s.res.reason == StopReason::EndOfTurn || s.res.reason == StopReason::MaxTokens) {
    std::string tail = s.stops.push(s.decoder.flush());
    if (s.stops.matched()) {
      s.res.reason = StopReason::StopString;
      s.res.stop_string = s.stops.matched_string();
    } else {
      tail += s.stops.flush();
    }
    if (!tail.empty()) s.job->sink({GenerationEvent::Kind::Text, tail, {}, {}, {}});
  }
  if (s.res.completion_tokens > 0) s.res.decode_seconds = seconds(Clock::now() - s.t_first);
  publish_blocks(s);
  free_blocks(s);
  s.removed = true;
  update_gauges();
  s.job->sink({GenerationEvent::Kind::Done, {}, s.res, {}, {}});
}

void Scheduler::fail(Seq& s, FailKind kind, const std::string& message) {
  free_blocks(s);
  s.removed = true;
  update_gauges();
  s.job->sink({GenerationEvent::Kind::Failed, {}, {}, kind, message});
}

}  // namespace pensieve
